"""Intervals for evaluation numbers, each over the unit that was sampled.

A report's prompts are what was drawn at random, so a bootstrap resamples prompts (with
every game or row that came from each: `prompt_units`, `cluster_weights`) and reads a
percentile interval off the resampled statistics (`percentile_interval`, with its two-sided
p-value `bootstrap_p`). A share of independent yes/no items (a PM's accuracy on held-out
pairs) gets the Wilson score interval (`wilson`), which stays inside [0, 1] and keeps its
coverage near 0 and 1 and on small n, where the normal approximation does not.
"""
from __future__ import annotations

import math
import statistics
from typing import Hashable, Sequence

import numpy as np

from hh_jax.errors import UserError


def prompt_units(prompts: Sequence[Hashable | None]) -> np.ndarray:
  """The resampling unit of each game (or row) [n]: one id per distinct prompt, and one
  without a prompt (None) its own unit."""
  ids: dict = {}
  out = np.empty((len(prompts),), np.int64)
  for i, p in enumerate(prompts):
    out[i] = ids.setdefault(("prompt", p) if p is not None else ("row", i), len(ids))
  return out


def cluster_weights(rng: np.random.Generator, units: int, samples: int) -> np.ndarray:
  """How often each unit is drawn in each bootstrap resample: [samples, units] counts,
  `units` draws with replacement per resample."""
  draws = rng.multinomial(units, np.full((units,), 1.0 / units), size=samples)
  return draws.astype(np.float64)


def check_confidence(confidence: float) -> None:
  if not 0 < confidence < 1:
    raise UserError(f"confidence must be in (0, 1), got {confidence}")


def percentile_interval(values: np.ndarray, confidence: float, axis: int = 0):
  """The central `confidence` percentile interval (lo, hi) of bootstrap values along `axis`:
  the (1 − confidence)/2 and (1 + confidence)/2 quantiles (numpy's linear interpolation)."""
  check_confidence(confidence)
  tail = 100 * (1 - confidence) / 2
  lo, hi = np.percentile(values, [tail, 100 - tail], axis=axis)
  return lo, hi


def bootstrap_p(stats: np.ndarray, null: float) -> float:
  """Two-sided bootstrap p-value from resampled statistics [samples]: twice the smaller share
  of them on either side of `null` (counting ties with it on both sides), each share
  (count + 1)/(samples + 1) so that it is never 0 from finitely many resamples; at most 1."""
  samples = len(stats)
  below = (np.sum(stats <= null) + 1) / (samples + 1)
  above = (np.sum(stats >= null) + 1) / (samples + 1)
  return float(min(1.0, 2 * min(below, above)))


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
  """Wilson score interval (lo, hi) of a binomial share successes / n at `confidence`.

  With z the two-sided normal quantile and p = successes / n:
  (p + z²/2n ± z √(p(1 − p)/n + z²/4n²)) / (1 + z²/n). `successes` may hold halves (a PM
  tie counted half). (nan, nan) for n = 0.
  """
  check_confidence(confidence)
  if n <= 0:
    return math.nan, math.nan
  if not 0 <= successes <= n:
    raise UserError(f"wilson: {successes} successes of {n}")
  z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
  p = successes / n
  centre = p + z * z / (2 * n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  scale = 1 + z * z / n
  return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)
