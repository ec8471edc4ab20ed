"""Iterated online RLHF at the `test` rung: comparisons collected and labeled, PMs retrained
on old + new, PPO rerun, the record and Elo written, and a rerun redoes nothing; and on
hand-built data: gold ties dropped and counted, best-of-k picking the best, PM accuracy's
values and Wilson interval."""
import json
import os
import random

import numpy as np
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
  c.pm_stage.data.seq_len = 96  # PPO's prompt budget: 96 - 8 new tokens
  c.ppo_stage.train.total_steps = 2
  c.ppo_stage.eval.num_prompts = 8
  c.ppo_stage.eval.bon_n = 2
  c.ppo_stage.eval.bon_prompts = 2
  return c


def test_two_iterations_record_pm_ppo_and_elo(runs, monkeypatch):
  root, dirs = runs
  rl_runs.informative_samples(monkeypatch)
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
    own = e["pm_accuracy"][f"iter_{i}"]
    assert own["lo"] <= own["accuracy"] <= own["hi"] and own["n"] == e["test_comparisons"]
    labels = e["labels"]  # every drawn pair is a comparison, a test pair, skipped or a tie
    assert labels["pairs_drawn"] == (e["comparisons"] + e["test_comparisons"]
                                     + labels["skipped_identical"] + labels["gold_ties"])
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
  assert [(h["model_a"], h["model_b"]) for h in rep["head_to_head"]] == [
      ("ppo", "initial"), ("online_1", "ppo"), ("online_2", "online_1")]
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
    # best-of-k candidates refuse, so gold never ties them with A (a gold tie is no pair)
    tail = " I can't help." if k > 1 else ""
    texts = [[f"From {os.path.basename(workdir)} draw {j} of {k} for {n}.{tail}"
              for j in range(k)] for n in range(len(contexts))]
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


# ---------------------------------------------------------------------------------------
# Values, on hand-built data (fast: no training).

GUITAR = "\n\nHuman: How do I tune my guitar?\n\nAssistant:"
GOOD, BAD = " Use a tuner and check the frets.", " asdf asdf"
# Two different texts with the same gold score (one on-topic detail each): a gold tie.
TIE_A, TIE_B = " Use a tuner.", " Try the tuner, slowly."


def test_gold_ties_are_dropped_and_counted_never_labelled_at_random():
  from hh_jax.data import labelers  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import online  # pylint: disable=g-import-not-at-top
  assert labelers.gold_score(GUITAR, TIE_A) == labelers.gold_score(GUITAR, TIE_B)
  assert labelers.gold_score(GUITAR, GOOD) > labelers.gold_score(GUITAR, BAD)
  contexts = [GUITAR] * 4
  a = [TIE_A, BAD, GOOD, ""]
  b = [TIE_B, GOOD, GOOD, GOOD]
  pairs, counts = online.label_comparisons(contexts, a, b, 0.0, random.Random(0))
  assert [(p.chosen, p.rejected) for p in pairs] == [(GOOD, BAD)]
  assert (counts["pairs_drawn"], counts["skipped_identical"], counts["gold_ties"]) == (4, 2, 1)
  for seed in range(50):  # with label noise too: a tie is never a pair, whatever the draw
    pairs, counts = online.label_comparisons([GUITAR], [TIE_A], [TIE_B], 1.0,
                                             random.Random(seed))
    assert pairs == [] and counts["gold_ties"] == 1


class _NumberScorer:
  """A stand-in PM: a response's reward is the number it ends with, -3 if it never stopped."""

  def reward(self, contexts, responses, stopped):
    return np.asarray([float(r.split()[-1]) if s else -3.0 for r, s in zip(responses, stopped)],
                      np.float32)


