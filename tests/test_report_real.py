"""The real-data report's pieces (hh_jax/eval/report_real.py) on hand-made inputs."""
import numpy as np
import pytest

from hh_jax.errors import UserError
from hh_jax.eval import elo as elo_lib
from hh_jax.eval import report_real


def test_capability_tasks_are_name_path_items_of_a_real_format():
  assert report_real.capability_tasks("mmlu:/d/mmlu.jsonl,arc_easy:/d/arc.jsonl") == {
      "mmlu": "/d/mmlu.jsonl", "arc_easy": "/d/arc.jsonl"}
  assert report_real.capability_tasks("") == {}
  with pytest.raises(UserError, match="give NAME:PATH"):
    report_real.capability_tasks("mmlu")
  with pytest.raises(UserError, match="unknown format"):
    report_real.capability_tasks("trivia:/d/t.jsonl")


def test_subset_table_is_the_judges_mean_and_its_standard_error_over_prompts():
  class Lengths:  # a judge's scorer: the reply's length
    def score(self, contexts, responses):
      return np.asarray([float(len(r)) for r in responses])

  judge = elo_lib.ScoreJudge(Lengths(), "len")
  subsets = {"helpful": ["a", "b", "c"], "harmless": ["d", "e"]}
  responses = {"helpful": {"m": ["x", "xxx", "xxxxx"]}, "harmless": {"m": ["xx", "xx"]}}
  (row,) = report_real.subset_table(judge, subsets, responses)
  assert row == {"name": "m", "helpful": f"3.000 ± {2 / np.sqrt(3):.3f}",
                 "harmless": "2.000 ± 0.000"}


def test_pm_vs_bow_line_carries_both_accuracies_and_the_paired_difference():
  b = {"pairs": 256, "fit_pairs": 1735, "pm_accuracy": 0.582, "pm_se": 0.031,
       "bow_accuracy": 0.605, "bow_se": 0.029, "difference": -0.023, "difference_se": 0.037}
  (line, _) = report_real.pm_vs_bow_md({"bow": b})
  assert "256 held-out pairs: PM accuracy 0.582 ± 0.031" in line
  assert "baseline" in line and "1735 training pairs) 0.605 ± 0.029" in line
  assert "difference -0.023 ± 0.037" in line and "-0.6 SE" in line
  assert "no bag-of-words" in report_real.pm_vs_bow_md({})[0]
