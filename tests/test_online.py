"""Iterated online RLHF at the `test` rung: comparisons collected and labeled, PMs retrained
on old + new, PPO rerun, the record and Elo written, and a rerun redoes nothing."""
import json
import os

import pytest

from tests import rl_runs

from configs import online as online_config
from hh_jax import main
from hh_jax.data import hh_rlhf
from hh_jax.errors import UserError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("online")
  return root, rl_runs.train_lm_and_pm(root)


def _config(dirs):
  c = online_config.get_config(
      f"size=test,init={dirs['lm']},pm={dirs['pm']},lm={dirs['lm']},runlocal=True")
  c.pm_stage.data.seq_len = 64
  c.ppo_stage.train.total_steps = 2
  c.ppo_stage.eval.num_prompts = 8
  c.ppo_stage.eval.bon_n = 2
  c.ppo_stage.eval.bon_prompts = 2
  return c


def test_two_iterations_record_pm_ppo_and_elo(runs):
  root, dirs = runs
  work = str(root / "loop")
  # A policy deployed before the loop (as the pipeline deploys its PPO run): the LM again,
  # under another directory name.
  deployed = root / "ppo"
  if not deployed.exists():
    os.symlink(dirs["lm"], deployed)
  config = _config(dirs)
  config.online.deploy = str(deployed)
  record = main.run(config, work)
  its = record["iterations"]
  assert [e["iteration"] for e in its] == [1, 2]
  assert [e["collected_from"] for e in its] == ["ppo", "online_1"]
  for i, e in enumerate(its, start=1):
    it = os.path.join(work, f"iter_{i}")
    pairs, _ = hh_rlhf.read_file(os.path.join(it, "comparisons.jsonl"))
    assert len(pairs) == e["comparisons"] > 0
    assert os.path.exists(os.path.join(it, "pm", "reward_stats.json"))
    assert os.path.exists(os.path.join(it, "ppo", "ppo_eval.json"))
    assert set(e["pm_accuracy"]) == {f"iter_{j}" for j in range(1, i + 1)}
    names = {"initial", "ppo"} | {f"online_{j}" for j in range(1, i + 1)}
    assert {r["name"] for r in e["elo"]} == names
  # The second PM trained on the first iteration's comparisons too.
  with open(os.path.join(work, "iter_2", "pm", "config.json")) as f:
    files = json.load(f)["data"]["train_files"].split(",")
  assert files == [os.path.join(work, f"iter_{j}", "comparisons.jsonl") for j in (1, 2)]
  # ...continuing from the first iteration's PM (warm start), which continued from the base PM.
  assert json.load(open(os.path.join(work, "iter_2", "pm", "config.json")))["init"]["workdir"] == (
      os.path.join(work, "iter_1", "pm"))
  assert json.load(open(os.path.join(work, "iter_1", "pm", "config.json")))["init"]["workdir"] == (
      dirs["pm"])
  with open(os.path.join(work, "elo.json")) as f:
    rep = json.load(f)
  assert rep["reference"] == "initial" and len(rep["models"]) == 4
  assert all(r["lo"] <= r["elo"] <= r["hi"] for r in rep["models"])
  # A rerun finds every iteration recorded and changes nothing.
  mtime = os.path.getmtime(os.path.join(work, "online_record.json"))
  assert main.run(config, work) == record
  assert os.path.getmtime(os.path.join(work, "online_record.json")) == mtime


def test_needs_its_sources(runs, tmp_path):
  _, dirs = runs
  c = _config(dirs)
  c.online.pm_warm_start = False
  c.online.pm_init_workdir = ""
  with pytest.raises(UserError, match="pm_init_workdir"):
    main.run(c, str(tmp_path))
  c = _config(dirs)
  c.online.deploy = str(tmp_path / "nothing_here")
  with pytest.raises(UserError, match="holds no run"):
    main.run(c, str(tmp_path / "loop"))


class _Recorder:
  """Stands in for `online.Policies`: answers every request with text naming the policy and
  records which policy each call sampled, and how many samples per context."""

  def __init__(self, mesh):
    self.mesh, self.calls = mesh, []

  def respond(self, workdir, contexts, key, k=1, with_stopped=False):
    del key
    self.calls.append((os.path.basename(workdir), k))
    texts = [[f"From {os.path.basename(workdir)} draw {j} of {k} for {n}." for j in range(k)]
             for n in range(len(contexts))]
    return (texts, [[True] * k for _ in texts]) if with_stopped else texts


@pytest.mark.parametrize("rs_policy,expected", [("initial", "lm"), ("latest", "ppo")])
def test_best_of_k_draws_from_the_configured_policy(runs, tmp_path, rs_policy, expected):
  from hh_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import online  # pylint: disable=g-import-not-at-top
  _, dirs = runs
  c = _config(dirs)
  c.online.rs_policy = rs_policy
  c.online.rs_share = 1.0
  rec = _Recorder(mesh_lib.one_device_mesh())
  deployed = {"initial": dirs["lm"], "ppo": str(tmp_path / "ppo")}
  online.collect(c, rec, deployed, dirs["pm"], 1, str(tmp_path / "c.jsonl"),
                 str(tmp_path / "t.jsonl"))
  # A from the latest deployed policy, B = best-of-k from the configured one.
  assert rec.calls == [("ppo", 1), (expected, c.online.rs_k)]
  pairs, _ = hh_rlhf.read_file(str(tmp_path / "c.jsonl"))
  assert pairs and all({p.chosen.split()[1], p.rejected.split()[1]} == {"ppo", expected}
                       for p in pairs)
  c.online.rs_policy = "best"
  with pytest.raises(UserError, match="rs_policy"):
    online.collect(c, rec, deployed, dirs["pm"], 1, str(tmp_path / "c.jsonl"),
                   str(tmp_path / "t.jsonl"))
