"""Prompts for RL: where they come from, and batches of them in a resumable order.

Three sources, as in the paper: the synthetic world's contexts (the laptop default, with a
gold labeler to judge the responses), the contexts of hh-rlhf comparison files (each
transcript up to its last `Assistant:`), and extra prompts written few-shot by the LM
itself (Bai et al. 2022 §4.3 grew their prompt set that way). A batch is a pure function
of (seed, iteration), so the checkpointed iteration count restores the batches an
uninterrupted run would have drawn.

A prompt is kept whole (`PromptFit`): one longer than the prompt budget (the PM's
`data.seq_len` minus the response length, so the PM reads every prompt token of a reply
that stopped) loses whole turns from the front, never a part of one, and always keeps its
last Human turn; a last Human turn alone over the budget stops the run in one line.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import numpy as np

from hh_jax.data import fresh, hh_rlhf, synthetic
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.errors import UserError

SOURCES = ("synthetic", "hh_rlhf")


def contexts(prompts_cfg, *, num: int | None = None, seed: int | None = None) -> list[str]:
  """Context texts ending in "\\n\\nAssistant:" from `prompts_cfg.source`."""
  num = int(prompts_cfg.num if num is None else num)
  stream = candidates(prompts_cfg, seed=seed)
  if not num and prompts_cfg.source == "hh_rlhf":  # 0: every context of the files
    return list(stream)
  return list(itertools.islice(stream, num))


def candidates(prompts_cfg, *, seed: int | None = None) -> Iterator[str]:
  """Distinct contexts of `prompts_cfg.source` in a seeded order, for as long as there are
  any (the synthetic world's never run out): what a draw that skips some reads on in."""
  seed = int(prompts_cfg.seed if seed is None else seed)
  if prompts_cfg.source == "synthetic":
    return (p.context for p in synthetic.prompt_stream(seed, prompts_cfg.mixture))
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
    return iter([out[i] for i in order])
  raise UserError(f"prompts.source={prompts_cfg.source!r}; use one of {', '.join(SOURCES)}")


def split_turns(context: str) -> list[str]:
  """A context as its exchanges, oldest first: each starts at a Human marker and runs to the
  next (text before the first marker stays with the first); "".join gives the context."""
  starts, at = [], context.find(HUMAN)
  while at >= 0:
    starts.append(at)
    at = context.find(HUMAN, at + len(HUMAN))
  starts = [0] + starts[1:]
  return [context[a:b] for a, b in zip(starts, starts[1:] + [len(context)])]


class PromptFit:
  """Contexts cut to a token budget at turn boundaries: the latest whole turns that fit.

  `budget`: tokens a prompt may take; `source`: how the budget was reached, and `fix`: what
  to change, both for the one-line error when a last Human turn alone is over it.
  `shortened` counts the contexts a draw kept that lost turns (`draw_fitted`).
  `skip_too_long`: a context whose last Human turn alone is over the budget is passed over
  (counted in `too_long`) instead of stopping the run: real conversations (hh-rlhf) hold a
  few such turns, which no budget a small model has would fit.
  """

  def __init__(self, tok, budget: int, source: str, fix: str, skip_too_long: bool = False):
    if budget < 1:
      raise UserError(f"the prompt budget is {budget} tokens ({source}); {fix}")
    self.tok, self.budget, self.source, self.fix = tok, int(budget), source, fix
    self.skip_too_long, self.too_long = bool(skip_too_long), 0
    self.shortened = 0

  def __call__(self, context: str) -> tuple[str, list[int]]:
    """(the kept text, its token ids): all of `context` if it fits, else its latest turns."""
    turns = split_turns(context)
    for start in range(len(turns)):
      text = "".join(turns[start:])
      ids = list(self.tok.encode(text))
      if len(ids) <= self.budget:
        return text, ids
    if self.skip_too_long:
      self.too_long += 1
      return None, None
    raise UserError(f"a prompt's last Human turn alone is {len(ids)} tokens, over the prompt "
                    f"budget of {self.budget} ({self.source}); {self.fix}")


def draw_fitted(stream: Iterable[str], num: int | None, fit: PromptFit, avoid: set[str]
                ) -> tuple[list[str], list[list[int]], int]:
  """(texts, token ids, passed over): the first `num` distinct contexts of `stream`, each
  kept whole within `fit`'s budget, whose kept text no set of `avoid` holds (digests of
  `hh_jax.data.fresh`); `fit.shortened` counts the kept ones that lost turns."""
  fitted = (x for x in ((c, *fit(c)) for c in stream)  # (context, kept text, ids)
            if x[1] is not None)  # None: over the budget, passed over (`skip_too_long`)
  before = fit.shortened
  kept, excluded = fresh.draw(fitted, num, avoid, text=lambda x: x[1])
  fit.shortened = before + sum(c != t for c, t, _ in kept)
  return [t for _, t, _ in kept], [i for _, _, i in kept], excluded


def draw_eval(prompts_cfg, num: int, seed: int, fit: PromptFit, workdir: str,
              upstream: Iterable[str], name: str) -> tuple[list[str], list[list[int]], dict]:
  """An evaluation set: `num` contexts of `prompts_cfg.source` drawn at `seed`, kept whole,
  that no training set recorded in the run holds (`fresh.run_dirs(workdir, upstream)`);
  recorded as set `name` in the workdir's eval_contexts.json with how many candidates it
  passed over. Returns (texts, ids, {"excluded", "shortened"})."""
  avoid = fresh.recorded(fresh.run_dirs(workdir, upstream), fresh.TRAIN)
  before = fit.shortened
  texts, ids, excluded = draw_fitted(candidates(prompts_cfg, seed=seed), num, fit, avoid)
  info = {"excluded": excluded, "shortened": fit.shortened - before}
  fresh.record(workdir, fresh.EVAL, name, texts, **info)
  return texts, ids, info


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
