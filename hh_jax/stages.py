"""The stage registry: `config.stage` -> the module whose `run(config, workdir)` runs it.

Apart from `hh_jax.main` (the command line) so that code running stages in-process (the
online loop, the pipeline, a notebook) can dispatch without importing the entry point, whose
absl flags may be defined once per process only.
"""
from __future__ import annotations

import importlib

from hh_jax.errors import UserError

STAGES = {
    "lm": "hh_jax.train.lm",
    "pmp": "hh_jax.train.pm",
    "pm": "hh_jax.train.pm",
    "pm_eval": "hh_jax.eval.pm_eval",
    "distill": "hh_jax.train.distill",
    "rs": "hh_jax.rl.rejection_sampling",
    "ppo": "hh_jax.rl.ppo_stage",
    "online": "hh_jax.rl.online",
    "pipeline": "hh_jax.pipeline",
}

# The per-stage spellings of a stage's sources before they became one convention
# (`init.workdir`: the run a stage starts or samples from; `pm.workdir`: the PM it consults).
RENAMED_KEYS = {"distill.init_workdir": "init.workdir", "rs.policy_workdir": "init.workdir",
                "rs.pm_workdir": "pm.workdir", "eval.pm_workdir": "pm.workdir"}


def renamed(key: str) -> str:
  return f"--config.{key} is now --config.{RENAMED_KEYS[key]}; pass that instead"


def run(config, workdir: str):
  """Runs the stage `config.stage` names; a stage's sources under an old key are refused."""
  for old in RENAMED_KEYS:
    section, field = old.split(".")
    if field in (config.get(section) or {}):
      raise UserError(renamed(old))
  stage = config.get("stage")
  if stage not in STAGES:
    raise UserError(f"config.stage={stage!r} is not a stage; use one of {', '.join(STAGES)}")
  return importlib.import_module(STAGES[stage]).run(config, workdir)
