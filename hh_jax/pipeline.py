"""The whole recipe as one resumable run: LM → PMP → PM (train and test halves) → rejection
sampling → context distillation → PPO → online iterations → evaluation and `report.md`.

The PM comparisons are split into two disjoint halves by context (`train.pm.in_half`): the
`pm` stage trains the train PM on the first, `pm_test` the test PM on the second with
otherwise the same config, and the PPO stage optimises the train PM while the test PM only
scores its rollouts (the paper's robustness experiment, `report.md`).

Each stage runs in `WORKDIR/<name>` through `hh_jax.stages.run`, from the checkpoint of the
one before it (the pipeline fills in `init.workdir` and `pm.workdir`), and prints one
progress line. A stage's `.done` marker is written after it returns, so a rerun of the same
command skips what finished and resumes the stage that was running (which resumes from its
own last checkpoint). The final evaluation (`hh_jax.eval.report`) writes `elo.json` and
`report.md` beside the stage directories.
"""
from __future__ import annotations

import copy
import json
import time

from hh_jax import files
from hh_jax.data import fresh
from hh_jax.errors import UserError
from hh_jax.eval import provenance

ORDER = ("lm", "pmp", "pm", "pm_test", "rs", "distill", "ppo", "online")
TEST_HALF = "second"  # the pm_test stage's half; the pm stage's is its config's (`first`)
DONE = ".done"


def has_pmp(config) -> bool:
  """Whether the run has PMP data: a dump (StackExchange, Reddit, Wikipedia) or the synthetic
  Posts.xml (`pmp.data.synthetic_questions`, which `:hh` sets to 0). Without, PMP is skipped
  and the PMs start from the LM."""
  d = config.pmp.data
  return bool(int(d.synthetic_questions) > 0 or d.stackexchange or d.reddit_comments
              or d.wikipedia)


def stage_names(config) -> tuple[str, ...]:
  """The stages this run has, in order: `ORDER` less PMP when there is no PMP data and less
  the online loop when it has no iteration (`:hh` without people's judgments)."""
  skip = {"pmp"} if not has_pmp(config) else set()
  if int(config.online.online.iterations) == 0:
    skip.add("online")
  return tuple(n for n in ORDER if n not in skip)


def sources(workdir: str, with_pmp: bool = True) -> dict[str, dict[str, str]]:
  """Where each stage's inputs come from (the recipe's arrows); the PMs start from the LM
  when the run has no PMP stage."""
  d = lambda name: files.join(workdir, name)  # noqa: E731
  pm_init = d("pmp") if with_pmp else d("lm")
  return {"lm": {}, "pmp": {"init": d("lm")}, "pm": {"init": pm_init},
          "pm_test": {"init": pm_init},
          "rs": {"init": d("lm"), "pm": d("pm")}, "distill": {"init": d("lm")},
          "ppo": {"init": d("distill"), "pm": d("pm"), "test_pm": d("pm_test")},
          "online": {"init": d("distill"), "pm": d("pm"), "lm": pm_init, "deploy": d("ppo")}}


def _first(spec) -> str:
  return next((p for p in str(spec or "").split(",") if p), "")


def fill_real_data(cfg, name: str, config) -> None:
  """The hh-rlhf files a stage reads when its own are unset, from the PM's: the LM and
  context distillation read the transcripts of `pm.data.train_files`, rejection sampling
  their contexts, PPO its training prompts; PPO's end-of-run evaluation draws from
  `pm.data.eval_files` (every context of the train files is a PM training context, of the
  train half or the test half, so an evaluation draw from them would find nothing fresh)."""
  d = config.pm.data
  if name in ("lm", "distill") and cfg.data.corpus == "text_files" and not cfg.data.text_files:
    cfg.data.text_files = d.train_files
  if name == "rs" and cfg.data.source == "hh_rlhf" and not cfg.data.hh_file:
    cfg.data.hh_file = _first(d.train_files)
  ppos = [cfg] if name == "ppo" else [cfg.ppo_stage] if name == "online" else []
  for ppo in ppos:
    if ppo.prompts.source == "hh_rlhf" and not ppo.prompts.files:
      ppo.prompts.files = d.train_files
      ppo.eval.files = ppo.eval.files or d.eval_files


