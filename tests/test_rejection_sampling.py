"""Best-of-k: the analytic KL, the best-of-k estimator, hh-rlhf output, the stage end to end."""
import json
import math
import os

import numpy as np
import pytest

from configs import lm as lm_config
from configs import rs as rs_config
from hh_jax.data import hh_rlhf
from hh_jax.errors import UserError
from hh_jax.rl import rejection_sampling as rs
from hh_jax.rl import prompts as prompts_lib
from hh_jax.rl import reward
from hh_jax.train import lm


def test_analytic_kl():
  assert rs.analytic_kl(1) == 0.0
  assert rs.analytic_kl(16) == pytest.approx(math.log(16) - 15 / 16)
  assert all(rs.analytic_kl(2 * k) > rs.analytic_kl(k) for k in (1, 2, 4, 8))


def test_best_of_groups_and_gold_table():
  selector = np.asarray([[0.0, 3.0, 1.0, 2.0]])
  gold = np.asarray([[1.0, -1.0, 5.0, 0.0]])
  np.testing.assert_array_equal(rs.best_of(selector, 2), [[1, 3]])
  np.testing.assert_array_equal(rs.best_of(selector, 4), [[1]])
  rows = {r["k"]: r for r in rs.gold_table(selector, gold, [1, 2, 4])}
  assert rows[1]["gold"] == pytest.approx(gold.mean())
  assert rows[2]["gold"] == pytest.approx((-1.0 + 0.0) / 2)  # the selector's picks
  assert rows[2]["gold_oracle"] == pytest.approx((1.0 + 5.0) / 2)
  assert rows[4]["selector_score"] == 3.0 and rows[4]["analytic_kl"] == rs.analytic_kl(4)


def test_best_of_breaks_ties_to_the_earliest_sample():
  scores = np.asarray([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 5.0, 5.0, 5.0]])
  np.testing.assert_array_equal(rs.best_of(scores, 4), [[1], [0], [1]])
  np.testing.assert_array_equal(rs.best_of(scores, 2), [[1, 2], [0, 2], [1, 2]])


class _LengthPM(reward.PMScorer):
  """A PMScorer whose raw score is the reply's length: the real reward and stop rule on top."""

  def __init__(self, mean=2.0, std=2.0):  # pylint: disable=super-init-not-called
    self.stats, self.no_stop_penalty = {"mean": mean, "std": std}, reward.NO_STOP_PENALTY

  def score_raw(self, contexts, responses):
    return np.asarray([len(r) for r in responses], np.float32)


def test_pick_best_by_the_reward_with_stop_flags():
  pm = _LengthPM()
  replies = [" a long reply that never stopped", " ok", " fine", " fine"]
  # Normalized (len - 2) / 2: 15, 0.5, 1.5, 1.5; the first hit the token limit.
  np.testing.assert_allclose(pm.reward(["c"] * 4, replies, [False, True, True, True]),
                             [reward.NO_STOP_PENALTY, 0.5, 1.5, 1.5])
  assert rs.pick_best(pm, "c", replies, [False, True, True, True]) == 2  # tie: the earlier
  assert rs.pick_best(pm, "c", replies, [True, True, True, True]) == 0
  assert rs.pick_best(pm, "c", replies, [False] * 4) == 0  # all penalized: the first


def test_analytic_kl_is_an_upper_bound_where_samples_repeat():
  assert rs.repeat_share([[" a", " b"], [" a", " a"], [" x", " y"], [" z", " z"]]) == 0.5
  assert "upper bound" in rs.analytic_kl.__doc__ and "upper bound" in rs.ANALYTIC_KL_NOTE


def test_pairs_are_hh_rlhf_lines(tmp_path):
  path = str(tmp_path / "p.jsonl")
  contexts = ["\n\nHuman: hi\n\nAssistant:", "\n\nHuman: yo\n\nAssistant:"]
  responses = [[" good", " bad", " ok"], [" same", " same", " same"]]
  scores = np.asarray([[2.0, -1.0, 0.0], [1.0, 1.0, 1.0]])
  assert rs.write_pairs(path, contexts, responses, scores) == 1  # the tied prompt is skipped
  with open(path) as f:
    lines = f.readlines()
  c_ctx, chosen, r_ctx, rejected = hh_rlhf.parse_line(lines[0])
  assert (c_ctx, chosen, r_ctx, rejected) == (contexts[0], " good", contexts[0], " bad")


def test_stage_with_the_gold_scorer(tmp_path):
  lm_dir = str(tmp_path / "lm")
  c = lm_config.get_config("size=test,runlocal=True")
  c.train.total_steps = 2
  lm.run(c, lm_dir)
  cfg = rs_config.get_config(f"policy={lm_dir},runlocal=True")
  out = str(tmp_path / "rs")
  result = rs.run(cfg, out)
  assert result["scorer"] == "gold" and result["k"] == 4 and result["prompts"] == 4
  assert [r["k"] for r in result["gold_vs_k"]] == [1, 2, 4]
  with open(os.path.join(out, "rs_results.json")) as f:
    saved = json.load(f)
  assert saved["analytic_kl"] == pytest.approx(rs.analytic_kl(4))
  assert "upper bound" in saved["analytic_kl_note"] and 0 <= saved["repeat_share"] <= 1
  with open(os.path.join(out, "rs_best.jsonl")) as f:
    assert len(f.readlines()) == 4
  cfg.rs.scorer = "pm"
  with pytest.raises(UserError, match="pm.workdir"):
    rs.run(cfg, out)


