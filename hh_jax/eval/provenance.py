"""What of a pipeline run comes from the synthetic world: its data or its gold labeler.

The `:hh` preset runs the recipe on hh-rlhf files, but several of its parts still default to
the built-in synthetic world (the LM corpus, PMP's forum posts, the online loop's labels and
replayed pairs, and the report's gold-judged tables). Real data must never fall back to the
synthetic world silently, so the pipeline asks here before anything trains:

* `check(config)` stops a real-data run with one line where the synthetic gold labeler would
  make its labels (the online loop with neither people's judgments nor a judge PM,
  `online.judge`): those labels would train the next PMs and policies.
  It also stops a real-data run that names no hh-rlhf files to train and evaluate on.
* `synthetic_parts(config)` lists the rest, which `report.md` states at its top with what to
  pass instead. A real-data report judges nothing with the synthetic labeler: its Elo and
  helpful/harmless tables are judged by the test PM (`JUDGE_PM`), and the sections only that
  labeler could score (gold scores of PPO and best-of-n, the synthetic capability probes)
  are left out with a sentence saying why (`left_out`).
"""
from __future__ import annotations

from hh_jax.errors import UserError

SYNTHETIC_PRESETS = ("tiny",)
# The real-data judge: the PM trained on the other half of the comparisons (the pipeline's
# pm_test stage), which no policy was optimised against.
JUDGE_PM = "pm_test"


def _sources(value) -> list[str]:
  return [s for s in str(value or "").split(",") if s]


def is_real(config) -> bool:
  """A run on real data: any preset but the synthetic ones (`:hh`)."""
  return str(config.get("preset", "tiny")) not in SYNTHETIC_PRESETS


def _online_iterations(config) -> int:
  return int(config.online.online.iterations) if "online" in config else 0


def check(config) -> None:
  """One-line stop, before anything trains, for a real-data run that would train on labels
  from the synthetic gold labeler."""
  if not is_real(config):
    return
  pm_data = config.pm.data
  where = f"configs/pipeline.py:{config.preset}"
  if not pm_data.train_files:
    raise UserError(f"{where} trains on hh-rlhf comparisons: pass --config.pm.data.train_files="
                    "PATH[,PATH] (hh-rlhf jsonl or jsonl.gz; the LM also pretrains on their "
                    "transcripts)")
  if not pm_data.eval_files:
    raise UserError(f"{where} holds out an hh-rlhf file for the PM's accuracy, the PPO and Elo "
                    "prompts: pass --config.pm.data.eval_files=PATH (e.g. the subset's "
                    "test.jsonl.gz), sharing no conversation with the train files")
  o = config.online.online if "online" in config else None
  if _online_iterations(config) > 0 and not o.human_files and not o.get("judge"):
    raise UserError(
        f"configs/pipeline.py:{config.preset}: the online loop would label its comparisons with "
        "the synthetic gold labeler; pass --config.online.online.human_files=FILE[,FILE...] "
        "(people's judgments in the hh-rlhf format, one file per iteration: "
        f"python -m hh_jax.feedback collects them), --config.online.online.judge={JUDGE_PM} "
        "(the test PM labels them) or --config.online.online.iterations=0")
  if (_online_iterations(config) > 0 and not o.human_files
      and not config.online.ppo_stage.prompts.files):
    raise UserError(
        f"configs/pipeline.py:{config.preset}: the online loop collects comparisons on prompts "
        "no PM of the run trained on, and every context of pm.data.train_files trains the PM "
        "or the test PM; pass --config.online.ppo_stage.prompts.files=PATH (hh-rlhf "
        "conversations apart from the train and eval files)")


def online_judge(config) -> str:
  """The online loop's labeler on a real-data run: "human", the judge PM's name, or ""."""
  if _online_iterations(config) == 0:
    return ""
  o = config.online.online
  return "human" if o.human_files else str(o.get("judge") or "")


def synthetic_parts(config) -> list[str]:
  """The parts of a run that train on the synthetic world, each with what to pass instead."""
  parts = []
  if "lm" in config and config.lm.data.corpus == "synthetic":
    parts.append("the LM pretrains on the synthetic dialogues (pass --config.lm.data.corpus="
                 "text_files --config.lm.data.text_files=PATH[,PATH])")
  if "pmp" in config:
    d = config.pmp.data
    if int(d.synthetic_questions) > 0 and not (d.stackexchange or d.reddit_comments
                                                or d.wikipedia):
      parts.append("PMP trains on a synthetic StackExchange dump (pass --config.pmp.data."
                   "stackexchange=Posts.xml, .reddit_comments or .wikipedia, or "
                   "--config.pmp.data.synthetic_questions=0 to start the PMs from the LM)")
  if "distill" in config and config.distill.data.corpus == "synthetic":
    parts.append("context distillation reads synthetic dialogues (pass --config.distill.data."
                 "corpus=text_files)")
  if "rs" in config and config.rs.data.source == "synthetic":
    parts.append("rejection sampling draws synthetic prompts (--config.rs.data.source=hh_rlhf)")
  if "ppo" in config and config.ppo.prompts.source == "synthetic":
    parts.append("PPO trains on synthetic prompts (--config.ppo.prompts.source=hh_rlhf)")
  if "pm" in config and "synthetic" in _sources(config.pm.data.source):
    parts.append("the PM trains on synthetic comparisons (--config.pm.data.source=hh_rlhf)")
  if _online_iterations(config) > 0 and "synthetic" in _sources(
      config.online.pm_stage.data.source):
    parts.append("each online PM replays synthetic comparisons beside the new ones (pass "
                 "--config.online.pm_stage.data.source=hh_rlhf and its data.train_files)")
  return parts


def left_out() -> list[str]:
  """The sections of the synthetic report that only the synthetic gold labeler can score:
  a real-data report leaves them out (it has no gold score of a real reply)."""
  return ["PPO's and best-of-n's gold scores (and the best-of-k gold table)",
          "the online policies' gold scores", "the synthetic topic and recall probes"]


def report_note(config) -> list[str]:
  """report.md's opening lines on a real-data run: what is synthetic, and what judges."""
  if not is_real(config):
    return []
  parts = synthetic_parts(config)
  return ["**Synthetic parts of this run.** " + (
      "; ".join(parts) + "." if parts else "None of the training data is synthetic."),
          f"**Judging.** No section is judged by the synthetic gold labeler. The Elo and the "
          f"helpful/harmless tables are judged by the test PM (`{JUDGE_PM}`, trained on the "
          "half of the comparisons the train PM never saw). Left out, as only the synthetic "
          "gold labeler could score them: " + "; ".join(left_out()) + "."
          + _online_note(config), ""]


def _online_note(config) -> str:
  judge = online_judge(config)
  if not judge or judge == "human":
    return (" The online loop's comparisons are people's judgments (`online.human_files`)."
            if judge else "")
  return (f" The online loop's comparisons are labelled by the order of `{judge}`'s scores "
          "(`online.judge`), and its table is judged by it: its later PMs and policies learn "
          "that judge's preferences, so its Elo of the online policies flatters them more "
          "than the test PM's Elo of the offline ones.")


__all__ = ["check", "synthetic_parts", "left_out", "report_note", "is_real", "JUDGE_PM",
           "online_judge"]
