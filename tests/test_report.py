"""report.md's pieces on hand-built records: which policies meet head to head, and the
online table's gold ties and PM accuracies with their Wilson intervals."""
import math

from hh_jax.eval import report


def test_head_to_heads_are_consecutive_policies_without_the_lm():
  models = {"lm": "a", "initial": "b", "ppo": "c", "online_1": "d", "online_2": "e"}
  assert report.consecutive_policies(models) == [
      ("ppo", "initial"), ("online_1", "ppo"), ("online_2", "online_1")]


def test_online_rows_show_ties_and_accuracy_intervals():
  acc = {"accuracy": 0.8, "lo": 0.4902, "hi": 0.9433, "n": 10, "pm_ties": 0}
  record = {"iterations": [
      {"iteration": 1, "comparisons": 40, "labels": {"gold_ties": 17},
       "pm_accuracy": {"iter_1": acc}, "ppo": {"gold_final": 0.0},
       "elo": [{"name": "online_1", "elo": 12.3, "lo": -4.0, "hi": 30.6}]},
      {"iteration": 2, "comparisons": 38, "pm_accuracy": {"iter_1": 0.5, "iter_2": None},
       "ppo": {"gold_final": None}, "elo": []}]}
  first, second = report.online_rows(record)
  assert (first["ties"], first["pm_acc_own"], first["pm_acc_first"]) == (
      "17", "0.800 [0.490, 0.943] (10)", "0.800 [0.490, 0.943] (10)")
  assert first["elo"] == 12.3 and first["elo_interval"] == "[-4, 31]"
  assert first["gold_final"] == 0.0  # a gold of 0 is a score, not a missing one
  # An older record: no label counts, a bare float accuracy, a missing split.
  assert (second["ties"], second["pm_acc_first"], second["pm_acc_own"]) == (
      "–", "0.500", "–")
  assert math.isnan(second["gold_final"]) and math.isnan(second["elo"])
  assert report.online_judge_name(record) == "gold labeler"


def test_online_rows_count_the_judge_pms_ties_on_real_data():
  record = {"iterations": [
      {"iteration": 1, "comparisons": 40, "labels": {"labels": "pm_test judge's order",
                                                      "judge_ties": 3, "judge": "pm_test"},
       "pm_accuracy": {}, "ppo": {}, "elo": []}]}
  assert report.online_rows(record)[0]["ties"] == "3"
  assert report.online_judge_name(record) == "judge PM `pm_test`"
