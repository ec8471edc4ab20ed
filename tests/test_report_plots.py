"""The paper's figures of report.md on hand-made numbers: the PM learning curve's points and
Wilson intervals, PPO's rolling means and bands, the train-PM/test-PM parting point measured
from the start's lead, best-of-n standard errors over prompts, Elo points by iteration, and
every figure written non-empty."""
import math
import os

import numpy as np
import pytest

from hh_jax.eval import report_plots as rp
from hh_jax.rl import rejection_sampling as rs


def _wilson(k, n, z=1.959963984540054):
  p = k / n
  mid = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return mid - half, mid + half


def test_learning_curve_points_and_wilson_intervals():
  rows = [{"step": 10, "loss": 0.7},  # no eval: not a point
          {"step": 25, "eval_accuracy": 0.6, "eval_pairs": 200},
          {"step": 50, "eval_accuracy": 0.70, "eval_pairs": 200},
          {"step": 50, "eval_accuracy": 0.75, "eval_pairs": 200},  # a resumed repeat: the last
          {"step": 75, "eval_accuracy": 0.8}]  # an older row without eval_pairs: num_pairs
  pts = rp.learning_curve(rows, batch_size=32, num_pairs=100)
  assert [p["comparisons"] for p in pts] == [800, 1600, 2400]
  assert [p["accuracy"] for p in pts] == [0.6, 0.75, 0.8] and [p["n"] for p in pts] == [200, 200,
                                                                                       100]
  for p in pts:
    lo, hi = _wilson(p["accuracy"] * p["n"], p["n"])
    assert p["lo"] == pytest.approx(lo) and p["hi"] == pytest.approx(hi)
  assert pts[0]["lo"] == pytest.approx(0.5308, abs=1e-4)  # by hand: 0.5981 − 0.0673


def test_rolling_mean_and_band():
  mean, half = rp.rolling([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], window=5)
  np.testing.assert_allclose(mean, [3.0, 4.0])
  np.testing.assert_allclose(half, 1.959964 * math.sqrt(2.5) / math.sqrt(5), rtol=1e-6)
  assert len(rp.rolling([1.0, 2.0], window=5)[0]) == 0


def test_parting_is_measured_from_the_starts_lead():
  """A test PM that sits 1.0 below the train PM from the start has not parted; one that then
  falls a further 0.5 behind parts where the rolling lead over the start passes 0.25."""
  d = 0.2 * np.arange(12)
  train = 0.5 * d + 0.1
  offset = train - 1.0
  assert rp.parting(d, train, offset)["sqrt_kl"] is None
  assert rp.parting(d, train, offset)["lead_start"] == pytest.approx(1.0)
  falls = offset - np.where(np.arange(12) >= 6, 0.5, 0.0)
  part = rp.parting(d, train, falls)
  # leads over the start 0,0,0.5,0.5,0.5 in the window ending at index 8 → 0.3 > 0.25
  assert part["sqrt_kl"] == pytest.approx(1.6) and part["kl"] == pytest.approx(2.56)
  assert part["lead_end"] == pytest.approx(0.5)
  assert rp.parting(d[:3], train[:3], falls[:3])["sqrt_kl"] is None


def test_best_of_n_standard_errors_over_prompts():
  selector = np.asarray([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
  gold = np.asarray([[0.0, 2.0], [4.0, 0.0], [1.0, 0.0]])
  rows = {r["k"]: r for r in rs.gold_table(selector, gold, [1, 2])}
  # k = 2: picks gold 2, 4, 0 (one group per prompt); sd 2 over 3 prompts
  assert rows[2]["gold"] == pytest.approx(2.0)
  assert rows[2]["gold_se"] == pytest.approx(2.0 / math.sqrt(3))
  # k = 1: each prompt's mean over its two groups: 1, 2, 0.5
  assert rows[1]["gold_se"] == pytest.approx(np.std([1.0, 2.0, 0.5], ddof=1) / math.sqrt(3))
  assert rows[2]["selector_se"] == 0.0
  b = rp.bon_points(list(rows.values()))
  np.testing.assert_allclose(b["d"], [0.0, math.sqrt(rs.analytic_kl(2))])


def test_elo_points_by_iteration():
  rep = {"models": [{"name": n, "elo": e, "lo": e - 5, "hi": e + 5} for n, e in
                    (("online_2", 30.0), ("lm", -3.0), ("initial", 0.0), ("ppo", 10.0),
                     ("online_1", 20.0))]}
  pts = rp.elo_points(rep, rp.policy_iterations([m["name"] for m in rep["models"]]))
  assert [(p["name"], p["iteration"]) for p in pts] == [
      ("initial", 0.0), ("ppo", 0.5), ("online_1", 1.0), ("online_2", 2.0)]


def test_every_figure_is_written(tmp_path):
  curve = rp.learning_curve([{"step": s, "eval_accuracy": 0.5 + s / 1000, "eval_pairs": 100}
                             for s in (25, 50, 75)], 32)
  hist = [{"step": i, "objective/kl": 0.05 * i * i, "objective/gold": 0.01 * i,
           "objective/pm_stopped": 0.05 * i, "objective/test_pm_stopped": 0.03 * i}
          for i in range(1, 13)]
  bon = rs.gold_table(np.random.default_rng(0).normal(size=(8, 4)),
                      np.random.default_rng(1).normal(size=(8, 4)), [1, 2, 4])
  d = rp.sqrt_kl(hist)
  part = rp.parting(d, rp.series(hist, "objective/pm_stopped"),
                    rp.series(hist, "objective/test_pm_stopped"))
  elo = [{"name": "initial", "iteration": 0.0, "elo": 0.0, "lo": 0.0, "hi": 0.0},
         {"name": "online_1", "iteration": 1.0, "elo": 12.0, "lo": 4.0, "hi": 20.0}]
  paths = {k: str(tmp_path / v) for k, v in rp.FIGURES.items()}
  rp.plot_learning_curves(paths["learning_curve"], {"train PM": curve})
  rp.plot_bon_ppo(paths["bon_ppo"], bon, hist, "objective/pm_stopped")
  rp.plot_train_vs_test(paths["train_vs_test"], hist, part, "objective/pm_stopped",
                        "objective/test_pm_stopped")
  rp.plot_elo_by_iteration(paths["elo"], {"report": elo, "loop": elo[:1]})
  for path in paths.values():
    assert os.path.getsize(path) > 1000, path