def stage_config(config, name: str, workdir: str):
  """The nested config of stage `name` with its sources filled in. `pm_test` is the `pm`
  config on the other half of the comparisons (`TEST_HALF`): the two PMs differ in nothing
  else, so every `--config.pm.*` override applies to both."""
  cfg = copy.deepcopy(config["pm" if name == "pm_test" else name])
  src = sources(workdir, has_pmp(config))[name]
  with cfg.unlocked():
    fill_real_data(cfg, name, config)
    if name == "pm_test":
      if cfg.data.half == TEST_HALF or cfg.data.half == "none":
        raise UserError(f"pm.data.half={cfg.data.half!r}: the pm_test stage trains on half "
                        f"{TEST_HALF!r}, so the train PM needs --config.pm.data.half=first")
      cfg.data.half = TEST_HALF
    if "test_pm" in src:
      cfg.pm.test_workdir = src["test_pm"]
    if "init" in src:
      cfg.init.workdir = src["init"]
    if "pm" in src:
      cfg.pm.workdir = src["pm"]
    if name == "rs":
      cfg.rs.scorer = "pm"
    if name == "online":  # its iterations' PM and PPO stages are `online.pm_stage` / `.ppo_stage`
      cfg.online.pm_init_workdir = src["lm"]
      cfg.online.deploy = src["deploy"]  # the first iteration collects on the PPO policy
      if cfg.online.judge == provenance.JUDGE_PM:  # the run's own test PM labels and judges
        cfg.online.judge = files.join(workdir, provenance.JUDGE_PM)
  return cfg


def use_compile_cache(setting: str, workdir: str) -> str | None:
  """Points XLA's persistent compilation cache at `setting` ("auto": WORKDIR/jax_cache on a
  local workdir) unless one is set already (the tests share theirs); returns the directory."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  path = files.join(workdir, "jax_cache") if setting == "auto" else str(setting or "")
  if not path or (setting == "auto" and files.is_remote(workdir)):
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  return path


def run(config, workdir: str):
  """The pipeline; returns the report dict. Rerun the same command to resume."""
  from hh_jax import stages  # pylint: disable=g-import-not-at-top
  from hh_jax.eval import report as report_lib  # pylint: disable=g-import-not-at-top
  provenance.check(config)  # real data never trains on synthetic labels
  workdir = files.abspath(workdir)
  files.makedirs(workdir)
  fresh.mark_run(workdir)  # its stages keep evaluation and training contexts apart
  use_compile_cache(config.get("compile_cache", "auto"), workdir)
  timings_path = files.join(workdir, "timings.json")
  timings = files.read_json(timings_path) if files.exists(timings_path) else {}
  t_all = time.perf_counter()
  names = stage_names(config)
  for n, name in enumerate(names, start=1):
    sub = files.join(workdir, name)
    if files.exists(files.join(sub, DONE)):
      print(f"pipeline [{n}/{len(names)}] {name}: done earlier "
            f"({timings.get(name, 0):.0f} s)", flush=True)
      continue
    print(f"pipeline [{n}/{len(names)}] {name}: running in {sub}", flush=True)
    t0 = time.perf_counter()
    stages.run(stage_config(config, name, workdir), sub)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
    files.write_json(timings_path, timings, indent=2)
    files.write_text(files.join(sub, DONE), json.dumps({"seconds": timings[name]}))
    print(f"pipeline [{n}/{len(names)}] {name}: finished in {timings[name]:.0f} s", flush=True)
  t0 = time.perf_counter()
  rep = report_lib.write_report(config, workdir, sources(workdir, has_pmp(config)))
  timings["report"] = time.perf_counter() - t0
  files.write_json(timings_path, timings, indent=2)
  print(f"pipeline: report.md and elo.json in {workdir} "
        f"({time.perf_counter() - t_all:.0f} s this invocation)", flush=True)
  return rep


__all__ = ["run", "ORDER", "TEST_HALF", "sources", "stage_config", "stage_names", "has_pmp"]
