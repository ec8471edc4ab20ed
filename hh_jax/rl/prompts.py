"""Prompts for RL: where they come from, and batches of them in a resumable order.

Three sources, as in the paper: the synthetic world's contexts (the laptop default, with a
gold labeler to judge the responses), the contexts of hh-rlhf comparison files (each
transcript up to its last `Assistant:`), and extra prompts written few-shot by the LM
itself (Bai et al. 2022 §4.3 grew their prompt set that way). A batch is a pure function
of (seed, iteration), so the checkpointed iteration count restores the batches an
uninterrupted run would have drawn.
"""
from __future__ import annotations

import numpy as np

from hh_jax.data import hh_rlhf, synthetic
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.errors import UserError

SOURCES = ("synthetic", "hh_rlhf")


def contexts(prompts_cfg, *, num: int | None = None, seed: int | None = None) -> list[str]:
  """Context texts ending in "\\n\\nAssistant:" from `prompts_cfg.source`."""
  num = int(prompts_cfg.num if num is None else num)
  seed = int(prompts_cfg.seed if seed is None else seed)
  if prompts_cfg.source == "synthetic":
    return [p.context for p in synthetic.prompts(num, seed, prompts_cfg.mixture)]
  if prompts_cfg.source == "hh_rlhf":
    files = [f for f in str(prompts_cfg.files).split(",") if f]
    if not files:
      raise UserError("prompts.source='hh_rlhf' needs --config.prompts.files=PATH[,PATH] "
                      "(hh-rlhf jsonl or jsonl.gz)")
    seen, out = set(), []
    for path in files:
      pairs, _ = hh_rlhf.read_file(path)
      for p in pairs:
        if p.context not in seen:
          seen.add(p.context)
          out.append(p.context)
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order[:num]] if num else [out[i] for i in order]
  raise UserError(f"prompts.source={prompts_cfg.source!r}; use one of {', '.join(SOURCES)}")


def fewshot_prefix(examples) -> str:
  """A few Human turns, each closed by an empty Assistant turn, ending in a new Human turn."""
  parts = []
  for ctx in examples:
    first = ctx.split(HUMAN)[1].split(ASSISTANT)[0].strip() if HUMAN in ctx else ctx.strip()
    parts.append(f"{HUMAN} {first}{ASSISTANT}")
  return "".join(parts) + HUMAN


def parse_fewshot(text: str) -> str | None:
  """The context a few-shot continuation wrote: its first Human turn, or None if unusable."""
  body = text.split(ASSISTANT)[0].split(HUMAN)[0].strip()
  if len(body.split()) < 3:
    return None
  return f"{HUMAN} {body}{ASSISTANT}"


class PromptBatches:
  """Iteration i draws `batch` prompt rows with an RNG seeded by (seed, i)."""

  def __init__(self, token_ids: list[list[int]], batch: int, seed: int):
    if not token_ids:
      raise UserError("no prompts to train on; raise prompts.num or check prompts.files")
    self.token_ids, self.batch, self.seed = token_ids, int(batch), int(seed)
    self.position = 0

  def rows(self, iteration: int) -> np.ndarray:
    n = len(self.token_ids)
    rng = np.random.default_rng([self.seed, iteration])
    return rng.choice(n, self.batch, replace=n < self.batch)

  def __next__(self) -> tuple[np.ndarray, list[list[int]]]:
    rows = self.rows(self.position)
    self.position += 1
    return rows, [self.token_ids[i] for i in rows]

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: dict) -> None:
    self.position = int(state.get("position", 0))