def test_online_best_of_k_picks_the_highest_reward():
  from hh_jax.rl import online  # pylint: disable=g-import-not-at-top
  cands = [["a 1", "b 5", "c 3"], ["d 9", "e -2", "f 0"], ["g -1", "h -3", "i 7"]]
  every = [[True] * 3] * 3
  got = online.best_of_k(_NumberScorer(), ["c0", "c1", "c2"], cands, every)
  assert got == ["b 5", "d 9", "i 7"]
  # a reply that never stopped takes the penalty; a tie goes to the earliest candidate
  stops = [[True, False, True], [False, True, True], [True, True, True]]
  cands[2] = ["g 7", "h -3", "i 7"]
  got = online.best_of_k(_NumberScorer(), ["c0", "c1", "c2"], cands, stops)
  assert got == ["c 3", "f 0", "g 7"]


class _FakePM:
  def score_raw(self, contexts, responses):
    return np.asarray([float(r.split()[-1]) for r in responses], np.float32)


def test_pm_accuracy_values_and_wilson_interval(tmp_path, monkeypatch):
  from hh_jax.data.pairs import Pair  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import online, reward  # pylint: disable=g-import-not-at-top
  # 10 pairs: the PM orders 8 like the label -> Wilson 95% [0.4902, 0.9433] (Wilson 1927;
  # Newcombe 1998 Table I lists the same 8/10 interval).
  chosen = [f" c {x}" for x in (5, 4, 3, 2, 1, 6, 7, 8, 0, 0)]
  rejected = [f" r {x}" for x in (1, 1, 1, 1, 0, 2, 3, 4, 9, 1)]
  path = str(tmp_path / "test.jsonl")
  hh_rlhf.write_file(path, [Pair("\n\nHuman: q\n\nAssistant:", c, r, 1, "x")
                            for c, r in zip(chosen, rejected)])
  monkeypatch.setattr(reward.PMScorer, "from_workdir", staticmethod(lambda *a, **k: _FakePM()))
  acc = online.pm_accuracy("pm_dir", path, mesh=None)
  assert acc["n"] == 10 and acc["accuracy"] == pytest.approx(0.8) and acc["pm_ties"] == 0
  assert (acc["lo"], acc["hi"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
  # A PM tie counts half: 2 right, 1 tie, 1 wrong of 4.
  half = online.pair_accuracy([2.0, 1.0, 0.5, 0.0], [1.0, 0.0, 0.5, 3.0])
  assert half["accuracy"] == pytest.approx(2.5 / 4) and half["pm_ties"] == 1
  assert half["lo"] < 2.5 / 4 < half["hi"]
  assert online.pair_accuracy([], []) is None


class _LengthScorer:
  """A stand-in judge PM: a response's score is its word count (so it disagrees with gold)."""

  def score(self, contexts, responses):
    return np.asarray([float(len(r.split())) for r in responses], np.float64)


def test_a_judge_pm_labels_by_its_scores_and_its_ties_are_dropped():
  """On real data (`online.judge`) the judge's order is the label, never the gold labeler's;
  its ties are dropped and counted as the judge's."""
  from hh_jax.data import labelers  # pylint: disable=g-import-not-at-top
  from hh_jax.eval import elo  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import online  # pylint: disable=g-import-not-at-top
  judge = elo.ScoreJudge(_LengthScorer(), "pm_test")
  long_bad = " asdf asdf asdf asdf asdf asdf asdf asdf"  # gold prefers GOOD, the judge this
  assert labelers.gold_score(GUITAR, GOOD) > labelers.gold_score(GUITAR, long_bad)
  contexts = [GUITAR] * 4
  a = [GOOD, " one two", " x", ""]
  b = [long_bad, " three four", " x y", GOOD]
  pairs, counts = online.label_comparisons(contexts, a, b, 0.0, random.Random(0), judge)
  assert [(p.chosen, p.rejected) for p in pairs] == [(long_bad, GOOD), (" x y", " x")]
  assert {p.source for p in pairs} == {"judge-pm_test"}
  assert (counts["pairs_drawn"], counts["skipped_identical"], counts["judge_ties"]) == (4, 1, 1)
  assert "gold_ties" not in counts and online.ties(counts) == 1
  assert counts["labels"] == "pm_test judge's order"
