"""Orbax checkpoints: the interface between stages and what makes a rerun resume.

A checkpoint holds two items: `state` (params, optimizer state, step, RNG, as a sharded
pytree) and `data` (the data iterator's JSON position). Saving is asynchronous; keep-last-N
prunes old steps. Restoring takes the target's abstract state (shapes, dtypes and
shardings from `jax.eval_shape`), so each process reads only its own shards.
"""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from hh_jax.errors import UserError


class Checkpointer:
  """A CheckpointManager under `<workdir>/checkpoints` with the two items above."""

  def __init__(self, directory: str, max_to_keep: int = 2, save_every: int = 0,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.save_every = int(save_every)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._mgr = ocp.CheckpointManager(self.directory, options=options,
                                      item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def should_save(self, step: int, last_step: int) -> bool:
    return step == last_step or (self.save_every > 0 and step % self.save_every == 0)

  def save(self, step: int, state, data_state: dict | None = None) -> None:
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {})))

  def restore(self, abstract_state, step: int | None = None):
    """Returns (state, data_state) at `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f"no checkpoint in {self.directory}; run the producing stage first "
                      "or point the config at a workdir that has one")
    try:
      out = self._mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except ValueError as e:
      raise UserError(f"checkpoint {self.directory}/{step} does not match this config "
                      f"({first_line(e)}); use the config it was written with, or a new workdir") from None
    return out["state"], dict(out["data"] or {})

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()


def first_line(err: Exception, limit: int = 300) -> str:
  text = str(err).strip().splitlines()
  return (text[0] if text else type(err).__name__)[:limit]


def to_host(tree):
  """Fully-replicated numpy copy of a (sharded) pytree, for tests and small exports."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
