"""The whole recipe at the `test` rung (runlocal): every stage in its own directory, the
report and elo.json written, and a rerun skips what finished."""
import json
import os

import pytest

from configs import pipeline as pipeline_config
from hh_jax import main, pipeline


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
  work = str(tmp_path_factory.mktemp("pipe") / "run")
  c = pipeline_config.get_config("tiny,size=test,runlocal=True,iterations=1")
  return work, main.run(c, work)


def test_every_stage_ran_and_the_report_is_written(piped):
  work, rep = piped
  for name in pipeline.ORDER:
    assert os.path.exists(os.path.join(work, name, pipeline.DONE)), name
  with open(os.path.join(work, "elo.json")) as f:
    elo = json.load(f)
  assert {m["name"] for m in elo["models"]} == {"lm", "initial", "ppo", "online_1"}
  assert elo["reference"] == "initial"
  text = open(os.path.join(work, "report.md")).read()
  for heading in ("## Loss curves", "## Preference model", "## PPO", "## Online iterations",
                  "## Elo", "## Helpfulness vs harmlessness", "## Alignment tax"):
    assert heading in text
  assert os.path.getsize(os.path.join(work, "curves.png")) > 1000
  # The stages chained checkpoint to checkpoint.
  with open(os.path.join(work, "ppo", "config.json")) as f:
    cfg = json.load(f)
  assert cfg["init"]["workdir"] == os.path.join(work, "distill")
  assert cfg["pm"]["workdir"] == os.path.join(work, "pm")
  assert set(rep["helpful_harmless"][0]) >= {"helpful_benign", "harmless_harmful", "gold"}


def test_rerun_skips_finished_stages(piped, capsys):
  work, _ = piped
  c = pipeline_config.get_config("tiny,size=test,runlocal=True,iterations=1")
  main.run(c, work)
  out = capsys.readouterr().out
  assert out.count("done earlier") == len(pipeline.ORDER)
