"""Language-model batches: fixed-length windows cut from one packed token stream.

Batch `i` is a pure function of (seed, i): the window offsets come from a generator
seeded with both. So the iterator's whole state is its position, which goes into the
checkpoint, and a resumed run sees exactly the batches an uninterrupted one would.
Each process builds only its own rows of every global batch.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import jax
import numpy as np

from hh_jax.data import records
from hh_jax.errors import UserError


def read_text_files(paths: Sequence[str],
                    max_bad_share: float = records.DEFAULT_MAX_BAD_SHARE,
                    max_line_bytes: int = records.MAX_LINE_BYTES) -> list[str]:
  """Documents from .txt[.gz] (one per file), .jsonl[.gz] ("text", or hh-rlhf "chosen").

  A corpus is scraped text: a line that is not UTF-8, holds binary (NUL) bytes, is longer
  than `max_line_bytes`, or (in JSON lines) is not an object with a string "text" or
  "chosen" is skipped with its `file:line` reason; past `max_bad_share` of a file's lines
  the read stops with one line (`hh_jax.data.records`). A .txt document keeps its good
  lines, joined by newlines.
  """
  docs = []
  for path in paths:
    if not os.path.isfile(path):
      raise UserError(f"corpus file {path} does not exist; fix --config.data.text_files")
    skips = records.Skips(path, max_bad_share)
    jsonl = path.endswith((".jsonl", ".jsonl.gz"))
    kept = []
    for n, raw in records.lines(path, skips, max_line_bytes, keep_blank=not jsonl):
      try:
        if jsonl:
          row = records.json_object(raw)
          docs.append(records.string(row, "text" if "text" in row else "chosen"))
        else:
          kept.append(records.text(raw))
      except ValueError as e:
        skips.bad(n, str(e))
    if not jsonl and any(line.strip() for line in kept):
      docs.append("\n".join(kept))
    skips.finish("fix or drop those lines of --config.data.text_files")
  return docs


def pack(token_lists: Iterable[Sequence[int]], eos_id: int) -> np.ndarray:
  """One stream of all documents, each followed by EOS."""
  out = []
  for ids in token_lists:
    out.extend(ids)
    out.append(eos_id)
  return np.asarray(out, dtype=np.int32)  # [total_tokens]


class LMBatches:
  """Random windows of `seq_len + 1` tokens; iterate, or ask for `batch(step)` directly."""

  def __init__(self, stream: np.ndarray, batch_size: int, seq_len: int, seed: int,
               process_index: int | None = None, process_count: int | None = None):
    if len(stream) < seq_len + 2:
      raise UserError(f"the corpus has {len(stream)} tokens, fewer than one sequence of "
                      f"{seq_len + 1}; use a larger corpus or a smaller data.seq_len")
    self.stream = stream
    self.batch_size = batch_size
    self.seq_len = seq_len
    self.seed = seed
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if batch_size % pc:
      raise UserError(f"data.batch_size={batch_size} does not split over {pc} processes; "
                      f"make it a multiple of {pc}")
    per = batch_size // pc
    self.rows = slice(pi * per, (pi + 1) * per)
    self.position = 0

  def batch(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, step])
    starts = rng.integers(0, len(self.stream) - self.seq_len - 1, size=self.batch_size)[self.rows]
    idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
    window = self.stream[idx]  # [local_batch, seq + 1]
    return {"inputs": window[:, :-1], "targets": window[:, 1:],
            "mask": np.ones_like(window[:, 1:])}  # each [local_batch, seq]

  def __iter__(self):
    return self

  def __next__(self):
    out = self.batch(self.position)
    self.position += 1
    return out

  def get_state(self) -> dict:
    return {"position": self.position, "seed": self.seed}

  def set_state(self, state: dict) -> None:
    if state.get("seed", self.seed) != self.seed:
      raise UserError(f"the checkpoint's data seed {state['seed']} differs from config seed "
                      f"{self.seed}; resume with the original seed or use a new workdir")
    self.position = int(state["position"])
