"""The bag-of-words baseline learns what words can tell, and no more."""
import numpy as np

from hh_jax.data import synthetic_pairs
from hh_jax.eval import bow_baseline
from hh_jax.data.pairs import Pair


def test_learns_a_word_preference():
  pairs = [Pair("c", f" good answer {i}", f" bad answer {i}", 1) for i in range(50)]
  model = bow_baseline.fit(pairs, min_count=1, steps=100)
  assert bow_baseline.accuracy(model, pairs) == 1.0
  assert model.weights[model.vocab["good"]] > 0 > model.weights[model.vocab["bad"]]
  tie = [Pair("c", " unseen", " words", 1)]
  assert bow_baseline.accuracy(model, tie) == 0.5


def test_synthetic_mixed_task_is_not_solved_by_words():
  train = synthetic_pairs.comparisons(1500, seed=0, mixture="mixed")
  test = synthetic_pairs.comparisons(500, seed=1, mixture="mixed")
  model = bow_baseline.fit(train)
  acc = bow_baseline.accuracy(model, test)
  # Words alone help (refusals, hedges, detail counts) but context decides the rest;
  # docs/data.md quotes the full-size numbers from `python -m hh_jax.eval.bow_baseline`.
  assert 0.55 < acc < 0.75, acc
  assert np.isfinite(model.weights).all()


def test_real_sample_train_to_test(hh_sample_dir):
  report = bow_baseline.hh_report(str(hh_sample_dir))
  assert report["hh-rlhf/harmless-base/train"] > 0.85
  assert 0.55 < report["hh-rlhf/harmless-base/test"] < 0.66


def test_beside_pm_scores_the_pms_own_pairs_with_a_paired_standard_error():
  """The baseline fits on the PM's training pairs and scores the PM's held-out pairs; the
  difference's standard error is over pairs of the per-pair outcome difference (ties ½)."""
  train = [Pair("c", f" good answer {i}", f" bad answer {i}", 1) for i in range(60)]
  held = [Pair("d", f" good reply {i}", f" bad reply {i}", 1) for i in range(4)]
  out = bow_baseline.beside_pm(np.array([2.0, -1.0, 0.0, 3.0]), train, held)
  assert out["pairs"] == 4 and out["fit_pairs"] == 60
  assert out["bow_accuracy"] == 1.0  # "good" beats "bad" on every held-out pair
  assert out["pm_accuracy"] == 0.625  # right, wrong, tie (½), right
  d = np.array([0.0, -1.0, -0.5, 0.0])  # PM outcome − BoW outcome, per pair
  assert out["difference"] == d.mean()
  assert np.isclose(out["difference_se"], d.std(ddof=1) / 2)
  assert np.isclose(out["pm_se"], np.array([1, 0, .5, 1]).std(ddof=1) / 2)
  try:
    bow_baseline.beside_pm(np.zeros(3), train, held)
  except ValueError as e:
    assert "3 PM margins for 4" in str(e)
  else:
    raise AssertionError("a margin count that is not the pair count must raise")
