"""`configs/pipeline.py:hh` end to end on the shared harmless-base sample (runlocal, `test`
rung): nothing of the run is synthetic (its stages' configs, files and report say so), the
report judges with the test PM, whose comparisons the train PM never saw, and prints the
PM's held-out accuracy beside the bag-of-words baseline on the same pairs."""
import json
import os
import re

import pytest

from configs import pipeline as pipeline_config
from hh_jax import main, pipeline
from hh_jax.data import fresh
from hh_jax.eval import provenance, report_real

HH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                  "data", "hh-rlhf", "harmless-base")
TRAIN, TEST = os.path.join(HH, "train.jsonl.gz"), os.path.join(HH, "test.jsonl.gz")


def _json(*path):
  with open(os.path.join(*path)) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def hh_run(tmp_path_factory):
  if not (os.path.exists(TRAIN) and os.path.exists(TEST)):
    pytest.skip(f"the shared hh-rlhf sample is absent ({HH}); run the tests from a checkout "
                "that has ../shared beside it")
  c = pipeline_config.get_config("hh,size=test,runlocal=True")
  c.pm.data.train_files, c.pm.data.eval_files = TRAIN, TEST
  c.pm.train.eval_batches = 4  # 32 held-out pairs: enough for the report's line
  # The sample has the harmless subset only: its test file stands in for both subsets.
  c.report.helpful_files = c.report.harmless_files = TEST
  work = str(tmp_path_factory.mktemp("hh") / "run")
  return work, main.run(c, work)


def test_hh_pipeline_trains_nothing_synthetic(hh_run):
  work, rep = hh_run
  assert pipeline.stage_names(pipeline_config.get_config("hh")) == (
      "lm", "pm", "pm_test", "rs", "distill", "ppo")
  for name in ("lm", "pm", "pm_test", "rs", "distill", "ppo"):
    assert os.path.exists(os.path.join(work, name, pipeline.DONE)), name
  # No PMP dump: no synthetic Posts.xml; no people's judgments: no online loop.
  assert not os.path.exists(os.path.join(work, "pmp"))
  assert not os.path.exists(os.path.join(work, "online"))
  # What every stage read, from the configs the stages wrote.
  lm, distill = _json(work, "lm", "config.json"), _json(work, "distill", "config.json")
  assert (lm["data"]["corpus"], lm["data"]["text_files"]) == ("text_files", TRAIN)
  assert (distill["data"]["corpus"], distill["data"]["text_files"]) == ("text_files", TRAIN)
  for half in ("pm", "pm_test"):
    d = _json(work, half, "config.json")["data"]
    assert (d["source"], d["train_files"], d["eval_files"]) == ("hh_rlhf", TRAIN, TEST)
  rs = _json(work, "rs", "config.json")
  assert (rs["data"]["source"], rs["data"]["hh_file"]) == ("hh_rlhf", TRAIN)
  ppo = _json(work, "ppo", "config.json")
  assert (ppo["prompts"]["source"], ppo["prompts"]["files"], ppo["eval"]["files"]) == (
      "hh_rlhf", TRAIN, TEST)
  # No gold score anywhere: the synthetic labeler judged nothing.
  assert not [k for k in _json(work, "ppo", "ppo_eval.json") if k.startswith("gold")]
  assert "gold_vs_k" not in _json(work, "rs", "rs_results.json")
  text = open(os.path.join(work, "report.md")).read()
  assert "None of the training data is synthetic." in text
  assert "No section is judged by the synthetic gold labeler" in text
  assert "Gold " not in text and "gold labeler's helpfulness" not in text
  assert "## Elo (pm_test judge, fresh prompts)" in text and report_real.JUDGE_CAVEAT in text
  assert "| name | helpful | harmless |" in text  # each model's pm_test score per subset
  assert text.count("Left out:") == 1  # no capability files given
  # Every evaluation set of the run is apart from every training context.
  trained = fresh.recorded([work], fresh.TRAIN)
  sets = fresh.read_sets([work], fresh.EVAL)
  for name in ("report_elo", "report_helpful", "report_harmless", "ppo_eval"):
    assert any(k.endswith(f":{name}") for k in sets), name
  for key, e in sets.items():
    assert not trained & set(e["digests"]), key


def test_report_prints_pm_accuracy_beside_bag_of_words(hh_run):
  work, _ = hh_run
  b = _json(work, "pm", "final_eval.json")["bow"]
  assert b["pairs"] == _json(work, "pm", "final_eval.json")["eval_pairs"] > 0
  assert b["pm_accuracy"] == _json(work, "pm", "final_eval.json")["eval_accuracy"]
  text = open(os.path.join(work, "report.md")).read()
  line = next(x for x in text.splitlines() if "bag-of-words baseline" in x)
  got = [float(v) for v in re.findall(r"[-+]?\d+\.\d+", line)]
  assert got[:5] == [round(b[k], 3) for k in ("pm_accuracy", "pm_se", "bow_accuracy",
                                               "bow_se", "difference")]


def test_judge_pm_comparisons_are_disjoint_from_the_policy_pm(hh_run):
  work, _ = hh_run
  train_pm = set(_json(work, "pm", "train_contexts.json")["pm_comparisons"]["digests"])
  judge_pm = set(_json(work, provenance.JUDGE_PM, "train_contexts.json")
                 ["pm_comparisons"]["digests"])
  assert train_pm and judge_pm and not train_pm & judge_pm
  assert _json(work, "elo.json")["judge"] == provenance.JUDGE_PM
  assert _json(work, "ppo", "config.json")["pm"]["workdir"] == os.path.join(work, "pm")
