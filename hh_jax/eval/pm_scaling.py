"""The pm_scaling sweep: PMs over ladder rungs × data sizes, accuracy plotted against both.

Each LM and PM is an ordinary stage run (`hh_jax.train.lm` / `hh_jax.train.pm`) in its own
sub-workdir, built from the stage configs with the sweep's overrides, so any point of the
sweep can be rerun or inspected alone. Writes `scaling.json` and `scaling.png`.
"""
from __future__ import annotations

import json
import os

from hh_jax.errors import UserError
from hh_jax.eval import plots
from hh_jax.model import flops
from hh_jax.train import lm, pm, runner


def parse_lm_workdirs(spec: str, key: str = "sweep.lm_workdirs") -> dict[str, str]:
  """'tiny=/tmp/lm_tiny,test=DIR' -> {rung: LM workdir}, the trained LMs a sweep reuses."""
  out = {}
  for item in [x for x in str(spec or "").split(",") if x]:
    size, sep, path = item.partition("=")
    if not sep:
      raise UserError(f"{key} item {item!r} must look like size=DIR")
    out[size.strip()] = path.strip()
  return out


def lm_config(size, sw, seed):
  from configs import lm as lm_cfg  # pylint: disable=g-import-not-at-top
  c = lm_cfg.get_config(f"size={size},runlocal={sw.runlocal}")
  c.seed = seed
  c.train.total_steps = sw.lm_steps
  c.train.ckpt_every = sw.lm_steps
  c.data.seq_len = min(sw.seq_len, c.model.max_len)
  return c


def pm_config(size, n, init, sw, seed):
  from configs import pm as pm_cfg  # pylint: disable=g-import-not-at-top
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


def _finished(workdir: str, name: str) -> dict | None:
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def run(config, workdir: str):
  workdir = runner.prepare_workdir(workdir)
  runner.write_config(config, workdir)
  sw = config.sweep
  sizes = [s for s in str(sw.sizes).split(",") if s]
  datas = [int(n) for n in str(sw.num_train).split(",") if n]
  given = parse_lm_workdirs(sw.lm_workdirs)
  rows = []
  for size in sizes:
    lm_dir = given.get(size) or os.path.join(workdir, f"lm_{size}")
    if size not in given:
      lm_c = lm_config(size, sw, config.seed)
      done = os.path.exists(os.path.join(lm_dir, "checkpoints", str(sw.lm_steps)))
      if not done:
        lm.run(lm_c, lm_dir)
    for n in datas:
      pm_dir = os.path.join(workdir, f"pm_{size}_{n}")
      pm_c = pm_config(size, n, lm_dir, sw, config.seed)
      result = _finished(pm_dir, "final_eval.json")
      if result is None:
        pm.run(pm_c, pm_dir)
        result = _finished(pm_dir, "final_eval.json") or {}
      rows.append({"size": size, "num_train": n, "accuracy": result.get("eval_accuracy"),
                   "params": flops.param_count_non_embedding(pm_c.model), "workdir": pm_dir})
      print(f"pm_scaling: {size} × {n} pairs -> held-out accuracy "
            f"{rows[-1]['accuracy']:.4f}", flush=True)
  runner.save_json(workdir, "scaling.json", rows)
  plots.scaling([r for r in rows if r["accuracy"] is not None],
                os.path.join(workdir, "scaling.png"))
  return rows
