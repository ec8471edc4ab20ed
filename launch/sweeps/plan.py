"""A sweep config expanded into ordinary stage runs: which commands, in which workdirs.

Planning runs nothing, so launch/sweep.py executes one plan either as local subprocesses or
as pod jobs, and report.py finds every point (finished or not) from the manifest the
launcher writes. Each run is exactly `python -m hh_jax.main --config=configs/<stage>.py:<arg>
--workdir=DIR --config.KEY=VALUE ...`: the stage config is built here from the stage's own
config file (`lm_config`, `pm_config`, `eval_config`) and every field they change is spelled
out as an override, so a printed command reproduces the run by hand. This is launcher code,
not library code: it reads configs/, which hh_jax/ never imports. Layout under the sweep
workdir:

  lm/<rung>-s<lm_seed>/        one LM per rung, shared by that rung's points
  points/<name>/pm/            the point's PM, from its rung's LM
  points/<name>/eval/          pm_eval of that PM: eval.json, the point's result
  <run workdir>.log            local mode: each run's output
  sweep_points.json            the manifest: every point, its workdirs and its model
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

from configs import lm as lm_cfg, pm as pm_cfg, pm_eval as eval_cfg
from hh_jax import files
from hh_jax.errors import UserError

MANIFEST = "sweep_points.json"
# A run is finished once this file exists in its workdir (the LM's is its last checkpoint).
PM_DONE = "reward_stats.json"  # hh_jax.checkpoint.REWARD_STATS_FILE, written after the last step
EVAL_DONE = "eval.json"


@dataclasses.dataclass
class Run:
  """One `hh_jax.main` invocation."""
  stage: str  # lm | pm | pm_eval
  config: str  # configs/<stage>.py:<arg>
  workdir: str
  overrides: list[str]  # --config.KEY=VALUE
  marker: str  # path relative to workdir that exists once the run finished

  def argv(self) -> list[str]:
    """The hh_jax.main arguments (after `python -m hh_jax.main`)."""
    return [f"--config={self.config}", f"--workdir={self.workdir}", *self.overrides]

  def done(self) -> bool:
    return files.exists(os.path.join(self.workdir, self.marker))


@dataclasses.dataclass
class Point:
  """One (rung, train comparisons, seed) of the sweep and the runs that produce its eval.json."""
  name: str
  size: str
  num_train: int
  seed: int
  workdir: str
  lm_workdir: str  # trained by runs[0] or reused (sweep.lm_workdirs)
  runs: list[Run]  # in order; the LM run (absent when reused) is shared with the rung's points
  model: dict

  @property
  def eval_workdir(self) -> str:
    return self.runs[-1].workdir

  def manifest_row(self) -> dict:
    by = {r.stage: r.workdir for r in self.runs}
    return {"name": self.name, "size": self.size, "num_train": self.num_train,
            "seed": self.seed, "workdir": self.workdir, "lm_workdir": self.lm_workdir,
            "pm_workdir": by["pm"], "eval_workdir": by["pm_eval"], "model": self.model}


def load_sweep(spec: str, repo: str):
  """`configs/sweeps/<file>.py[:arg]` (relative to the repo) -> the sweep ConfigDict."""
  path, _, arg = spec.partition(":")
  full = path if os.path.isabs(path) else os.path.join(repo, path)
  if not os.path.isfile(full):
    raise UserError(f"sweep config {path!r} does not exist; pass "
                    "--sweep=configs/sweeps/<file>.py[:arg]")
  mod_spec = importlib.util.spec_from_file_location("_hh_jax_sweep_config", full)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  try:
    return module.get_config(arg or None)
  except ValueError as e:
    raise UserError(f"--sweep={spec}: {e}") from None


def apply_overrides(sweep, items: list[str]) -> None:
  """`--sweep.KEY=VALUE` items set fields of the sweep config, typed like the field."""
  for item in items:
    key, sep, value = item[len("--sweep."):].partition("=")
    if not item.startswith("--sweep.") or not sep or key not in sweep or key == "points":
      raise UserError(f"cannot apply {item!r}: pass --sweep.KEY=VALUE with KEY one of "
                      f"{', '.join(k for k in sweep if k != 'points')}")
    old = sweep[key]
    try:
      if isinstance(old, bool):
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError
        sweep[key] = value.lower() in ("true", "1")
      else:
        sweep[key] = type(old)(value)
    except ValueError:
      raise UserError(f"{item!r}: {key} takes a {type(old).__name__}") from None


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _flag_value(v) -> str:
  if isinstance(v, (tuple, list)):
    return repr(tuple(v))
  return repr(v) if isinstance(v, float) else str(v)


def config_overrides(base, built) -> list[str]:
  """`--config.KEY=VALUE` for every leaf where `built` differs from the stage's own config."""
  base_flat, built_flat = _flatten(base.to_dict()), _flatten(built.to_dict())
  out = []
  for key, value in built_flat.items():
    if key not in base_flat:
      raise ValueError(f"{key} is not a field of the stage config; it cannot be a flag")
    if value != base_flat[key]:
      out.append(f"--config.{key}={_flag_value(value)}")
  return out


