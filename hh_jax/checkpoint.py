"""Orbax checkpoints: the interface between stages and what makes a rerun resume.

A checkpoint holds two items: `state` (params, optimizer state, step, RNG, as a sharded
pytree) and `data` (the data iterator's JSON position). Saving is asynchronous; keep-last-N
prunes old steps. Restoring takes the target's abstract state (shapes, dtypes and
shardings from `jax.eval_shape`), so each process reads only its own shards.
"""
from __future__ import annotations

import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from hh_jax import files
from hh_jax.errors import UserError

# A PM's score normalization (mean/std on a reference set), written beside its checkpoints.
REWARD_STATS_FILE = "reward_stats.json"


class Checkpointer:
  """A CheckpointManager under `<workdir>/checkpoints` with the two items above."""

  def __init__(self, directory: str, max_to_keep: int = 2, save_every: int = 0,
               async_save: bool = True):
    self.directory = files.abspath(directory)
    self.save_every = int(save_every)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._mgr = ocp.CheckpointManager(files.orbax_dir(self.directory), options=options,
                                      item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def should_save(self, step: int, last_step: int) -> bool:
    return step == last_step or (self.save_every > 0 and step % self.save_every == 0)

  def save(self, step: int, state, data_state: dict | None = None) -> None:
    """Saves `step`; a write failure (full disk, quota) is one line, older steps kept.

    Orbax writes into a temporary directory and renames it when complete, and prunes old
    steps only after that, so a failed save leaves the previous checkpoint as it was.
    """
    try:
      self._mgr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state or {})))
    except Exception as e:  # pylint: disable=broad-except  # tensorstore/OS errors vary
      self._save_failed(step, e)

  def _save_failed(self, step, e: Exception):
    kept = [s for s in self._mgr.all_steps() if s != step]
    where = f"step {max(kept)} is intact" if kept else "no earlier checkpoint exists"
    try:  # let orbax's writer threads finish now, not while the interpreter shuts down
      self._mgr.close()
    except Exception:  # pylint: disable=broad-except  # the same failure, reported below
      pass
    raise UserError(f"cannot write checkpoint {self.directory}/{step} ({_write_reason(e)}); "
                    f"{where}; free disk space or raise the quota and rerun") from None

  def restore(self, abstract_state, step: int | None = None):
    """Returns (state, data_state) at `step` (default: the newest readable one).

    Without `step`, a newest checkpoint that cannot be read (a truncated array file, a
    missing metadata file: a crash mid-save on a filesystem without atomic renames) is
    not fatal: the steps are tried newest first, the damaged ones named in one warning
    line and deleted (so the rerun can save those steps again), and the newest complete
    one restored. A config that matches none of them is one line.
    """
    steps = sorted(self._mgr.all_steps(), reverse=True) if step is None else [step]
    if not steps:
      raise UserError(f"no checkpoint in {self.directory}; run the producing stage first "
                      "or point the config at a workdir that has one")
    damaged = []
    for s in steps:
      try:
        out = self._mgr.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore errors vary
        damaged.append((s, e))
        continue
      if damaged:
        print(f"warning: checkpoint {self.directory}/{damaged[0][0]} is damaged "
              f"({first_line(damaged[0][1], 160)}); restored step {s} instead"
              + (f" ({len(damaged)} newer steps skipped)" if len(damaged) > 1 else ""),
              file=sys.stderr, flush=True)
        if jax.process_index() == 0:
          for d, _ in damaged:
            self._mgr.delete(d)
        self._mgr.reload()
      return out["state"], dict(out["data"] or {})
    s, e = damaged[0]
    if _mismatch(e):
      raise UserError(f"checkpoint {self.directory}/{s} does not match this config "
                      f"({first_line(e)}); use the config it was written with, or a new workdir") from None
    raise UserError(f"no readable checkpoint in {self.directory} (step {s}: {first_line(e)}); "
                    "delete the damaged step directories or use a new workdir") from None

  def wait(self) -> None:
    try:
      self._mgr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # an async save's failure
      self._save_failed(self.latest_step(), e)

  def close(self) -> None:
    self.wait()
    self._mgr.close()


_WRITE_ERRORS = ("No space left on device", "File too large", "Disk quota exceeded",
                 "Read-only file system", "Permission denied")


def _write_reason(e: Exception) -> str:
  """The OS reason inside orbax's/tensorstore's long write error, else its first line."""
  text = str(e)
  return next((r for r in _WRITE_ERRORS if r in text), first_line(e, 200))