class _LengthScorer:
  """Longer responses score higher, a reply that never stopped lowest: unlike gold on an
  untrained LM's samples (all 0.0), it tells the k samples of a prompt apart, so picking the
  best is checkable."""

  def reward(self, contexts, responses, stopped):
    return np.asarray([len(r) + 1000.0 * bool(s) for r, s in zip(responses, stopped)],
                      np.float32)


def test_stage_keeps_the_best_of_k_by_its_scorer(tmp_path, monkeypatch):
  lm_dir = str(tmp_path / "lm")
  c = lm_config.get_config("size=test,runlocal=True")
  c.train.total_steps = 2
  lm.run(c, lm_dir)
  monkeypatch.setattr(rs, "make_scorer", lambda config, mesh: (_LengthScorer(), "length"))
  out = str(tmp_path / "rs")
  result = rs.run(rs_config.get_config(f"policy={lm_dir},runlocal=True"), out)
  with open(os.path.join(out, rs.PARTS_FILE)) as f:
    parts = [json.loads(line) for line in f]
  samples = [rr for p in parts for rr in p["responses"]]  # [prompt][k]
  stopped = np.asarray([ss for p in parts for ss in p["stopped"]], bool)  # [prompt, k]
  with open(os.path.join(out, "rs_best.jsonl")) as f:
    best = [json.loads(line) for line in f]
  lengths = np.asarray([[len(r) for r in rr] for rr in samples], np.float32)
  lengths = lengths + 1000.0 * stopped
  assert result["stop_rate"] == pytest.approx(stopped.mean())
  assert len(best) == len(samples) == 4 and lengths.std(1).max() > 0  # the samples differ
  for b, rr, n in zip(best, samples, lengths):
    assert b["response"] == rr[int(np.argmax(n))] and b["score"] == n.max()
    assert b["stopped"] == bool(n.max() >= 1000)
  table = {r["k"]: r for r in result["gold_vs_k"]}
  assert table[4]["selector_score"] == pytest.approx(lengths.max(1).mean())
  assert table[1]["selector_score"] == pytest.approx(lengths.mean())
  assert result["mean_best_score"] == pytest.approx(lengths.max(1).mean())
  with open(os.path.join(out, "rs_pairs.jsonl")) as f:
    for line in f:
      ctx, chosen, _, rejected = hh_rlhf.parse_line(line)
      i = next(j for j, b in enumerate(best) if b["context"] == ctx)
      assert chosen == samples[i][int(np.argmax(lengths[i]))]
      assert rejected == samples[i][int(np.argmin(lengths[i]))]


class _Policies:
  """Stands in for `online.Policies`: A is one fixed reply; best-of-k candidates differ in
  length, and the longest of them never stopped."""

  def __init__(self):
    from hh_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    self.mesh = mesh_lib.one_device_mesh()

  def respond(self, workdir, contexts, key, k=1, with_stopped=False):
    del workdir, key
    if k == 1:
      return [[" Sure."] for _ in contexts]
    # the pick refuses, so gold never ties it with A's " Sure." (a gold tie is no pair)
    texts = [[" ab", " a much longer reply that hit the limit", " I can't help.",
              " I can't help."][:k]
             for _ in contexts]
    flags = [[True, False, True, True][:k] for _ in contexts]
    return (texts, flags) if with_stopped else texts


def test_online_best_of_k_keeps_the_highest_reward(tmp_path, monkeypatch):
  from configs import online as online_config  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import online  # pylint: disable=g-import-not-at-top
  c = online_config.get_config("size=test,init=/a,pm=/b,lm=/a,runlocal=True")
  c.online.rs_share, c.online.rs_k, c.online.test_fraction = 1.0, 4, 0.0

  class _Bytes:  # a tokenizer stand-in for the prompt budget: one id per byte
    def encode(self, text):
      return list(text.encode())

  monkeypatch.setattr(online, "prompt_fit", lambda *a: prompts_lib.PromptFit(
      _Bytes(), 10_000, "test", "none"))
  monkeypatch.setattr(reward.PMScorer, "from_workdir",
                      classmethod(lambda cls, *a, **k: _LengthPM()))
  out = str(tmp_path / "c.jsonl")
  online.collect(c, _Policies(), {"initial": "/a"}, "/b", 1, out, str(tmp_path / "t.jsonl"))
  pairs, _ = hh_rlhf.read_file(out)
  assert pairs
  # B is the longest reply that stopped: never the longer one that hit the token limit
  # (PPO's no-stop penalty; the PM's score alone would pick it), never the shortest.
  for p in pairs:
    assert {p.chosen, p.rejected} == {" Sure.", " I can't help."}


def test_report_pm_table_scores_stopped_replies_and_stop_rates_apart(monkeypatch):
  from hh_jax.eval import report  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(reward.PMScorer, "from_workdir",
                      classmethod(lambda cls, *a, **k: _LengthPM(mean=0.0, std=2.0)))
  responses = {"initial": [" ab", " a reply that never stopped", " abcd"],
               "ppo": [" abcdefg", " abc", " endless"]}
  stopped = {"initial": [True, False, True], "ppo": [True, True, False]}
  table, stds = report.pm_table(["c"] * 3, responses, {"pm": "/x"}, stopped)
  assert table == {"initial": {"pm": 4.0}, "ppo": {"pm": 6.0}} and stds == {"pm": 2.0}
  stops = report.stop_rates(stopped)
  assert stops == {"initial": pytest.approx(2 / 3), "ppo": pytest.approx(2 / 3)}
  md = report.pm_table_md(table, stds, {"ppo": "pm"}, stops).splitlines()
  assert md[0] == "| model | pm | stop rate |"
  assert md[3] == "| ppo | **+1.000** | 0.667 |"