def parse_lm_workdirs(spec: str, key: str = "lm_workdirs") -> dict[str, str]:
  """'tiny=/tmp/lm_tiny,test=DIR' -> {rung: LM workdir}, the trained LMs a sweep reuses."""
  out = {}
  for item in [x for x in str(spec or "").split(",") if x]:
    size, sep, path = item.partition("=")
    if not sep:
      raise UserError(f"{key} item {item!r} must look like size=DIR")
    out[size.strip()] = path.strip()
  return out


def lm_config(size, sw, seed):
  """The LM stage config of one rung: the sweep's steps and sequence length."""
  c = lm_cfg.get_config(f"size={size},runlocal={sw.runlocal}")
  c.seed = seed
  c.train.total_steps = sw.lm_steps
  c.train.ckpt_every = sw.lm_steps
  c.data.seq_len = min(sw.seq_len, c.model.max_len)
  return c


def pm_config(size, n, init, sw, seed):
  """The PM stage config of one point: `n` synthetic train pairs, from the LM in `init`."""
  c = pm_cfg.get_config(f"size={size},runlocal={sw.runlocal}")
  c.seed = seed
  c.init.workdir = init
  c.data.num_train = n
  c.data.num_eval = sw.num_eval
  c.data.mixture = sw.mixture
  c.data.seq_len = min(sw.seq_len, c.model.max_len)
  c.data.batch_size = sw.batch_size
  c.train.eval_every = 0  # one evaluation, at the end
  c.train.ckpt_every = 0
  return c


def eval_config(pm_dir: str, sw):
  """pm_eval of one PM on fresh noise-free synthetic pairs (seed fixed: same for all points)."""
  c = eval_cfg.get_config(f"data=synthetic,runlocal={sw.runlocal}")
  c.pm.workdir = pm_dir
  c.eval.synthetic_pairs = sw.eval_pairs
  c.eval.mixture = sw.mixture
  c.eval.batch_size = sw.batch_size
  return c


def plan(sweep, workdir: str, extra: list[str] | None = None) -> list[Point]:
  """Every point of `sweep` with its runs under `workdir`; `extra` flags go to LM and PM runs."""
  extra = list(extra or [])
  if not files.is_remote(workdir):
    workdir = os.path.abspath(workdir)
  given = parse_lm_workdirs(sweep.lm_workdirs)
  points, lms, names = [], {}, set()
  for size, num_train, seed in sweep.points:
    size, num_train, seed = str(size), int(num_train), int(seed)
    name = f"{size}-n{num_train}-s{seed}"
    if name in names:
      raise UserError(f"sweep point {name} is listed twice; list each (size, num_train, seed) "
                      "once")
    names.add(name)
    arg = f"size={size},runlocal={sweep.runlocal}"
    try:
      base_pm = pm_cfg.get_config(arg)
    except ValueError as e:
      raise UserError(f"sweep point {name}: {e}") from None
    runs = []
    if size in given:
      lm_dir = given[size]
    else:
      lm_dir = os.path.join(workdir, "lm", f"{size}-s{sweep.lm_seed}")
      if lm_dir not in lms:
        built = lm_config(size, sweep, sweep.lm_seed)
        lms[lm_dir] = Run("lm", f"configs/lm.py:{arg}", lm_dir,
                          config_overrides(lm_cfg.get_config(arg), built) + extra,
                          os.path.join("checkpoints", str(built.train.total_steps)))
      runs.append(lms[lm_dir])
    point_dir = os.path.join(workdir, "points", name)
    pm_dir = os.path.join(point_dir, "pm")
    pm_built = pm_config(size, num_train, lm_dir, sweep, seed)
    runs.append(Run("pm", f"configs/pm.py:{arg}", pm_dir,
                    config_overrides(base_pm, pm_built) + extra, PM_DONE))
    eval_arg = f"data=synthetic,runlocal={sweep.runlocal}"
    runs.append(Run("pm_eval", f"configs/pm_eval.py:{eval_arg}", os.path.join(point_dir, "eval"),
                    config_overrides(eval_cfg.get_config(eval_arg), eval_config(pm_dir, sweep)),
                    EVAL_DONE))
    points.append(Point(name, size, num_train, seed, point_dir, lm_dir, runs,
                        pm_built.model.to_dict()))
  return points


def write_manifest(workdir: str, spec: str, sweep, points: list[Point]) -> str:
  path = os.path.join(workdir if files.is_remote(workdir) else os.path.abspath(workdir), MANIFEST)
  files.write_text(path, json.dumps({"sweep": spec, "config": json.loads(sweep.to_json()),
                               "points": [p.manifest_row() for p in points]},
                              indent=2, sort_keys=True))
  return path
