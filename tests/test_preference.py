"""hh_jax/eval/preference.py against cases computed by hand (in the comments)."""
import math

import numpy as np
import pytest

from hh_jax.eval import preference as pref


def test_accuracy_counts_ties_as_half():
  assert pref.accuracy([1.0, -1.0, 0.0, 2.0]) == 0.625  # (1 + 0 + 0.5 + 1) / 4
  assert math.isnan(pref.accuracy([]))


def test_accuracy_by_turns():
  got = pref.accuracy_by_turns(np.array([1.0, -1.0, 0.0, 2.0, -3.0]), [1, 1, 2, 3, 3])
  assert got == {"1": {"n": 2, "accuracy": 0.5}, "2": {"n": 1, "accuracy": 0.5},
                 "3": {"n": 2, "accuracy": 0.5}}


def _logit(p):
  return math.log(p / (1 - p))


def test_ece_of_a_coin_is_zero():
  cal = pref.calibration(np.array([0.0]))  # p = 0.5 both ways, outcomes 1 and 0
  assert cal["ece"] == 0.0
  assert [b["n"] for b in cal["bins"]] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 0]
  assert cal["bins"][5]["observed"] == 0.5


def test_ece_overconfident_and_underconfident():
  # Both pairs right at p = 0.75: confidence 0.75, accuracy 1 -> ECE 0.25.
  assert pref.calibration(np.full(2, _logit(0.75)))["ece"] == pytest.approx(0.25)
  # One right, one wrong, both at confidence 0.75: accuracy 0.5 -> ECE 0.25.
  cal = pref.calibration(np.array([_logit(0.75), -_logit(0.75)]))
  assert cal["ece"] == pytest.approx(0.25)
  assert cal["bins"][7]["observed"] == 0.5 and cal["bins"][2]["observed"] == 0.5
  # Right at 0.75 and 0.85: |1 - .75|, |1 - .85|, |0 - .25|, |0 - .15| over 4 -> 0.2.
  cal = pref.calibration(np.array([_logit(0.75), _logit(0.85)]))
  assert cal["ece"] == pytest.approx(0.2)
  assert [b["n"] for b in cal["bins"]] == [0, 1, 1, 0, 0, 0, 0, 1, 1, 0]
  assert cal["bins"][8]["predicted"] == pytest.approx(0.85)
  # Five bins: 0.15 in [0, .2), 0.25 in [.2, .4), 0.75 in [.6, .8), 0.85 in [.8, 1].
  cal5 = pref.calibration(np.array([_logit(0.75), _logit(0.85)]), num_bins=5)
  assert [b["n"] for b in cal5["bins"]] == [1, 1, 0, 1, 1]
  assert cal5["ece"] == pytest.approx(0.2)


def test_rankdata_and_spearman():
  np.testing.assert_array_equal(pref.rankdata([3, 1, 2, 2]), [4, 1, 2.5, 2.5])
  assert pref.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert pref.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  # No ties: 1 - 6·Σd²/(n(n²-1)) = 1 - 6·4/120 = 0.8.
  assert pref.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
  # Ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 · 5) = 3 / sqrt(10).
  assert pref.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))
  assert math.isnan(pref.spearman([1, 1, 1], [1, 2, 3]))


def test_summary():
  s = pref.summary(np.array([1.0, 0.0]), np.array([0.0, 1.0]), [1, 2])
  assert s["num_pairs"] == 2 and s["accuracy"] == 0.5 and s["mean_margin"] == 0.0
  assert s["by_turns"] == {"1": {"n": 1, "accuracy": 1.0}, "2": {"n": 1, "accuracy": 0.0}}
  assert s["score"] == {"mean": 0.5, "std": 0.5, "chosen_mean": 0.5, "rejected_mean": 0.5}
  # margins ±1: p = σ(1) ≈ 0.731 right once and wrong once -> |0.5 - 0.731| = 0.231.
  assert s["ece"] == pytest.approx(1 / (1 + math.exp(-1)) - 0.5)
