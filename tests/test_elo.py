"""Elo: the MLE recovers known ratings inside its bootstrap intervals, intervals shrink with
more games, the anchor holds, a hand-computed 2-model case, the prompt bootstrap's coverage
of the population Elo in simulated tournaments (and the game bootstrap's shortfall), the
confidence level on an enumerable case, ties as half, wins/ties counts, paired head-to-heads,
the judgments reader on good and bad lines, the gold judge on synthetic responses, the PM
slope and elo.json / the plot."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time

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
  assert games == [elo.Game("ppo", "lm", 1.0, GOOD[0]["context"]), elo.Game("lm", "ppo", 0.5),
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
  assert [g.prompt for g in only] == contexts  # the bootstrap's unit
  assert elo.report(games, reference="refuser", samples=10)["bootstrap_unit"] == "prompt"


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


# ---------------------------------------------------------------------------------------
# Honest intervals: a simulation with a known truth.

SIM_MU = np.asarray([0.0, 0.25, 0.5, 0.75, 1.0])  # latent mean quality per model
SIM_NAMES = [f"m{i}" for i in range(len(SIM_MU))]


def _normal_cdf(x):
  return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _population_elo() -> dict[str, float]:
  """The Elo the fit converges to on infinitely many prompts, from the generating model.

  Each model's response to a prompt has gold quality round(mu + z), z ~ N(0, 1) drawn per
  (model, prompt), and the judge is deterministic (higher wins, equal ties), as the gold
  judge is. So P(i beats j) and P(tie) are sums over the integer grades, exactly; the fit on
  the expected scores of all pairs (heavily weighted, so the prior does not matter) is the
  population Elo.
  """
  grades = np.arange(-30, 31)
  pmf = np.asarray([[_normal_cdf(k + 0.5 - mu) - _normal_cdf(k - 0.5 - mu) for k in grades]
                    for mu in SIM_MU])  # [models, grades]
  games = []
  for i, j in elo.all_pairs(range(len(SIM_MU))):
    below = np.cumsum(pmf[j]) - pmf[j]  # P(grade_j < k)
    expected = float(np.sum(pmf[i] * below) + 0.5 * np.sum(pmf[i] * pmf[j]))
    games += [elo.Game(SIM_NAMES[i], SIM_NAMES[j], expected)] * 100_000
  return elo.fit(games, reference="m0")


def _tournament(rng: np.random.Generator, prompts: int) -> list[elo.Game]:
  """Every pair of models on every prompt, judged on each response's latent grade."""
  grade = np.round(SIM_MU[:, None] + rng.standard_normal((len(SIM_MU), prompts)))  # [m, p]
  games = []
  for i, j in elo.all_pairs(range(len(SIM_MU))):
    out = np.where(grade[i] > grade[j], 1.0, np.where(grade[i] < grade[j], 0.0, 0.5))  # [p]
    games += [elo.Game(SIM_NAMES[i], SIM_NAMES[j], float(x), p) for p, x in enumerate(out)]
  return games


def test_prompt_bootstrap_covers_the_population_elo_and_the_game_bootstrap_does_not():
  """400 tournaments of 5 models on 40 prompts (10 games a prompt), 200 resamples each: the
  95% prompt-bootstrap interval of each model's distance from the reference must hold the
  population value 90-98% of the time; resampling games as if independent covers less."""
  truth = _population_elo()
  assert 40 < truth["m1"] < truth["m2"] < truth["m3"] < truth["m4"] < 250
  rng = np.random.default_rng(19)
  t0 = time.perf_counter()
  covered = {"prompt": [], "game": []}
  widths = {"prompt": [], "game": []}
  for t in range(400):
    games = _tournament(rng, prompts=40)
    by_game = [dataclasses.replace(g, prompt=None) for g in games]
    for unit, gs in (("prompt", games), ("game", by_game)):
      ci = elo.bootstrap(gs, reference="m0", samples=200, seed=t)
      for m in SIM_NAMES[1:]:
        covered[unit].append(ci[m][0] <= truth[m] <= ci[m][1])
        widths[unit].append(ci[m][1] - ci[m][0])
  coverage = {u: float(np.mean(c)) for u, c in covered.items()}
  ratio = np.mean(widths["prompt"]) / np.mean(widths["game"])
  print(f"coverage of the population Elo by nominal 95% intervals: prompt bootstrap "
        f"{coverage['prompt']:.3f}, game bootstrap {coverage['game']:.3f}; prompt intervals "
        f"{ratio:.2f}x as wide; {time.perf_counter() - t0:.1f} s")
  assert 0.90 <= coverage["prompt"] <= 0.98, coverage
  assert coverage["game"] < 0.88 and coverage["game"] < coverage["prompt"] - 0.08, coverage


