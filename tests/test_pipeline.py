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
from tests import procs
from tests import rl_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Every prompt set of the run draws from one prompt stream (seed 1500: the online loop's
# first collection, online.seed + 1000): the PPO pools and every evaluation. Without the
# exclusion of data/fresh.py they would overlap wholesale, so the disjointness test below
# can fail.
SAME_STREAM = {f"{stage}.{field}": 1500 for stage in ("ppo", "online.ppo_stage")
               for field in ("prompts.seed", "eval.seed")}
SAME_STREAM.update({"report.elo_seed": 1500, "online.online.elo_seed": 1500})


def _config():
  c = pipeline_config.get_config("tiny,size=test,runlocal=True,iterations=1")
  for key, value in SAME_STREAM.items():
    *path, last = key.split(".")
    node = c
    for part in path:
      node = node[part]
    node[last] = value
  return c


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
  work = str(tmp_path_factory.mktemp("pipe") / "run")
  with pytest.MonkeyPatch.context() as mp:  # else every online pair is a gold tie: none kept
    rl_runs.informative_samples(mp)
    return work, main.run(_config(), work)


def test_every_stage_ran_and_the_report_is_written(piped):
  work, rep = piped
  for name in pipeline.ORDER:
    assert os.path.exists(os.path.join(work, name, pipeline.DONE)), name
  with open(os.path.join(work, "elo.json")) as f:
    elo = json.load(f)
  assert {m["name"] for m in elo["models"]} == {"lm", "initial", "ppo", "online_1"}
  assert elo["reference"] == "initial"
  # Prompt-bootstrap intervals and the head-to-heads of consecutive policies.
  assert elo["bootstrap_unit"] == "prompt"
  assert [(h["model_a"], h["model_b"]) for h in elo["head_to_head"]] == [
      ("ppo", "initial"), ("online_1", "ppo")]
  assert all(h["wins"] + h["ties"] + h["losses"] == h["n"] for h in elo["head_to_head"])
  # The PM -> Elo slope, fitted on the latest PM's raw scores of every model.
  assert elo["pm_slope_pm"] == "online_pm_1"
  if sum("pm_score" in m for m in elo["models"]) >= 2:  # a model that never stopped has none
    assert elo["pm_slope"] is not None
  # A model's PM score is over its replies that stopped: none for one that never stopped.
  for m in elo["models"]:
    assert ("pm_score" in m) == (rep["stop_rates"][m["name"]] > 0), m
    assert "pm_score" not in m or np.isfinite(m["pm_score"])
  assert rep["trained_against"] == {"ppo": "pm", "online_1": "online_pm_1"}
  assert set(rep["pm_scores"]["ppo"]) == {"pm", "pm_test", "online_pm_1"}
  text = open(os.path.join(work, "report.md")).read()
  for heading in ("## Loss curves", "## Preference model", "## PPO", "## Online iterations",
                  "## Elo", "## Train PM vs test PM (disjoint halves)",
                  "## The online loop's later PMs", "## Helpfulness vs harmlessness",
                  "## Alignment tax", "### Head-to-head", "| ppo vs initial |",
                  "## Evaluation sets", "### PM accuracy against comparisons",
                  "### Best-of-n and PPO against √KL", "### Elo against online iteration"):
    assert heading in text, heading
  assert "test PMs" not in text  # the online loop's PMs are later PMs, not test PMs
  later = text.split("## The online loop's later PMs")[1].split("\n## ")[0]
  assert "| model | online_pm_1 | stop rate |" in later and "pm_test" not in later
  halves = text.split("## Train PM vs test PM (disjoint halves)")[1].split("\n## ")[0]
  assert "| model | pm | pm_test | stop rate |" in halves and "*Parting*" in halves
  assert set(rep["parting"]) >= {"sqrt_kl", "kl", "lead_start", "lead_end", "threshold"}
  # Every figure of the paper written beside report.md, non-empty, and referenced from it.
  assert set(rep["figures"]) == {"learning_curve", "bon_ppo", "train_vs_test", "elo"}
  for name in list(rep["figures"].values()) + ["curves.png"]:
    assert os.path.getsize(os.path.join(work, name)) > 1000, name
    assert f"]({name})" in text, name
  # The recall probe: accuracy with its standard error, the tax with its paired interval.
  tax = rep["tax"]
  assert set(tax) == {"initial", "ppo", "online_1"} and set(tax["ppo"]) == {"synthetic",
                                                                              "recall"}
  assert tax["ppo"]["synthetic"]["n"] == 16 and tax["ppo"]["recall"]["n"] == 32
  assert all(t["lo"] <= t["tax"] <= t["hi"] for t in tax["ppo"].values())
  row = next(line for line in text.splitlines() if line.startswith("| recall | 32 |"))
  assert row.count(" ± ") == 4 and row.count("[") == 3, row
  # The stages chained checkpoint to checkpoint.
  with open(os.path.join(work, "ppo", "config.json")) as f:
    cfg = json.load(f)
  assert cfg["init"]["workdir"] == os.path.join(work, "distill")
  assert cfg["pm"]["workdir"] == os.path.join(work, "pm")
  assert set(rep["helpful_harmless"][0]) >= {"helpful_benign", "harmless_harmful", "gold"}


def _recorded(work, filename):
  """{"<dir relative to the run>/<set>": entry} of every `filename` the run wrote."""
  out = {}
  for here, _, names in os.walk(work):
    if filename in names:
      with open(os.path.join(here, filename)) as f:
        for name, entry in json.load(f).items():
          out[f"{os.path.relpath(here, work)}/{name}"] = entry
  return out


def _digests(contexts):
  from hh_jax.data import fresh  # pylint: disable=g-import-not-at-top
  return {fresh.digest(c) for c in contexts}


def test_no_evaluation_prompt_is_in_a_training_set_of_the_run(piped):
  """Read back from the run's own files: every evaluation set against every training set."""
  from hh_jax.data import hh_rlhf  # pylint: disable=g-import-not-at-top
  work, _ = piped
  train, evals = _recorded(work, "train_contexts.json"), _recorded(work, "eval_contexts.json")
  assert set(train) == {"pmp/pmp_comparisons", "pm/pm_comparisons", "pm_test/pm_comparisons",
                        "rs/rs_prompts", "ppo/ppo_prompts", "online/iter_1/online_1_comparisons",
                        "online/iter_1/pm/pm_comparisons", "online/iter_1/ppo/ppo_prompts",
                        "lm/fact_prompts", "distill/fact_prompts"}
  assert set(evals) == {"ppo/ppo_eval", "online/iter_1/ppo/ppo_eval", "online/iter_1/online_1_test",
                        "online/online_elo", "./report_elo", "./report_capability_items",
                        "./report_recall_items"}
  trained = set().union(*(set(e["digests"]) for e in train.values()))
  for name, e in evals.items():
    assert e["size"] == len(e["digests"]) > 0, name
    assert isinstance(e["excluded"], int) and e["excluded"] >= 0, name
    assert not trained & set(e["digests"]), name
  # Drawn from the PPO pool's own stream, each evaluation passed over the pool's prompts.
  for name in ("ppo/ppo_eval", "./report_elo", "online/online_elo"):
    assert evals[name]["excluded"] > 0, name
  # The recorded digests are those of the texts the stages used.
  read = lambda path: hh_rlhf.read_file(os.path.join(work, path))[0]  # noqa: E731
  assert _digests(p.context for p in read("online/iter_1/comparisons_test.jsonl")) == set(
      evals["online/iter_1/online_1_test"]["digests"])
  assert _digests(p.context for p in read("online/iter_1/comparisons.jsonl")) == set(
      train["online/iter_1/online_1_comparisons"]["digests"])
  with open(os.path.join(work, "rs", "rs_best.jsonl")) as f:
    assert _digests(json.loads(line)["context"] for line in f) == set(
        train["rs/rs_prompts"]["digests"])
  with open(os.path.join(work, "online", "elo_contexts.json")) as f:
    assert _digests(json.load(f)) == set(evals["online/online_elo"]["digests"])
  # Prompts kept whole: the budget is the PM's seq_len minus the reply; turns lost, counted.
  with open(os.path.join(work, "ppo", "ppo_eval.json")) as f:
    counts = json.load(f)["prompts"]
  assert counts["budget"] == 96 - 8 and counts["pool"] == 64
  assert counts["pool_shortened"] > 0 and counts["eval_shortened"] >= 0
  assert counts["pool_shortened"] == train["ppo/ppo_prompts"]["shortened"]
  text = open(os.path.join(work, "report.md")).read()
  section = text.split("## Evaluation sets")[1].split("\n## ")[0]
  rows = {r.split("|")[1].strip(): r.split("|")[1:-1] for r in section.splitlines()
          if r.startswith("| ") and not r.startswith("| set ") and "---" not in r}
  assert set(rows) == {name.rsplit("/", 1)[1] for name in evals}
  assert all(cells[-1].strip() == "0" for cells in rows.values())  # in_training


def assert_pm_halves_disjoint(work):
  """The train PM (`pm`) and the test PM (`pm_test`) trained on comparisons that share no
  context, read back from the run's files; the PPO stage optimised the first and scored with
  the second."""
  train = _recorded(work, "train_contexts.json")
  first = set(train["pm/pm_comparisons"]["digests"])
  second = set(train["pm_test/pm_comparisons"]["digests"])
  assert first and second and not first & second
  for stage, half in (("pm", "first"), ("pm_test", "second")):
    with open(os.path.join(work, stage, "config.json")) as f:
      assert json.load(f)["data"]["half"] == half, stage


def test_train_and_test_pm_share_no_comparison(piped):
  work, _ = piped
  assert_pm_halves_disjoint(work)
  with open(os.path.join(work, "ppo", "config.json")) as f:
    pm = json.load(f)["pm"]
  assert pm == {"workdir": os.path.join(work, "pm"), "test_workdir": os.path.join(work, "pm_test")}
  from hh_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  rows = [r for r in metrics_lib.read_metrics(os.path.join(work, "ppo")) if "objective/kl" in r]
  assert rows and all("objective/test_pm_stopped" in r for r in rows)


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


def test_tiny_preset_sizes_its_evaluations_for_the_effects_they_resolve():
  """The tiny preset's evaluation sets are sized for the effects docs/pipeline.md measured
  (issue 20: size each evaluation for its effect, tune nothing else): the PPO stage's
  gain of ~0.2 gold with a per-prompt paired sd of ~1.3 at 3 SEM, and an online PM's 0.65
  told from chance (a Wilson half-width under 0.11) on the ~half of the drawn pairs that
  are not gold ties."""
  c = pipeline_config.get_config("tiny")
  gain, paired_sd = 0.2, 1.3
  assert gain / (paired_sd / np.sqrt(c.ppo.eval.num_prompts)) >= 3.0
  o = c.online.online
  held = 0.5 * o.prompts_per_iteration * o.test_fraction  # non-tied held-out pairs
  assert 1.96 * np.sqrt(0.65 * 0.35 / held) < 0.11, held
  from hh_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  assert c.lm.train.total_steps >= 500 and synthetic.FACT_SHARE >= 0.35  # recall 0.61 at 500


def test_rerun_skips_finished_stages(piped, capsys):
  work, _ = piped
  main.run(_config(), work)
  out = capsys.readouterr().out
  assert out.count("done earlier") == len(pipeline.ORDER)


def _cli(work):
  """The pipeline as `piped` runs it (informative samples), in a process of its own."""
  return [sys.executable, "-m", "tests.informative_main",
          "--config=configs/pipeline.py:tiny,size=test,runlocal=True,iterations=1",
          f"--workdir={work}"] + [f"--config.{k}={v}" for k, v in SAME_STREAM.items()]


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
  with procs.running(_cli(cut), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL) as proc:
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
    proc.wait(timeout=60)
  assert not os.path.exists(os.path.join(cut, "report.md"))  # it really was cut short
  subprocess.run(_cli(cut), cwd=REPO, env=env, check=True, capture_output=True, timeout=1800)
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
                         check=True, capture_output=True, text=True, timeout=300).stdout.split()
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