def _mismatch(e: Exception) -> bool:
  """A restore error that says the target's shapes/tree differ (not that a file is bad)."""
  text = str(e)
  if any(w in text for w in ("OUT_OF_RANGE", "DATA_LOSS", "Error reading", "Error opening",
                             "No such file", "NOT_FOUND")):
    return False  # tensorstore could not read a file: damage, whatever else it says
  text = text.lower()
  return isinstance(e, ValueError) and any(w in text for w in (
      "shape", "structure", "mismatch", "does not match", "dtype"))


def read_run_config(workdir: str, hint: str) -> dict:
  """The resolved config.json another stage wrote; its absence is a one-line error + `hint`."""
  path = files.join(workdir, "config.json")
  if not files.exists(path):
    raise UserError(f"{workdir} has no config.json; {hint}")
  return files.read_json(path)


def first_line(err: Exception, limit: int = 300) -> str:
  text = str(err).strip().splitlines()
  return (text[0] if text else type(err).__name__)[:limit]


def to_host(tree):
  """Fully-replicated numpy copy of a (sharded) pytree, for tests and small exports."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _shape_hint(path: str, have: tuple, need: tuple) -> str:
  if path == "embedding" and have[1:] == need[1:]:
    return "the vocabulary differs; use model.vocab_size of the source run"
  return "the model size differs; use the model size of the source run"


def restore_params(directory: str, abstract_params, step: int | None = None):
  """Restores the parameters of another stage's checkpoint that the target model also has.

  `abstract_params` is the target's params tree of ShapeDtypeStructs with shardings; each
  leaf the checkpoint holds is read straight into its target shards (orbax partial
  restore), so an LM trunk becomes a PM trunk without ever being whole on one host.
  Leaves only the checkpoint has (say an optimizer state) are ignored; leaves only the
  target has (a fresh scalar head) are returned in `missing` for the caller to keep from
  its own init. A leaf whose shape differs is a one-line UserError naming both shapes and
  the checkpoint path. Returns (params restored, missing: list of "a/b/c" paths).
  """
  directory = files.abspath(directory)
  if not files.isdir(directory):
    raise UserError(f"no checkpoint directory {directory}; run the producing stage first or "
                    "point the config at its workdir")
  mgr = ocp.CheckpointManager(
      files.orbax_dir(directory), options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "data": ocp.JsonCheckpointHandler()})
  try:
    step = mgr.latest_step() if step is None else step
    if step is None:
      raise UserError(f"no checkpoint in {directory}; run the producing stage first "
                      "or point the config at a workdir that has one")
    try:
      meta = mgr.item_metadata(step)["state"]
    except Exception as e:  # pylint: disable=broad-except  # a missing/garbled metadata file
      raise UserError(_damaged_source(directory, step, e)) from None
    tree = getattr(meta, "tree", meta)
    if not isinstance(tree, dict) or "params" not in tree:  # orbax reads a lost _METADATA as None
      raise UserError(_damaged_source(directory, step, FileNotFoundError(
          "no readable state metadata")))
    source = tree["params"]
    source_leaves = {_path_str(p): leaf for p, leaf in
                     jax.tree_util.tree_flatten_with_path(source)[0]}
    wanted, missing = {}, []
    for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
      name = _path_str(p)
      if name not in source_leaves:
        missing.append(name)
        continue
      have = tuple(source_leaves[name].shape)
      if have != tuple(leaf.shape):
        raise UserError(f"cannot restore params/{name} from {directory}/{step}: the checkpoint "
                        f"has shape {have}, this model needs {tuple(leaf.shape)}; "
                        f"{_shape_hint(name, have, tuple(leaf.shape))}")
      wanted[name] = leaf
    subset = _unflatten(wanted)
    if not subset:
      raise UserError(f"checkpoint {directory}/{step} shares no parameters with this model; "
                      "point the config at an LM, PMP or PM workdir")
    try:
      out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item={"params": subset},
          restore_args=ocp.checkpoint_utils.construct_restore_args({"params": subset}),
          partial_restore=True)))
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # truncated/corrupt array files
      raise UserError(_damaged_source(directory, step, e)) from None
  finally:
    mgr.close()
  return out["state"]["params"], missing


def _damaged_source(directory, step, e) -> str:
  return (f"source checkpoint {directory}/{step} is damaged ({first_line(e, 160)}); rerun the "
          "stage that wrote it, or point the config at another run")


def _unflatten(flat: dict) -> dict:
  tree: dict = {}
  for name, leaf in flat.items():
    *parents, last = name.split("/")
    node = tree
    for k in parents:
      node = node.setdefault(k, {})
    node[last] = leaf
  return tree


def merge_params(fresh, restored):
  """`fresh` with every leaf that `restored` (a subtree of the same nesting) also has."""
  if not isinstance(fresh, dict):
    return restored
  return {k: merge_params(v, restored[k]) if k in restored else v for k, v in fresh.items()}
