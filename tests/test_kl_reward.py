"""The √KL analyses as pure functions of numbers: the PM fit reads the PM score of the
replies that stopped (not the reward, which holds the no-stop penalty), the gold curves and
the train-PM/test-PM parting on hand-made histories, and no path from the analyses back
into the RL stages."""
import math

import numpy as np
import pytest

from hh_jax.eval import kl_reward
from hh_jax.rl import ppo_eval
from tests import test_layout


def _history(n=12):
  """Iterations where the PM score on stopped replies is exactly 0.5·√KL + 0.1 while the
  stop rate falls, so the reward (PM score, or -3 for a reply that never stopped) is not."""
  rows = []
  for i in range(n):
    kl = (0.2 * i) ** 2
    pm = 0.5 * math.sqrt(kl) + 0.1
    stop = 1.0 - 0.05 * i
    rows.append({"step": i + 1, "objective/kl": kl, "objective/pm_stopped": pm,
                 "objective/stop_rate": stop, "objective/scores": stop * pm - 3.0 * (1 - stop),
                 "objective/gold": 0.1 * math.sqrt(kl) - 0.2})
  return rows


def test_pm_fit_reads_the_pm_score_of_stopped_replies():
  out = kl_reward.analyze(_history(), {"kl": 4.0}, None, 0.25)
  fit = out["sqrt_kl_fit"]
  assert fit["slope"] == pytest.approx(0.5) and fit["intercept"] == pytest.approx(0.1)
  assert out["sqrt_kl_r2"] == pytest.approx(1.0) and fit["n"] == 12
  assert "gold_fits" not in out and "robustness" not in out


def test_pm_fit_skips_iterations_where_nothing_stopped():
  rows = _history()
  rows[3]["objective/pm_stopped"] = float("nan")
  d, pm, fit = kl_reward.pm_fit(rows)
  assert len(d) == len(pm) == 11 and fit["slope"] == pytest.approx(0.5)


def test_gold_curves_on_hand_made_numbers():
  rows = _history(3)  # √KL 0, 0.2, 0.4; gold -0.2, -0.18, -0.16
  bon = [{"k": 1, "analytic_kl": 0.0, "gold": -0.3}, {"k": 2, "analytic_kl": 0.25, "gold": -0.1}]
  g = kl_reward.gold_curves(rows, gold_initial=-0.2, gold_gain=0.05, final_kl=0.36,
                            bon_table=bon)
  np.testing.assert_allclose(g["ppo_d"], [0.0, 0.2, 0.4, 0.6])
  np.testing.assert_allclose(g["ppo_r"], [0.0, 0.02, 0.04, 0.05], atol=1e-12)
  np.testing.assert_allclose(g["bon_d"], [0.0, 0.5])
  np.testing.assert_allclose(g["bon_r"], [0.0, 0.2])


def test_robustness_parts_on_the_pm_scores_of_stopped_replies():
  rows = _history(12)
  for i, r in enumerate(rows):  # the test PM follows the train PM, then falls 0.5 behind
    r["objective/test_pm_stopped"] = r["objective/pm_stopped"] - (0.5 if i >= 6 else 0.0)
  rob = kl_reward.robustness(rows, threshold=0.25)
  # The 5-iteration rolling lead passes 0.25 at the window ending on iteration 9 (index 8):
  # leads 0,0,0.5,0.5,0.5 → 0.3; √KL there is 0.2·8.
  assert rob["parted_at_sqrt_kl"] == pytest.approx(1.6)
  out = kl_reward.analyze(rows, {"kl": 4.0}, None, 0.25)
  assert out["robustness"]["train_pm_final"] == pytest.approx(rows[-1]["objective/pm_stopped"])
  assert kl_reward.robustness(_history(), 0.25) is None  # no test PM


def test_summary_keeps_pm_score_and_stop_rate_apart():
  a = np.asarray
  first = {"scores": a([1.0, -3.0, 0.5, -3.0]), "pm_score": a([1.0, 9.0, 0.5, 7.0]),
           "stopped": a([True, False, True, False]), "kl": np.zeros(4)}
  final = {"scores": a([2.0, 2.0, 1.0, -3.0]), "pm_score": a([2.0, 2.0, 1.0, 5.0]),
           "stopped": a([True, True, True, False]), "kl": a([1.0, 2.0, 3.0, 2.0])}
  s = ppo_eval.summary(first, final)
  assert s["pm_stopped_initial"] == pytest.approx(0.75)
  assert s["pm_stopped_final"] == pytest.approx(5.0 / 3)
  assert (s["stop_rate_initial"], s["stop_rate_final"]) == (0.5, 0.75)
  assert s["reward_initial"] == pytest.approx(-1.125) and s["reward_final"] == pytest.approx(0.5)
  assert s["kl"] == pytest.approx(2.0) and s["kl_initial"] == 0.0


def test_the_analyses_reach_no_rl_stage():
  graph = test_layout.import_graph(test_layout.REPO / "hh_jax")
  seen = test_layout.reachable(graph, "hh_jax.eval.kl_reward")
  assert [n for n in seen if n.startswith("hh_jax.rl")] == []
  assert "upper bound" in kl_reward.bon_kl.__doc__


def test_iteration_metrics_log_pm_score_and_stop_rate_apart():
  from hh_jax.rl import ppo_stage  # pylint: disable=g-import-not-at-top

  class _Setup:
    def texts(self, out):
      return [""] * len(out["stopped"])

  out = {"stopped": np.asarray([True, False, True, True]),
         "pm_score": np.asarray([1.0, 50.0, 2.0, 3.0], np.float32),
         "pm_raw": np.zeros(4, np.float32), "logp": np.zeros((4, 2), np.float32),
         "sampler_logp": np.zeros((4, 2), np.float32), "response_mask": np.ones((4, 2))}
  row, _, gold = ppo_stage.iteration_metrics(out, [""] * 4, _Setup(), False)
  assert row["objective/pm_stopped"] == pytest.approx(2.0) and gold is None
  assert row["objective/stop_rate"] == 0.75


def test_history_values_stored_as_strings_read_as_floats():
  rows = _history()
  rows[2]["objective/pm_stopped"] = "nan"  # how metrics.jsonl writes a non-finite value
  d, pm, fit = kl_reward.pm_fit(rows)
  assert len(pm) == 11 and fit["slope"] == pytest.approx(0.5)