def test_pm_halves_partition_synthetic_comparisons_and_files(tmp_path):
  """`pm.data.half`: synthetic comparisons of one half fill num_train and share no context
  with the other half's; an hh-rlhf file's pairs split into the two halves with none lost."""
  from configs import pm as pm_config  # pylint: disable=g-import-not-at-top
  from hh_jax.data import synthetic_pairs  # pylint: disable=g-import-not-at-top
  from hh_jax.train import pm as pm_lib  # pylint: disable=g-import-not-at-top
  c = pm_config.get_config("size=test,runlocal=True")
  c.data.num_train = 50
  got = {}
  for half in ("first", "second"):
    c.data.half = half
    got[half] = pm_lib.build_pairs(c, str(tmp_path))[0]
    assert len(got[half]) == 50 and all(pm_lib.in_half(p.context, half) for p in got[half])
  assert not _digests(p.context for p in got["first"]) & _digests(p.context
                                                                    for p in got["second"])
  path = tmp_path / "pairs.jsonl"
  pairs = synthetic_pairs.comparisons(80, seed=4)
  path.write_text("".join(json.dumps({"chosen": p.context + p.chosen,
                                      "rejected": p.context + p.rejected}) + "\n"
                          for p in pairs))
  c = pm_config.get_config("size=test,data=hh_rlhf,runlocal=True")
  c.data.train_files = c.data.eval_files = str(path)
  c.data.num_train = 0
  split = {}
  for half in ("first", "second"):
    c.data.half = half
    split[half] = [(p.context, p.chosen) for p in pm_lib.build_pairs(c, str(tmp_path))[0]]
  assert split["first"] and split["second"] and not set(split["first"]) & set(split["second"])
  assert len(split["first"]) + len(split["second"]) == 80


def test_pm_test_stage_is_the_pm_config_on_the_other_half(tmp_path):
  """`pm_test` takes every field of `pm` (overrides included) but the half; PPO scores with
  it; a train PM on no half (or the test half) is a one-line error."""
  from hh_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  c = _config()
  c.pm.train.total_steps = 7
  work = str(tmp_path)
  test = pipeline.stage_config(c, "pm_test", work)
  train = pipeline.stage_config(c, "pm", work)
  assert (train.data.half, test.data.half) == ("first", "second")
  assert test.train.total_steps == 7 and test.init.workdir == train.init.workdir
  with test.unlocked():
    test.data.half = "first"
  assert test.to_dict() == train.to_dict()
  assert pipeline.stage_config(c, "ppo", work).pm.test_workdir == os.path.join(work, "pm_test")
  for half in ("none", "second"):
    c.pm.data.half = half
    with pytest.raises(UserError, match="pm.data.half=first"):
      pipeline.stage_config(c, "pm_test", work)
