"""Helpers shared by the stage configs: the `:arg` parser, the header every stage starts with."""
import ast

import ml_collections

from configs import models


def parse_arg(arg, **defaults):
  """Parses 'size=13m,runlocal=True' into a dict over `defaults`, typed like each default.

  An unknown key, or a value its default's type cannot hold exactly (2.5 for an integer,
  "maybe" for a bool), is a one-line error, so a typo never silently keeps the default.
  """
  out = dict(defaults)
  if not arg:
    return out
  for item in str(arg).split(","):
    if not item:
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; allowed: {', '.join(defaults)}")
    if not sep:
      value = "True"
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={value!r} must be true or false")
      out[key] = value.lower() in ("true", "1")
    elif isinstance(default, (int, float)):
      # An int default takes an integer only: int("2.5") would silently run 2 iterations.
      try:
        parsed = ast.literal_eval(value.strip())
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
      allowed = (int, float) if isinstance(default, float) else (int,)
      if isinstance(parsed, bool) or not isinstance(parsed, allowed):
        kind = "a number" if isinstance(default, float) else "an integer"
        raise ValueError(f"config argument {key}={value!r} must be {kind}")
      out[key] = type(default)(parsed)
    else:
      out[key] = value
  return out


def header(stage: str, *, seed: int = 0, size: str | None = None, mesh: bool = True):
  """The top of every stage config: stage, seed, model (a ladder rung), mesh, distributed.

  `size=None`: the stage has no model of its own. `mesh=False`: it builds no mesh (and so
  runs in one process). Every training or sampling stage gets the same default mesh (all
  devices on `data`) and multi-process settings, so `--config.mesh.*` and
  `--config.distributed.*` mean the same in each.
  """
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.seed = seed
  if size is not None:
    c.model = models.get(size)
  if mesh:
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.distributed = distributed()
  return c


def upstream(c, init: str = "", pm: str | None = None):
  """The one way stages chain: `init.workdir` is the run this stage starts from (or samples
  from), `pm.workdir` the PM it consults. Every stage config names its sources so."""
  c.init = ml_collections.ConfigDict({"workdir": init})
  if pm is not None:
    c.pm = ml_collections.ConfigDict({"workdir": pm})
  return c



def distributed():
  """Multi-process settings; empty means: the environment's, automatic on TPU VMs, or none.

  See hh_jax/parallel/multihost.py. Set all three to start a multi-host CPU/GPU job by hand.
  """
  return ml_collections.ConfigDict({"coordinator_address": "", "num_processes": 0,
                                    "process_id": -1, "timeout_s": 300})


def adamw(learning_rate: float, warmup_steps: int, weight_decay: float = 0.1, **extra):
  """The optimizer settings every stage shares (hh_jax/train/optimizer.py reads them)."""
  c = ml_collections.ConfigDict({
      "learning_rate": learning_rate, "warmup_steps": warmup_steps, "min_lr_ratio": 0.1,
      "b1": 0.9, "b2": 0.95, "eps": 1e-8, "weight_decay": weight_decay,
      "grad_clip_norm": 1.0, "grad_accum_steps": 1})
  c.update(extra)
  return c


def train_loop(total_steps: int, log_every: int, eval_every: int, ckpt_every: int, **extra):
  """Loop settings every stage shares (hh_jax/train/runner.py reads them).

  `stop_at_step` > 0 stops a run (with a checkpoint) after that step, as a preemption would.
  `max_nonfinite`: more non-finite (skipped) steps in a row than this stop the run.
  `overwrite_workdir`: allow a workdir that holds a run of another stage or model.
  `preempt_sync_every`: how often (steps) a multi-host run agrees on a SIGTERM.
  """
  c = ml_collections.ConfigDict({
      "total_steps": total_steps, "log_every": log_every, "eval_every": eval_every,
      "ckpt_every": ckpt_every, "keep_checkpoints": 2, "async_checkpointing": True,
      "stop_at_step": 0, "max_nonfinite": 10, "overwrite_workdir": False,
      "preempt_sync_every": 10})
  c.update(extra)
  return c
