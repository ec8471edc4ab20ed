"""Elo: the MLE recovers known ratings inside its bootstrap intervals, intervals shrink with
more games, the anchor holds, a hand-computed 2-model case, the judgments reader on good and
bad lines, the gold judge on synthetic responses, the PM slope and elo.json / the plot."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from hh_jax.data import synthetic
from hh_jax.errors import UserError
from hh_jax.eval import elo

TRUE = {"m_low": -200.0, "m_mid": -50.0, "ref": 0.0, "m_up": 120.0, "m_top": 300.0}


def _simulate(n_games: int, seed: int) -> list[elo.Game]:
  """Random pairings, outcomes drawn from the Elo formula, a tie now and then."""
  rng = np.random.default_rng(seed)
  names = list(TRUE)
  games = []
  for _ in range(n_games):
    i, j = rng.choice(len(names), 2, replace=False)
    a, b = names[i], names[j]
    p = 1.0 / (1.0 + 10 ** (-(TRUE[a] - TRUE[b]) / 400))
    games.append(elo.Game(a, b, float(rng.random() < p)))
  return games


def test_mle_recovers_known_ratings_within_intervals_and_intervals_shrink():
  games = _simulate(4000, seed=1)
  rep = elo.report(games, reference="ref", samples=200, seed=0)
  rows = {r["name"]: r for r in rep["models"]}
  for name, want in TRUE.items():
    r = rows[name]
    assert r["lo"] <= want <= r["hi"], (name, want, r)
    assert r["lo"] <= r["elo"] <= r["hi"]
    assert abs(r["elo"] - want) < 40, (name, r["elo"], want)
  assert rows["ref"]["elo"] == 0.0 and rows["ref"]["lo"] == rows["ref"]["hi"] == 0.0
  order = sorted(TRUE, key=TRUE.get)
  assert sorted(rows, key=lambda m: rows[m]["elo"]) == order
  assert sum(r["games"] for r in rep["models"]) == 2 * len(games)

  small = elo.bootstrap(games[:500], reference="ref", samples=200, seed=0)
  width_small = np.mean([small[m][1] - small[m][0] for m in TRUE if m != "ref"])
  width_big = np.mean([r["hi"] - r["lo"] for r in rep["models"] if r["name"] != "ref"])
  # sqrt(8) ≈ 2.8 times the games: intervals about that much narrower
  assert width_big < 0.6 * width_small, (width_small, width_big)


def test_anchor_is_respected_and_only_shifts():
  games = _simulate(600, seed=2)
  at0 = elo.fit(games, reference="m_top")
  at1000 = elo.fit(games, reference="m_top", reference_elo=1000.0)
  assert at0["m_top"] == 0.0 and at1000["m_top"] == 1000.0
  for m in TRUE:
    assert at1000[m] - at0[m] == pytest.approx(1000.0, abs=1e-6)
  ci = elo.bootstrap(games, reference="m_top", reference_elo=1000.0, samples=20)
  assert ci["m_top"] == (1000.0, 1000.0)


def test_two_models_hand_computed():
  # 75% wins: p = 3/4 = 1/(1 + 10^(-d/400)) -> d = 400 log10(3) ≈ 190.8
  games = [elo.Game("a", "b", 1.0)] * 3000 + [elo.Game("a", "b", 0.0)] * 1000
  got = elo.fit(games, reference="b")
  assert got["a"] == pytest.approx(400 * math.log10(3), abs=0.05)
  # the same score with ties: 2 wins + 2 ties of 4 = 75%
  ties = ([elo.Game("a", "b", 1.0)] * 2 + [elo.Game("b", "a", 0.5)] * 2) * 1000
  assert elo.fit(ties, reference="b")["a"] == pytest.approx(400 * math.log10(3), abs=0.05)


def test_unbeaten_and_disconnected_models_stay_finite():
  games = [elo.Game("a", "b", 1.0)] * 5 + [elo.Game("c", "d", 0.5)] * 4
  got = elo.fit(games, reference="b")
  assert all(np.isfinite(v) for v in got.values())
  assert got["a"] > 300  # never lost: far above b, but finite (the weak prior)


def test_user_errors():
  with pytest.raises(UserError, match="at least one game"):
    elo.fit([])
  g = [elo.Game("a", "b", 1.0)]
  with pytest.raises(UserError, match="reference model 'z'"):
    elo.fit(g, reference="z")
  with pytest.raises(UserError, match=r"\['c'\] played no games"):
    elo.fit(g, models=["a", "b", "c"])
  with pytest.raises(UserError, match="against itself"):
    elo.fit([elo.Game("a", "a", 1.0), elo.Game("a", "b", 1.0)])
  with pytest.raises(UserError, match="3 responses for 2 contexts"):
    elo.play(["x", "y"], {"a": ["1", "2", "3"], "b": ["1", "2"]}, elo.GoldJudge())


def _lines(*objs):
  return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


GOOD = [{"context": "\n\nHuman: hi\n\nAssistant:", "model_a": "ppo", "response_a": " hello",
         "model_b": "lm", "response_b": " go away", "winner": "a"},
        {"model_a": "lm", "model_b": "ppo", "winner": "tie"},
        {"model_a": "lm", "model_b": "ppo", "winner": "B"}]


def test_read_judgments_good_and_bad_lines(tmp_path, capsys):
  path = tmp_path / "judgments.jsonl"
  bad = ["{not json", {"model_a": "lm", "model_b": "ppo"},
         {"model_a": "lm", "model_b": "ppo", "winner": "c"},
         {"model_a": "lm", "model_b": "lm", "winner": "a"},
         {"model_a": 3, "model_b": "ppo", "winner": "a"},
         {"model_a": "lm", "model_b": "ppo", "winner": "a", "context": 7}]
  path.write_text(_lines(*GOOD, "", *bad))
  games = elo.read_judgments(str(path), max_bad_share=0.8)
  assert games == [elo.Game("ppo", "lm", 1.0), elo.Game("lm", "ppo", 0.5),
                   elo.Game("lm", "ppo", 0.0)]
  err = capsys.readouterr().err
  assert "skipped 6 of 9 records" in err and f"{path}:5: not JSON" in err
  with pytest.raises(UserError, match=r"6 of 9 records malformed.*judgments.jsonl:5"):
    elo.read_judgments(str(path))  # default max_bad_share 5%
  with pytest.raises(UserError, match="cannot open"):
    elo.read_judgments(str(tmp_path / "missing.jsonl"))


def _synthetic_models(n: int):
  """Contexts and three synthetic 'models': the gold-best style, a refuser, off-topic."""
  rng = random.Random(0)
  ps = synthetic.prompts(n, seed=3)
  best = [synthetic.write_response(rng, p.topic, "refuse_alt" if p.harmful else "comply",
                                   gaming=False) for p in ps]
  refuse = [synthetic.write_response(rng, p.topic, "refuse", gaming=False) for p in ps]
  off = [synthetic.write_response(rng, p.topic, "offtopic", gaming=False) for p in ps]
  return [p.context for p in ps], {"best": best, "refuser": refuse, "offtopic": off}


def test_gold_judge_ranks_synthetic_responses():
  contexts, responses = _synthetic_models(60)
  games = elo.play(contexts, responses, elo.GoldJudge())
  assert len(games) == 3 * 60
  vs = [g for g in games if {g.model_a, g.model_b} == {"best", "refuser"}]
  assert all((g.score_a if g.model_a == "best" else 1 - g.score_a) == 1.0 for g in vs)
  got = elo.fit(games, reference="refuser")
  assert got["best"] > got["offtopic"] and got["best"] > got["refuser"]

  noisy = elo.play(contexts, responses, elo.GoldJudge(temperature=1.0, seed=5))
  again = elo.play(contexts, responses, elo.GoldJudge(temperature=1.0, seed=5))
  assert noisy == again  # seeded
  assert {g.score_a for g in noisy} <= {0.0, 1.0}
  assert elo.fit(noisy, reference="refuser")["best"] > 0
  only = elo.play(contexts, responses, elo.GoldJudge(), schedule=[("refuser", "best")])
  assert len(only) == 60 and all(g.score_a == 0.0 for g in only)


class _LengthPM:
  """A stand-in PM: longer responses score higher; counts what it was asked to score."""

  def __init__(self):
    self.calls = 0

  def score(self, contexts, responses):
    self.calls += len(responses)
    return np.asarray([len(r) / 10.0 for r in responses], np.float32)


def test_pm_judge_scores_each_response_once_and_slope():
  contexts = [f"\n\nHuman: q{i}\n\nAssistant:" for i in range(20)]
  responses = {f"m{k}": [" x" * (k + 1 + i % 3) for i in range(20)] for k in range(4)}
  pm = _LengthPM()
  judge = elo.PMJudge(pm)
  games = elo.play(contexts, responses, judge)
  assert pm.calls == len({(c, r) for rs in responses.values() for c, r in zip(contexts, rs)})
  means = elo.mean_scores(judge, contexts, responses)
  assert means["m3"] > means["m0"]
  rep = elo.report(games, reference="m0", judge="pm", pm_means=means, samples=20)
  assert rep["pm_slope"] is not None and rep["pm_slope"] > 0
  assert elo.pm_slope({"a": 0.0, "b": 174.0, "c": 348.0}, {"a": 1.0, "b": 2.0, "c": 3.0}) \
      == pytest.approx(174.0)
  assert elo.pm_slope({"a": 0.0}, {"a": 1.0}) is None


def test_report_written_and_plotted(tmp_path):
  rep = elo.report(_simulate(300, seed=4), reference="ref", judge="simulated", samples=30)
  elo.write(str(tmp_path / "elo.json"), rep)
  back = json.loads((tmp_path / "elo.json").read_text())
  assert back["reference"] == "ref" and back["judge"] == "simulated"
  assert {"name", "elo", "lo", "hi", "games", "wins"} <= set(back["models"][0])
  assert back["pm_slope"] is None
  elo.plot(back, str(tmp_path / "elo.png"))
  assert (tmp_path / "elo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| ref | 0 |" in elo.table(back)
