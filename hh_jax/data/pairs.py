"""Preference pairs, batched as [batch, 2, seq] token arrays in a resumable order.

The preference model reads its score at the EOC token, so every encoded sequence ends
with EOC, even when the dialogue is too long: truncation drops the *start* of the
dialogue, because the reply being judged and the turns just before it are what matter.

The iterator's order is a pure function of (seed, epoch), and its only state is the
number of global batches consumed, so the position saved in a checkpoint restores
exactly the batches an uninterrupted run would have seen. Each process encodes only
its own slice of every global batch; `to_global` stitches the slices into jax.Arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from hh_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Pair:
  """One comparison: `context + chosen` beat `context + rejected`.

  The context ends with "\\n\\nAssistant:"; each response starts where the final
  Assistant turn's text starts (usually with a space), so concatenation restores the
  published transcript.
  """
  context: str
  chosen: str
  rejected: str
  turns: int       # Human turns in the context
  source: str = ""


class TokenizerLike(Protocol):
  pad_id: int
  eoc_id: int

  def encode(self, text: str) -> list[int]:
    ...


PAD_SIDES = ("right", "left")


def encode_text(tok: TokenizerLike, text: str, seq_len: int) -> list[int]:
  """Token ids of `text` + EOC, at most seq_len long, keeping the end of the dialogue."""
  if seq_len < 2:
    raise UserError(f"seq_len must be at least 2 (one token and EOC), got {seq_len}")
  ids = list(tok.encode(text))[-(seq_len - 1):]
  return ids + [tok.eoc_id]


def encode_pairs(pairs: Sequence[Pair], tok: TokenizerLike, seq_len: int,
                 pad_side: str = "right") -> dict[str, np.ndarray]:
  """A batch dict: tokens/mask [batch, 2, seq], eoc_pos [batch, 2], turns [batch]."""
  if pad_side not in PAD_SIDES:
    raise UserError(f"pad_side must be one of {PAD_SIDES}, got {pad_side!r}")
  n = len(pairs)
  tokens = np.full((n, 2, seq_len), tok.pad_id, np.int32)  # [batch, 2, seq]
  mask = np.zeros((n, 2, seq_len), np.int32)               # [batch, 2, seq]
  eoc_pos = np.zeros((n, 2), np.int32)                     # [batch, 2]
  turns = np.array([p.turns for p in pairs], np.int32)     # [batch]
  for i, p in enumerate(pairs):
    for j, reply in enumerate((p.chosen, p.rejected)):
      ids = encode_text(tok, p.context + reply, seq_len)
      start = 0 if pad_side == "right" else seq_len - len(ids)
      tokens[i, j, start:start + len(ids)] = ids
      mask[i, j, start:start + len(ids)] = 1
      eoc_pos[i, j] = start + len(ids) - 1
  return {"tokens": tokens, "mask": mask, "eoc_pos": eoc_pos, "turns": turns}


def epoch_order(num: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
  """The permutation of `num` examples used in `epoch`: depends on nothing else."""
  if not shuffle:
    return np.arange(num)
  return np.random.default_rng([seed, epoch]).permutation(num)


class PairIterator:
  """Yields this process's slice of each global batch of pairs; resumable by position.

  Each epoch visits floor(len(pairs) / batch_size) full global batches (the remainder
  is dropped, a different remainder each epoch when shuffling).
  """

  def __init__(self, pairs: Sequence[Pair], tok: TokenizerLike, *, batch_size: int,
               seq_len: int, seed: int = 0, shuffle: bool = True, pad_side: str = "right",
               num_epochs: int | None = None, process_index: int | None = None,
               process_count: int | None = None):
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    if batch_size % process_count:
      raise UserError(f"global batch_size {batch_size} is not divisible by "
                       f"{process_count} processes; pick a multiple of the process count")
    if len(pairs) < batch_size:
      raise UserError(f"only {len(pairs)} pairs for a global batch of {batch_size}; "
                       "lower batch_size or add data")
    if pad_side not in PAD_SIDES:
      raise UserError(f"pad_side must be one of {PAD_SIDES}, got {pad_side!r}")
    self._pairs = pairs
    self._tok = tok
    self.batch_size = batch_size
    self.seq_len = seq_len
    self.seed = seed
    self.shuffle = shuffle
    self.pad_side = pad_side
    self.num_epochs = num_epochs
    self.local_batch_size = batch_size // process_count
    self._lo = process_index * self.local_batch_size
    self.steps_per_epoch = len(pairs) // batch_size
    self.position = 0
    self._order_epoch = -1
    self._order = np.arange(0)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    epoch, step = divmod(self.position, self.steps_per_epoch)
    if self.num_epochs is not None and epoch >= self.num_epochs:
      raise StopIteration
    if epoch != self._order_epoch:
      self._order = epoch_order(len(self._pairs), self.seed, epoch, self.shuffle)
      self._order_epoch = epoch
    start = step * self.batch_size + self._lo
    idx = self._order[start:start + self.local_batch_size]
    self.position += 1
    return encode_pairs([self._pairs[i] for i in idx], self._tok, self.seq_len, self.pad_side)

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable; goes into the checkpoint next to the train state."""
    return {"position": self.position, "seed": self.seed, "num_pairs": len(self._pairs),
            "batch_size": self.batch_size}

  def set_state(self, state: dict[str, Any]) -> None:
    for key, mine in (("seed", self.seed), ("num_pairs", len(self._pairs)),
                      ("batch_size", self.batch_size)):
      if key in state and state[key] != mine:
        raise UserError(f"iterator state was saved with {key}={state[key]}, this run has "
                         f"{mine}; resume with the same data config or start a fresh workdir")
    self.position = int(state["position"])


def to_global(batch: dict[str, np.ndarray], sharding) -> dict[str, Any]:
  """Process-local batch slices -> global jax.Arrays sharded along the batch axis.

  Only the first entry of `sharding.spec` (the batch axis) is used; the other axes of
  every array are replicated, so one sharding serves tokens, eoc_pos and turns alike.
  """
  import jax  # pylint: disable=g-import-not-at-top
  batch_axis = sharding.spec[0] if len(sharding.spec) else None
  out = {}
  for k, v in batch.items():
    spec = jax.sharding.PartitionSpec(batch_axis, *([None] * (v.ndim - 1)))
    s = jax.sharding.NamedSharding(sharding.mesh, spec)
    out[k] = jax.make_array_from_process_local_data(s, v)
  return out