def test_confidence_level_on_an_enumerable_bootstrap():
  """Two prompts, 4 games each: A wins 3 on p1 and 1 on p2. A prompt resample is {p1, p1}
  (A 6 of 8: +400 log10 3 Elo), {p1, p2} (4 of 8: 0) or {p2, p2} (-400 log10 3), with
  chances 1/4, 1/2, 1/4. So the 60% interval (20th and 80th percentiles) is ±190.8 and the
  40% interval (30th, 70th) is [0, 0]. (The weak prior pulls a fit on 8 games in by < 1.)"""
  games = ([elo.Game("a", "b", x, "p1") for x in (1.0, 1.0, 1.0, 0.0)]
           + [elo.Game("a", "b", x, "p2") for x in (1.0, 0.0, 0.0, 0.0)])
  d = 400 * math.log10(3)
  models, fits = elo.bootstrap_fits(games, reference="b", samples=2000, seed=0)
  values, counts = np.unique(np.round(fits[:, models.index("a")], 1), return_counts=True)
  assert values.tolist() == pytest.approx([-d, 0.0, d], abs=1.0)
  assert counts / 2000 == pytest.approx([0.25, 0.5, 0.25], abs=0.04)
  wide = elo.bootstrap(games, reference="b", samples=2000, confidence=0.6)["a"]
  narrow = elo.bootstrap(games, reference="b", samples=2000, confidence=0.4)["a"]
  assert wide == pytest.approx((-d, d), abs=1.0)
  assert narrow == pytest.approx((0.0, 0.0), abs=1e-6)
  rep = elo.report(games, reference="b", samples=2000, confidence=0.4)  # passed through
  row = {r["name"]: r for r in rep["models"]}["a"]
  assert rep["confidence"] == 0.4 and (row["lo"], row["hi"]) == pytest.approx((0.0, 0.0))
  assert "40% interval" in elo.table(rep)
  # On a continuous case, each level is its own percentiles of the same resamples.
  sim = _tournament(np.random.default_rng(3), prompts=30)
  models, fits = elo.bootstrap_fits(sim, reference="m0", samples=300, seed=1)
  for conf, (lo_pct, hi_pct) in ((0.95, (2.5, 97.5)), (0.5, (25.0, 75.0))):
    ci = elo.bootstrap(sim, reference="m0", samples=300, seed=1, confidence=conf)
    for k, m in enumerate(models):
      assert ci[m] == pytest.approx(tuple(np.percentile(fits[:, k], [lo_pct, hi_pct])))
  ci95 = elo.bootstrap(sim, reference="m0", samples=300, seed=1, confidence=0.95)
  ci50 = elo.bootstrap(sim, reference="m0", samples=300, seed=1, confidence=0.5)
  for m in SIM_NAMES[1:]:
    assert ci95[m][0] < ci50[m][0] < ci50[m][1] < ci95[m][1]
  with pytest.raises(UserError, match="confidence"):
    elo.bootstrap(sim, confidence=95)


def test_game_bootstrap_when_no_prompts():
  """Without prompts each game is its own unit: the same 8 games resampled as games give
  fits between the prompt bootstrap's three values (5 of 8, 7 of 8, ...)."""
  games = ([elo.Game("a", "b", x) for x in (1.0, 1.0, 1.0, 0.0)]
           + [elo.Game("a", "b", x) for x in (1.0, 0.0, 0.0, 0.0)])
  models, fits = elo.bootstrap_fits(games, reference="b", samples=500, seed=0)
  assert len(np.unique(np.round(fits[:, models.index("a")], 1))) >= 5
  assert elo.report(games, reference="b", samples=10)["bootstrap_unit"] == "game"


class _TableScorer:
  """Scores looked up by response text."""

  def __init__(self, table):
    self.table = table

  def score(self, contexts, responses):
    return np.asarray([self.table[r] for r in responses], np.float64)


def test_score_judge_ties_are_half_a_win():
  judge = elo.ScoreJudge(_TableScorer({"hi": 2.0, "lo": -1.0, "eq": 2.0, "near": 0.3,
                                       "near2": 0.1 + 0.2}), "table")
  got = judge.compare(["c"] * 5, ["hi", "lo", "eq", "hi", "near"],
                      ["lo", "hi", "hi", "hi", "near2"])
  assert got.tolist() == [1.0, 0.0, 0.5, 0.5, 0.5]  # 0.1 + 0.2 != 0.3 in floats, still a tie


def test_report_counts_wins_and_ties():
  games = [elo.Game("a", "b", 1.0, 0), elo.Game("a", "b", 1.0, 1), elo.Game("b", "a", 0.5, 2),
           elo.Game("b", "a", 1.0, 3), elo.Game("a", "c", 0.5, 0), elo.Game("c", "b", 0.0, 1),
           elo.Game("c", "a", 0.0, 2)]
  rows = {r["name"]: r for r in elo.report(games, reference="a", samples=10)["models"]}
  # a: beat b twice, tied b, lost to b, tied c, beat c; b: 1 win vs a + 1 vs c, 1 tie.
  assert {m: (r["games"], r["wins"], r["ties"]) for m, r in rows.items()} == {
      "a": (6, 3, 2), "b": (5, 2, 1), "c": (3, 0, 1)}


