"""What of a pipeline run comes from the synthetic world: its data or its gold labeler.

The `:hh` preset runs the recipe on hh-rlhf files, but several of its parts still default to
the built-in synthetic world (the LM corpus, PMP's forum posts, the online loop's labels and
replayed pairs, and the report's gold-judged tables). Real data must never fall back to the
synthetic world silently, so the pipeline asks here before anything trains:

* `check(config)` stops a real-data run with one line where the synthetic gold labeler would
  make its labels (the online loop without people's judgments): those labels would train the
  next PMs and policies.
* `synthetic_parts(config)` lists the rest, which `report.md` states at its top with what to
  pass instead, and `judged_by_gold(config)` the report sections that the synthetic labeler
  scores on synthetic prompts, which a real-data report marks as such.
"""
from __future__ import annotations

from hh_jax.errors import UserError

SYNTHETIC_PRESETS = ("tiny",)


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
  o = config.online.online if "online" in config else None
  if _online_iterations(config) > 0 and not o.human_files:
    raise UserError(
        f"configs/pipeline.py:{config.preset}: the online loop would label its comparisons with "
        "the synthetic gold labeler; pass --config.online.online.human_files=FILE[,FILE...] "
        "(people's judgments in the hh-rlhf format, one file per iteration: "
        "python -m hh_jax.feedback collects them) or --config.online.online.iterations=0")


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
                   "stackexchange=Posts.xml, .reddit_comments or .wikipedia)")
  if "pm" in config and "synthetic" in _sources(config.pm.data.source):
    parts.append("the PM trains on synthetic comparisons (--config.pm.data.source=hh_rlhf)")
  if _online_iterations(config) > 0 and "synthetic" in _sources(
      config.online.pm_stage.data.source):
    parts.append("each online PM replays synthetic comparisons beside the new ones (pass "
                 "--config.online.pm_stage.data.source=hh_rlhf and its data.train_files)")
  return parts


def judged_by_gold() -> list[str]:
  """The report sections scored by the synthetic gold labeler on the synthetic world's
  prompts: on a real-data run they say nothing about the real data."""
  return ["the Elo table and head-to-heads", "helpfulness vs harmlessness",
          "the alignment-tax probes", "PPO's and best-of-n's gold scores"]


def report_note(config) -> list[str]:
  """report.md's opening lines on a real-data run: what is synthetic, stated once."""
  if not is_real(config):
    return []
  lines = ["**Synthetic parts of this run.** " + (
      "; ".join(synthetic_parts(config)) + "." if synthetic_parts(config)
      else "None of the training data is synthetic."),
           "The synthetic gold labeler judges " + ", ".join(judged_by_gold()) +
           " on the synthetic world's prompts; on this run they measure the policies on "
           "that world, not on the hh-rlhf conversations.", ""]
  return lines


__all__ = ["check", "synthetic_parts", "judged_by_gold", "report_note", "is_real"]
