"""Preference-model metrics over score margins: accuracy, by turns, calibration, Spearman.

Everything here is numpy over arrays of scores, so the same numbers come out whether
the scores came from a PM, the bag-of-words baseline, or the gold labeler.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def accuracy(margin: np.ndarray) -> float:
  """Share of pairs with r_chosen > r_rejected; an exact tie counts one half."""
  margin = np.asarray(margin, np.float64)
  return float(np.mean((margin > 0) + 0.5 * (margin == 0))) if margin.size else float("nan")


def accuracy_by_turns(margin: np.ndarray, turns: Sequence[int]) -> dict[str, dict]:
  """{turns: {"n", "accuracy"}}: the paper's accuracy-vs-conversation-length table."""
  margin, turns = np.asarray(margin), np.asarray(turns)
  return {str(int(t)): {"n": int(np.sum(turns == t)), "accuracy": accuracy(margin[turns == t])}
          for t in np.unique(turns)}


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def calibration(margin: np.ndarray, num_bins: int = 10) -> dict:
  """Reliability of P(chosen beats rejected) = σ(Δr), symmetrized over both orders.

  Each pair enters twice: predicted σ(Δr) with outcome 1 and σ(−Δr) with outcome 0, as if
  the two replies had been shown in either order, so bins span [0, 1] and the diagram is
  the paper's. ECE = Σ_bins (n_b / N)·|observed_b − predicted_b|; by symmetry it equals
  the usual ECE of the confidence max(p, 1 − p) against correctness.
  """
  p = sigmoid(margin)
  pred = np.concatenate([p, 1.0 - p])
  outcome = np.concatenate([np.ones_like(p), np.zeros_like(p)])
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  which = np.clip(np.digitize(pred, edges[1:-1]), 0, num_bins - 1)
  bins, ece = [], 0.0
  for b in range(num_bins):
    sel = which == b
    n = int(sel.sum())
    if not n:
      bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": 0})
      continue
    predicted, observed = float(pred[sel].mean()), float(outcome[sel].mean())
    ece += n / pred.size * abs(observed - predicted)
    bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                 "predicted": predicted, "observed": observed})
  return {"ece": float(ece), "bins": bins}


def rankdata(x: np.ndarray) -> np.ndarray:
  """Ranks from 1, ties given their average rank (as scipy.stats.rankdata)."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(x.size, np.float64)
  xs = x[order]
  i = 0
  while i < x.size:
    j = i
    while j + 1 < x.size and xs[j + 1] == xs[i]:
      j += 1
    ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
    i = j + 1
  return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation: Pearson over average ranks."""
  ra, rb = rankdata(a), rankdata(b)
  ra, rb = ra - ra.mean(), rb - rb.mean()
  denom = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
  return float(np.sum(ra * rb) / denom) if denom else float("nan")


def summary(chosen: np.ndarray, rejected: np.ndarray, turns: Sequence[int],
            num_bins: int = 10) -> dict:
  """The eval.json core: accuracy, ECE with its bins, by-turns table, score distribution."""
  chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
  margin = chosen - rejected
  cal = calibration(margin, num_bins)
  scores = np.concatenate([chosen, rejected])
  return {"num_pairs": int(margin.size), "accuracy": accuracy(margin), "ece": cal["ece"],
          "calibration": cal["bins"], "by_turns": accuracy_by_turns(margin, turns),
          "mean_margin": float(margin.mean()),
          "score": {"mean": float(scores.mean()), "std": float(scores.std()),
                    "chosen_mean": float(chosen.mean()), "rejected_mean": float(rejected.mean())}}
