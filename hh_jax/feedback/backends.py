"""Who writes the replies, and which two models meet on a turn.

A backend turns (player, context, seed) into the reply's text in pieces, as it is made.
`SamplerBackend` serves project runs: each model is read by `params.load_lm` and sampled
token by token by its `Sampler.stream` (the chat command's path); a best-of-k player samples
k replies in one batch from the same sampler and keeps the one the PM scores highest, as the
paper's rejection-sampling deployment did, then hands its tokens out piece by piece like the
other side. Tests plug in their own backend (`--backend=MODULE:FUNCTION`).

JAX runs one program at a time on the host anyway, so one lock orders the sampling steps of
every conversation: concurrent annotators' replies advance token by token, interleaved.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import random
import threading
from typing import Iterable, Iterator, Protocol, Sequence

from hh_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Player:
  """One side of a turn: a model, sampled once (k = 1) or best-of-k by the PM."""
  model: str
  k: int = 1

  @property
  def name(self) -> str:
    return self.model if self.k == 1 else f"{self.model}+bo{self.k}"


class Backend(Protocol):
  models: list[str]  # the model names a turn can draw

  def reply(self, player: Player, context: str, seed: int) -> Iterator[str]:
    """The reply to `context` (ending in the Assistant marker), piece by piece."""


def draw_players(models: Sequence[str], rs_k: int, rng: random.Random) -> tuple[Player, Player]:
  """The (A, B) sides of a turn; which is A is a coin flip.

  rs_k > 1: one side is best-of-rs_k of a model, the other a single sample of a model (each
  drawn from `models`); otherwise two different models (the same one twice when only one is
  served: two samples of it, as the paper's first round compared).
  """
  if rs_k > 1:
    pair = [Player(rng.choice(list(models)), rs_k), Player(rng.choice(list(models)))]
  elif len(models) >= 2:
    pair = [Player(m) for m in rng.sample(list(models), 2)]
  else:
    pair = [Player(models[0]), Player(models[0])]
  rng.shuffle(pair)
  return pair[0], pair[1]


def parse_models(spec: str) -> dict[str, str]:
  """`NAME=RUN[,NAME=RUN...]` -> {name: run}; one line naming what is wrong."""
  out = {}
  for item in [s for s in str(spec or "").split(",") if s.strip()]:
    name, sep, run = item.partition("=")
    name, run = name.strip(), run.strip()
    if not sep or not name or not run:
      raise UserError(f"--models item {item!r}; write NAME=RUN_DIR, comma-separated")
    if not all(c.isalnum() or c in "_.-" for c in name):
      raise UserError(f"--models name {name!r}; use letters, digits, '_', '.', '-'")
    if name in out:
      raise UserError(f"--models names {name!r} twice; give each model its own name")
    out[name] = run
  if not out:
    raise UserError("--models is required: --models=NAME=RUN_DIR[,NAME=RUN_DIR...]")
  return out


def _check_run(flag: str, run: str, what: str) -> None:
  if not os.path.exists(os.path.join(run, "config.json")):
    raise UserError(f"{flag}: no run there (no config.json); pass the workdir of {what}")


def _locked(items: Iterable, lock: threading.Lock) -> Iterator:
  """`items`, each one produced while holding `lock`."""
  it = iter(items)
  while True:
    with lock:
      try:
        item = next(it)
      except StopIteration:
        return
    yield item


class SamplerBackend:
  """Project runs (LM, distill, PPO policies) sampled with `Sampler.stream`; a PM for best-of-k."""

  def __init__(self, runs: dict[str, str], *, max_new_tokens: int = 64,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
               pm_run: str = ""):
    from hh_jax.model import params as params_lib, sampling  # pylint: disable=g-import-not-at-top
    self.lock = threading.Lock()
    self.models = list(runs)
    self._loaded = {}
    for name, run in runs.items():
      _check_run(f"--models {name}={run}", run, "an LM, distill or PPO run")
      cfg, params, tok = params_lib.load_lm(run)
      settings = sampling.Settings(max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p,
                                   stop_ids=sampling.stop_ids_for(tok), pad_id=tok.pad_id)
      settings.check()
      self._loaded[name] = (sampling.Sampler(cfg, params), tok, settings)
    self.scorer = None
    if pm_run:
      _check_run(f"--pm={pm_run}", pm_run, "a PM run")
      from hh_jax.rl import reward  # pylint: disable=g-import-not-at-top
      self.scorer = reward.PMScorer.from_workdir(pm_run, batch_size=8)

  def warm_up(self, context: str) -> None:
    """Compiles each model's stream programs before the first annotator waits on them."""
    for name in self.models:
      for _ in self.reply(Player(name), context, 0):
        pass

  def reply(self, player: Player, context: str, seed: int) -> Iterator[str]:
    import jax  # pylint: disable=g-import-not-at-top
    from hh_jax import chat  # pylint: disable=g-import-not-at-top
    sampler, tok, settings = self._loaded[player.model]
    key = jax.random.PRNGKey(seed)
    prompt = tok.encode(context)
    if player.k == 1:
      yield from chat.text_deltas(_locked(sampler.stream(prompt, key, settings), self.lock),
                                  tok, settings.stop_ids)
      return
    if self.scorer is None:
      raise UserError("a best-of-k player needs a PM: pass --pm=PM_RUN with --rs_k")
    with self.lock:
      out = sampler([prompt] * player.k, key, settings)  # tokens [k, new], lengths [k]
      rows = [[int(t) for t in ids[:n]] for ids, n in zip(out["tokens"], out["lengths"])]
      texts = ["".join(chat.text_deltas(r, tok, settings.stop_ids)) for r in rows]
      scores = self.scorer.score([context] * len(texts), texts)
    best = max(range(len(texts)), key=lambda i: float(scores[i]))
    yield from chat.text_deltas(rows[best], tok, settings.stop_ids)


def load_backend(spec: str, **kwargs) -> Backend:
  """A backend from `MODULE:FUNCTION`, called with the serve command's model options."""
  module, _, fn = spec.partition(":")
  try:
    factory = getattr(importlib.import_module(module), fn)
  except (ImportError, AttributeError) as e:
    raise UserError(f"--backend={spec}: cannot load it ({e}); write MODULE:FUNCTION") from None
  return factory(**kwargs)