def test_head_to_head_hand_computed():
  a = [3.0, 1.0, 2.0, 2.0]
  b = [1.0, 1.0, 3.0, 0.0]
  h = elo.head_to_head(a, b, samples=500)
  assert (h["wins"], h["ties"], h["losses"], h["n"], h["prompts"]) == (2, 1, 1, 4, 4)
  assert h["win_rate"]["estimate"] == pytest.approx(2.5 / 4)
  assert h["score_diff"]["estimate"] == pytest.approx(0.75)
  for stat in ("win_rate", "score_diff"):
    assert h[stat]["lo"] <= h[stat]["estimate"] <= h[stat]["hi"]
  # A better on every prompt: every resample is on one side of the null, p = 2 / (B + 1).
  better = elo.head_to_head([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], samples=999)
  assert better["win_rate"]["p"] == better["score_diff"]["p"] == pytest.approx(2 / 1000)
  assert better["win_rate"]["lo"] == better["win_rate"]["hi"] == 1.0
  worse = elo.head_to_head([0.0, 0.5, 1.0], [1.0, 2.0, 3.0], samples=999)
  assert worse["score_diff"]["p"] == pytest.approx(2 / 1000) and worse["losses"] == 3
  same = elo.head_to_head([1.0, 2.0], [1.0, 2.0], samples=99)
  assert same["ties"] == 2 and same["win_rate"]["p"] == same["score_diff"]["p"] == 1.0


def test_head_to_head_resamples_prompts_and_its_p_value_is_calibrated():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=30), rng.normal(size=30)
  once = elo.head_to_head(a, b, samples=400, seed=1)
  # Each prompt judged twice: as one prompt, the same resamples and interval; as separate
  # rows, a narrower interval that claims twice the data.
  twice_a, twice_b = np.repeat(a, 2), np.repeat(b, 2)
  ids = np.repeat(np.arange(30), 2)
  clustered = elo.head_to_head(twice_a, twice_b, prompts=ids.tolist(), samples=400, seed=1)
  assert clustered["prompts"] == 30 and clustered["n"] == 60
  for stat in ("win_rate", "score_diff"):
    assert (clustered[stat]["lo"], clustered[stat]["hi"]) == pytest.approx(
        (once[stat]["lo"], once[stat]["hi"]))
  half = elo.head_to_head(a, b, samples=400, seed=1, confidence=0.5)
  for stat in ("win_rate", "score_diff"):
    assert once[stat]["lo"] < half[stat]["lo"] < half[stat]["hi"] < once[stat]["hi"]
  naive = elo.head_to_head(twice_a, twice_b, samples=400, seed=1)
  assert (naive["score_diff"]["hi"] - naive["score_diff"]["lo"]) < 0.8 * (
      clustered["score_diff"]["hi"] - clustered["score_diff"]["lo"])
  # Under the null (A and B alike), p < 0.05 about 5% of the time; with a real gap, mostly.
  null_p = [elo.head_to_head(rng.normal(size=40), rng.normal(size=40), samples=400,
                             seed=s)["score_diff"]["p"] for s in range(300)]
  gap_p = [elo.head_to_head(rng.normal(size=40) + 0.8, rng.normal(size=40), samples=400,
                            seed=s)["score_diff"]["p"] for s in range(50)]
  assert 0.02 <= np.mean(np.asarray(null_p) < 0.05) <= 0.10
  assert np.mean(np.asarray(gap_p) < 0.05) > 0.8


def test_head_to_heads_of_consecutive_models_and_their_table():
  assert elo.consecutive(["initial", "ppo", "online_1", "online_2"]) == [
      ("ppo", "initial"), ("online_1", "ppo"), ("online_2", "online_1")]
  scores = {"x": [0.0, 1.0, 2.0], "y": [1.0, 1.0, 1.0]}
  rows = elo.head_to_heads(scores, [("y", "x")], prompts=["p", "q", "r"], samples=50)
  assert rows[0]["model_a"] == "y" and (rows[0]["wins"], rows[0]["ties"], rows[0]["losses"]) \
      == (1, 1, 1)
  table = elo.head_to_head_table(rows)
  assert "| y vs x | 3 | 1 / 1 / 1 | 0.500 [" in table
  with pytest.raises(UserError, match="no scores"):
    elo.head_to_heads(scores, [("x", "z")])
  with pytest.raises(UserError, match="equal-length"):
    elo.head_to_head([1.0], [1.0, 2.0])
