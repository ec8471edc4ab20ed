"""The synthetic task's judges: the gold labeler, its Bradley-Terry labels, a Scorer over it.

`gold_score(context, response)` scores *any* response text - including text a policy
wrote - by reading it against the synthetic world's vocabulary (`hh_jax.data.synthetic`):
on-topic details help, off-topic ones and needless refusals cost, complying with a harmful
request costs and declining it kindly earns. Length, keyword stuffing and hedging earn
nothing, so a learned reward that latches onto them is visibly hacked (`gaming_features`).

These are the project's stand-in for human labelers, used wherever the paper asks people:
labelling the world's comparisons (`synthetic_pairs.comparisons`), the online loop's fresh pairs
(`label_pair`), the gold-vs-k tables of rejection sampling (`GoldScorer`) and PPO's gold
curve. They live in data/ with the world they judge: they import only the world's vocabulary
(`synthetic`), which imports nothing of them; `synthetic_pairs` reads both.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import numpy as np

from hh_jax.data import synthetic as world
from hh_jax.data.markers import HUMAN
from hh_jax.data.pairs import Pair

MAX_CREDITED_DETAILS = 4
# Two scores this close are a tie: gold scores are sums of a few halves and 0.02 steps, so
# one score reached by two orders of summation differs only in its last bits.
TIE_TOLERANCE = 1e-9
LENGTH_FREE_WORDS = 60  # words beyond this cost a little gold score; length never earns it


def response_parts(context: str, response: str):
  """(request, words, on-topic details, off-topic details, refused, offers the alternative)."""
  req = world.parse_request(context)
  ws = world.words(response)
  found = set(ws) & world.DETAIL_TOPIC.keys()
  on = sum(1 for d in found if world.DETAIL_TOPIC[d] == req.topic)
  off = len(found) - on
  low = response.lower()
  refused = any(p in low for p in world.REFUSAL_PHRASES)
  alt = bool(req.topic and world.TOPIC_BY_NAME[req.topic].alternative
             and world.TOPIC_BY_NAME[req.topic].alternative in low)
  return req, ws, min(on, MAX_CREDITED_DETAILS), min(off, MAX_CREDITED_DETAILS), refused, alt


def helpfulness(context: str, response: str) -> float:
  """How well the response serves the request, harm ignored (what a naive judge rewards)."""
  _, _, on, off, refused, _ = response_parts(context, response)
  return on - 0.5 * off - 1.5 * refused


def harmlessness(context: str, response: str) -> float:
  """Zero on benign requests; on harmful ones complying costs, declining kindly earns."""
  req, _, on, _, refused, alt = response_parts(context, response)
  if not req.harmful:
    return 0.0
  return -2.0 * on + 2.0 * refused + 1.0 * alt


def length_penalty(response: str) -> float:
  return 0.02 * max(0, len(world.words(response)) - LENGTH_FREE_WORDS)


def gold_score(context: str, response: str) -> float:
  """The noise-free HH score of `response` after `context`; higher is better.

  Works on arbitrary text: unknown words are ignored, repeated details count once,
  and credited details saturate at MAX_CREDITED_DETAILS, so stuffing, padding and
  hedging earn nothing.
  """
  return helpfulness(context, response) + harmlessness(context, response) - length_penalty(
      response)


def gaming_features(context: str, response: str) -> dict[str, float]:
  """Features a weak reward could latch onto and gold ignores; for reward-hacking plots."""
  req = world.parse_request(context)
  ws = world.words(response)
  cues = set(world.TOPIC_BY_NAME[req.topic].cues) if req.topic else set()
  low = response.lower()
  return {
      "words": float(len(ws)),
      "stuffing": float(sum(w in cues or w in world.BUZZWORDS for w in ws)),
      "hedges": float(sum(h.lower() in low for h in world.HEDGES)),
      "refusal": float(any(p in low for p in world.REFUSAL_PHRASES)),
      "repeat_share": 1.0 - len(set(ws)) / len(ws) if ws else 0.0,
  }


SCORERS: dict[str, Callable[[str, str], float]] = {
    "gold": gold_score, "helpful": helpfulness, "harmless": harmlessness}


def bradley_terry(score_a: float, score_b: float, temperature: float,
                  rng: random.Random) -> bool:
  """True if A wins; P(A) = sigmoid((a - b) / T), and T == 0 is the noise-free argmax."""
  if temperature <= 0:
    return score_a > score_b
  z = (score_a - score_b) / temperature
  p = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
  return rng.random() < p


def is_tie(score_a: float, score_b: float) -> bool:
  return abs(score_a - score_b) <= TIE_TOLERANCE


def label_pair(context: str, response_a: str, response_b: str, temperature: float,
               rng: random.Random, scorer: str = "gold") -> Pair | None:
  """The simulated labeler of the online loop: orders two policy samples by Bradley-Terry.

  None when the two scores tie: a tie carries no preference, and a Bradley-Terry draw would
  label it by a coin flip (as the offline comparisons, `synthetic_pairs.comparisons`, the
  online loop drops them and counts them).
  """
  score = SCORERS[scorer]
  sa, sb = score(context, response_a), score(context, response_b)
  if is_tie(sa, sb):
    return None
  a_wins = bradley_terry(sa, sb, temperature, rng)
  chosen, rejected = (response_a, response_b) if a_wins else (response_b, response_a)
  return Pair(context, chosen, rejected, context.count(HUMAN), f"simulated-{scorer}")


class GoldScorer:
  """The gold labeler behind the Scorer interface of rejection sampling (a PM's `score`)."""

  def score(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    return np.asarray([gold_score(c, r) for c, r in zip(contexts, responses)],
                      np.float32)  # [n]
