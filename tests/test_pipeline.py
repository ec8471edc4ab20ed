"""The whole recipe at the `test` rung (runlocal): every stage in its own directory, the
report and elo.json written, and a rerun skips what finished."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import pipeline as pipeline_config
from hh_jax import main, pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  # The PM -> Elo slope, fitted on the latest PM's raw scores of every model.
  assert elo["pm_slope_pm"] == "online_pm_1" and elo["pm_slope"] is not None
  # A model's PM score is over its replies that stopped: none for one that never stopped.
  for m in elo["models"]:
    assert ("pm_score" in m) == (rep["stop_rates"][m["name"]] > 0), m
    assert "pm_score" not in m or np.isfinite(m["pm_score"])
  assert rep["trained_against"] == {"ppo": "pm", "online_1": "online_pm_1"}
  assert set(rep["pm_scores"]["ppo"]) == {"pm", "online_pm_1"}
  text = open(os.path.join(work, "report.md")).read()
  for heading in ("## Loss curves", "## Preference model", "## PPO", "## Online iterations",
                  "## Elo", "## Train PM vs test PMs", "## Helpfulness vs harmlessness",
                  "## Alignment tax"):
    assert heading in text
  assert os.path.getsize(os.path.join(work, "curves.png")) > 1000
  # The stages chained checkpoint to checkpoint.
  with open(os.path.join(work, "ppo", "config.json")) as f:
    cfg = json.load(f)
  assert cfg["init"]["workdir"] == os.path.join(work, "distill")
  assert cfg["pm"]["workdir"] == os.path.join(work, "pm")
  assert set(rep["helpful_harmless"][0]) >= {"helpful_benign", "harmless_harmful", "gold"}


def test_pm_table_marks_the_train_pm_and_subtracts_the_initial_policy():
  from hh_jax.eval import report  # pylint: disable=g-import-not-at-top
  models = {"lm": "a", "initial": "b", "ppo": "c", "online_1": "d"}
  against = report.trained_against(models, ["pm", "online_pm_1"])
  assert against == {"ppo": "pm", "online_1": "online_pm_1"}
  table = {"initial": {"pm": 1.0, "online_pm_1": -2.0},
           "ppo": {"pm": 3.5, "online_pm_1": -1.75},
           "online_1": {"pm": 0.5, "online_pm_1": 0.0}}
  lines = report.pm_table_md(table, {"pm": 2.0, "online_pm_1": 0.5}, against).splitlines()
  assert lines[0] == "| model | pm | online_pm_1 |"
  assert lines[2] == "| initial | 0 (raw 1.000) | 0 (raw -2.000) |"
  assert lines[3] == "| ppo | **+1.250** | +0.500 |"
  assert lines[4] == "| online_1 | -0.250 | **+4.000** |"


def test_rerun_skips_finished_stages(piped, capsys):
  work, _ = piped
  c = pipeline_config.get_config("tiny,size=test,runlocal=True,iterations=1")
  main.run(c, work)
  out = capsys.readouterr().out
  assert out.count("done earlier") == len(pipeline.ORDER)


def _cli(work):
  return [sys.executable, "-m", "hh_jax.main",
          "--config=configs/pipeline.py:tiny,size=test,runlocal=True,iterations=1",
          f"--workdir={work}"]


def _outcome(work):
  with open(os.path.join(work, "online", "online_record.json")) as f:
    record = json.load(f)
  for e in record["iterations"]:
    e.pop("seconds")
  with open(os.path.join(work, "elo.json")) as f:
    return record, json.load(f)


def test_sigkill_at_a_random_moment_then_rerun_gives_the_same_record(piped, tmp_path):
  ref, _ = piped
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}  # the devices `piped` had
  cut = str(tmp_path / "cut")
  proc = subprocess.Popen(_cli(cut), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  # A seeded random stage to die in: after that many stages have finished, mid-stage.
  after = int(np.random.default_rng(13).integers(1, len(pipeline.ORDER)))
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    done = sum(os.path.exists(os.path.join(cut, n, pipeline.DONE)) for n in pipeline.ORDER)
    if done >= after:
      time.sleep(1.0)  # into the next stage
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(cut, "report.md"))  # it really was cut short
  subprocess.run(_cli(cut), cwd=REPO, env=env, check=True, capture_output=True)
  assert _outcome(cut) == _outcome(ref)


def test_compile_cache_goes_to_the_workdir_unless_one_is_set(tmp_path):
  """Where `configs/pipeline.py`'s compile_cache="auto" puts XLA's persistent cache, checked in
  a fresh interpreter (this one's cache is the tests' own, which the pipeline must keep)."""
  code = ("import sys, jax; from hh_jax import pipeline; "
          "print(pipeline.use_compile_cache(sys.argv[1], sys.argv[2]), "
          "jax.config.jax_compilation_cache_dir)")
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["JAX_PLATFORMS"] = "cpu"

  def where(setting, workdir):
    out = subprocess.run([sys.executable, "-c", code, setting, workdir], cwd=REPO, env=env,
                         check=True, capture_output=True, text=True).stdout.split()
    return out[-2:]

  work = str(tmp_path / "run")
  assert where("auto", work) == [os.path.join(work, "jax_cache")] * 2
  assert where(str(tmp_path / "c"), work) == [str(tmp_path / "c")] * 2
  assert where("", work) == ["None", "None"]
  assert where("auto", "gs://bucket/run") == ["None", "None"]
  # Set already (as here, by tests/conftest.py): left as it is.
  import jax  # pylint: disable=g-import-not-at-top
  before = jax.config.jax_compilation_cache_dir
  assert before and pipeline.use_compile_cache("auto", work) == before
  assert jax.config.jax_compilation_cache_dir == before
