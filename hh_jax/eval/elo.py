"""Elo scores of several models from pairwise games, with bootstrap intervals (`elo.json`).

The paper ranks its policies by Elo from crowdworker comparisons and reads a PM score
difference as an Elo difference (≈ 174 Elo per PM unit). Here the same table comes from any
judge that can say which of two responses to one context is better:

* the synthetic task's gold labeler (`GoldJudge`: `labelers.gold_score`, optionally with
  Bradley-Terry noise of a temperature, as the online loop's simulated labeler),
* a PM (`PMJudge`: the higher `PMScorer.score` wins),
* people, through a jsonl of judgments (`read_judgments`; the format is in docs/evals.md).

`play` turns {model: responses to one shared list of contexts} and a judge into games;
`fit` finds the maximum-likelihood Elo scores under P(i beats j) = 1 / (1 + 10^(−(E_i −
E_j)/400)), a tie counting half a win for each side; `bootstrap` resamples the prompts, each
with all its games (a prompt's response from one model plays all that model's games there,
so its games are not independent), and refits for a percentile interval; `report` puts it
together as the `elo.json` object. `head_to_head` compares two models on the same prompts
directly (wins / ties / losses, the mean judge-score difference, prompt-bootstrap intervals
and p-values), as the report does for each policy and the one before it.

Why a prior: a model that never lost (or a group of models that never met the others) has
no finite maximum-likelihood Elo. `fit` therefore maximizes the log-likelihood plus a very
weak Gaussian prior on each rating (sd `PRIOR_SD` = 2000 Elo around 0, before anchoring),
which keeps every rating finite and the Newton step defined, and moves a rating fitted from
a few hundred games by well under one Elo point. The scores are then shifted so that the
reference model sits at `reference_elo`; only differences mean anything.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
from typing import Hashable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from hh_jax import files
from hh_jax.data import records
from hh_jax.eval import intervals
from hh_jax.errors import UserError

PRIOR_SD = 2000.0         # Elo; see the module docstring
PAPER_PM_SLOPE = 174.0    # Elo per PM unit in Bai et al. 2022, printed beside ours
DEFAULT_MAX_BAD_SHARE = 0.05  # of a judgments file's lines (people's files are messier)
_K = math.log(10.0) / 400.0   # P(win) = sigmoid(_K * ΔElo)
WINNERS = {"a": 1.0, "b": 0.0, "tie": 0.5}


@dataclasses.dataclass(frozen=True)
class Game:
  """One comparison: `score_a` is 1 when model_a won, 0 when model_b won, 0.5 for a tie.

  prompt: what was sampled to make the game (any hashable: the context text, an index), or
  None. Games on one prompt are correlated (each model's one response to it plays all its
  games there), so `bootstrap` resamples prompts with all their games; a game without a
  prompt is its own unit.
  """
  model_a: str
  model_b: str
  score_a: float
  prompt: Hashable = None


# ---------------------------------------------------------------------------------------
# Fitting.


def _models_of(games: Sequence[Game], models: Sequence[str] | None) -> list[str]:
  seen = list(models or [])
  for g in games:
    for m in (g.model_a, g.model_b):
      if m not in seen:
        seen.append(m)
  return seen


def _index(games: Sequence[Game], models: Sequence[str]):
  """(a, b, s): model indices and A's score per game, arrays [games]."""
  pos = {m: i for i, m in enumerate(models)}
  try:
    a = np.asarray([pos[g.model_a] for g in games], np.int64)
    b = np.asarray([pos[g.model_b] for g in games], np.int64)
  except KeyError as e:
    raise UserError(f"a game names model {e.args[0]!r}, which is not in models {list(models)}"
                    ) from None
  s = np.asarray([g.score_a for g in games], np.float64)
  return a, b, s


def _check(games: Sequence[Game], models: Sequence[str], reference: str) -> None:
  if len(models) < 2:
    raise UserError(f"Elo needs games between at least 2 models, got {list(models)}")
  if reference not in models:
    raise UserError(f"reference model {reference!r} is not among the models {list(models)}")
  played = {m for g in games for m in (g.model_a, g.model_b)}
  idle = [m for m in models if m not in played]
  if idle:
    raise UserError(f"model(s) {idle} played no games; drop them or give them games")
  for g in games:
    if g.model_a == g.model_b:
      raise UserError(f"a game pits {g.model_a!r} against itself; drop it")


def _pair_design(a, b, m: int):
  """The distinct (a, b) pairings: (pairing of each game [games], X [pairings, m]).

  X has +1 at a's column and −1 at b's, so X @ E is E_a − E_b per pairing. The likelihood
  depends on the games only through each pairing's total weight and score, so fits run on
  pairings (a handful) instead of games (thousands).
  """
  uniq, inv = np.unique(a * m + b, return_inverse=True)
  x = np.zeros((len(uniq), m))  # [pairings, m]
  rows = np.arange(len(uniq))
  x[rows, uniq // m] = 1.0
  x[rows, uniq % m] = -1.0
  return inv.reshape(-1), x


def _newton(x, s, w, prior_sd: float, iters: int = 100) -> np.ndarray:
  """MAP ratings [B, m] (mean-zero gauge from the prior) of B weighted data sets at once.

  x: [pairings, m] from `_pair_design`; s: mean score of A per pairing, w: its total
  weight, both [B, pairings]. Log posterior per data set:
  Σ w (s log p + (1 − s) log(1 − p)) − Σ E²/(2 sd²), p = σ(K (E_a − E_b)).
  It is concave, so Newton with (per data set) step halving converges from 0 in a handful
  of steps.
  """
  lam = 1.0 / prior_sd ** 2
  batch, m = s.shape[0], x.shape[1]

  def objective(e):  # [B]
    z = _K * e @ x.T  # [B, pairings]
    # s log σ(z) + (1 − s) log σ(−z), written stably
    ll = -(s * np.logaddexp(0.0, -z) + (1 - s) * np.logaddexp(0.0, z))
    return np.sum(w * ll, axis=1) - 0.5 * lam * np.sum(e ** 2, axis=1)

  e = np.zeros((batch, m), np.float64)
  f = objective(e)
  for _ in range(iters):
    p = 1.0 / (1.0 + np.exp(-_K * e @ x.T))             # [B, pairings]
    grad = _K * (w * (s - p)) @ x - lam * e            # [B, m]
    c = w * p * (1 - p) * _K ** 2                       # [B, pairings]
    hess = np.einsum("bq,qi,qj->bij", c, x, x) + lam * np.eye(m)  # minus the Hessian, > 0
    step = np.linalg.solve(hess, grad[..., None])[..., 0]          # [B, m]
    t = np.ones((batch,))
    while True:
      f_new = objective(e + t[:, None] * step)
      worse = (f_new < f - 1e-12) & (t >= 1e-6)
      if not worse.any():
        break
      t = np.where(worse, 0.5 * t, t)
    e, f_old, f = e + t[:, None] * step, f, f_new
    moved = np.max(np.abs(t[:, None] * step), axis=1)  # [B]
    if np.all((moved < 1e-7) | (np.abs(f - f_old) < 1e-12)):
      break
  return e


def _prepare(games: Sequence[Game], reference: str | None, models: Sequence[str] | None):
  """(models, reference, (a, b, s)) after the checks that fit and bootstrap share."""
  if not games:
    raise UserError("Elo needs at least one game; the judge produced none")
  models = _models_of(games, models)
  reference = models[0] if reference is None else reference
  _check(games, models, reference)
  return models, reference, _index(games, models)


def fit(games: Sequence[Game], reference: str | None = None, reference_elo: float = 0.0,
        models: Sequence[str] | None = None, prior_sd: float = PRIOR_SD) -> dict[str, float]:
  """Maximum-likelihood (weak-prior MAP) Elo per model, the reference at `reference_elo`.

  models: the order (and set) of names; default: order of first appearance in `games`.
  reference: default the first model.
  """
  models, reference, (a, b, s) = _prepare(games, reference, models)
  pairing, x = _pair_design(a, b, len(models))
  weight = np.bincount(pairing, minlength=len(x)).astype(np.float64)  # [pairings]
  mean = np.bincount(pairing, s, minlength=len(x)) / weight            # [pairings]
  e = _newton(x, mean[None], weight[None], prior_sd)[0]
  e = e - e[models.index(reference)] + reference_elo
  return {m: float(v) for m, v in zip(models, e)}


def bootstrap_fits(games: Sequence[Game], reference: str | None = None,
                   reference_elo: float = 0.0, models: Sequence[str] | None = None,
                   samples: int = 200, seed: int = 0, prior_sd: float = PRIOR_SD
                   ) -> tuple[list[str], np.ndarray]:
  """(models, Elo of each model in each resample [samples, models]), anchored on the
  reference. The unit resampled is the prompt (`intervals.prompt_units`): a resample draws
  as many prompts as there are, with replacement, each with all its games."""
  if samples < 2:
    raise UserError(f"bootstrap needs at least 2 samples, got {samples}")
  models, reference, (a, b, s) = _prepare(games, reference, models)
  pairing, x = _pair_design(a, b, len(models))
  unit = intervals.prompt_units([g.prompt for g in games])
  n_units = int(unit.max()) + 1
  count = np.zeros((n_units, len(x)))  # [units, pairings] games
  total = np.zeros((n_units, len(x)))  # [units, pairings] A's summed score
  np.add.at(count, (unit, pairing), 1.0)
  np.add.at(total, (unit, pairing), s)
  rng = np.random.default_rng(seed)
  draws = intervals.cluster_weights(rng, n_units, samples)  # [samples, units]
  weight, score = draws @ count, draws @ total  # [samples, pairings] each
  mean = np.divide(score, weight, out=np.full_like(score, 0.5), where=weight > 0)
  e = _newton(x, mean, weight, prior_sd)  # [samples, models]
  ref = models.index(reference)
  return models, e - e[:, ref:ref + 1] + reference_elo


def bootstrap(games: Sequence[Game], reference: str | None = None, reference_elo: float = 0.0,
              models: Sequence[str] | None = None, samples: int = 200,
              confidence: float = 0.95, seed: int = 0, prior_sd: float = PRIOR_SD
              ) -> dict[str, tuple[float, float]]:
  """Percentile interval per model at `confidence`, from `bootstrap_fits`.

  Prompts, not games, are resampled whenever the games carry them: a prompt's games share
  its responses, and resampling games as if independent gives intervals that cover the
  population Elo less often than they claim (tests/test_elo.py measures both). Each resample
  is refit and anchored on the reference, so the reference's own interval is a point and the
  others say how sure we are of each model's distance from it.
  """
  intervals.check_confidence(confidence)  # before any fitting
  models, fits = bootstrap_fits(games, reference, reference_elo, models, samples, seed,
                                prior_sd)
  lo, hi = intervals.percentile_interval(fits, confidence)  # [models] each
  return {m: (float(l), float(h)) for m, l, h in zip(models, lo, hi)}


# ---------------------------------------------------------------------------------------
# Paired head-to-heads.


def head_to_head(scores_a: Sequence[float], scores_b: Sequence[float],
                 prompts: Sequence[Hashable] | None = None, samples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> dict:
  """Model A against model B on the same prompts, from a judge's scores of their responses.

  scores_a, scores_b: [n] the judge's score (gold) of A's and of B's response on row i,
  both answering row i's prompt. prompts: [n] each row's prompt (rows of one prompt are
  resampled together); default: every row its own prompt.

  Returns wins, ties and losses of A (higher score wins, equal scores tie), and two
  statistics, each with `estimate`, a prompt-bootstrap percentile interval `lo`/`hi` at
  `confidence` and a two-sided p-value `p` against its `null`:
  * `win_rate`: (wins + ties / 2) / n, null 0.5;
  * `score_diff`: mean(score_a − score_b), null 0.
  The p-value is the bootstrap's: the same `samples` prompt resamples give the statistic's
  distribution, and p = 2 · min(#{θ* ≤ null} + 1, #{θ* ≥ null} + 1) / (samples + 1), capped
  at 1 (`intervals.bootstrap_p`): below 1 − confidence roughly when the interval excludes
  the null.
  """
  sa = np.asarray(scores_a, np.float64)  # [n]
  sb = np.asarray(scores_b, np.float64)  # [n]
  if sa.shape != sb.shape or sa.ndim != 1 or not len(sa):
    raise UserError(f"head_to_head needs two equal-length lists of scores, got {sa.shape} "
                    f"and {sb.shape}")
  if prompts is not None and len(prompts) != len(sa):
    raise UserError(f"head_to_head: {len(prompts)} prompts for {len(sa)} scores")
  if samples < 2:
    raise UserError(f"bootstrap needs at least 2 samples, got {samples}")
  intervals.check_confidence(confidence)
  from hh_jax.data import labelers  # pylint: disable=g-import-not-at-top  (eval stays light)
  diff = sa - sb                                                        # [n]
  tied = np.abs(diff) <= labelers.TIE_TOLERANCE                         # [n]
  outcome = np.where(tied, 0.5, np.where(diff > 0, 1.0, 0.0))           # [n]
  unit = intervals.prompt_units([None] * len(sa) if prompts is None else list(prompts))  # [n]
  n_units = int(unit.max()) + 1
  rows = np.bincount(unit, minlength=n_units).astype(np.float64)       # [units]
  rng = np.random.default_rng(seed)
  draws = intervals.cluster_weights(rng, n_units, samples)            # [samples, units]
  weight = draws @ rows                                                 # [samples]
  out = {"n": int(len(sa)), "prompts": n_units, "wins": int(np.sum(outcome == 1.0)),
         "ties": int(np.sum(tied)), "losses": int(np.sum(outcome == 0.0)),
         "confidence": confidence, "bootstrap_samples": samples}
  for name, per_row, null in (("win_rate", outcome, 0.5),
                              ("score_diff", np.where(tied, 0.0, diff), 0.0)):
    stats = draws @ np.bincount(unit, per_row, minlength=n_units) / weight  # [samples]
    lo, hi = intervals.percentile_interval(stats, confidence)
    out[name] = {"estimate": float(np.mean(per_row)), "lo": float(lo), "hi": float(hi),
                 "p": intervals.bootstrap_p(stats, null), "null": null}
  return out


def consecutive(names: Sequence[str]) -> list[tuple[str, str]]:
  """Each model against the one before it: [(names[1], names[0]), (names[2], names[1]), …]."""
  return [(names[i + 1], names[i]) for i in range(len(names) - 1)]


def head_to_heads(scores: Mapping[str, Sequence[float]], pairs: Sequence[tuple[str, str]],
                  prompts: Sequence[Hashable] | None = None, samples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> list[dict]:
  """`head_to_head` of each (model_a, model_b) in `pairs`; scores: {model: [n]} on the same
  rows. Each entry names its models."""
  for pair in pairs:
    for m in pair:
      if m not in scores:
        raise UserError(f"head-to-head names model {m!r}, which has no scores")
  return [{"model_a": a, "model_b": b,
           **head_to_head(scores[a], scores[b], prompts, samples, confidence, seed)}
          for a, b in pairs]


def head_to_head_table(rows: Sequence[Mapping]) -> str:
  """Head-to-heads as a markdown table: W/T/L, win rate and mean score difference with
  their intervals and p-values."""
  if not rows:
    return ""
  pct = int(round(100 * rows[0].get("confidence", 0.95)))
  lines = [f"| A vs B | prompts | A wins / ties / B wins | A's win rate [{pct}%] | p | "
           f"mean score A − B [{pct}%] | p |", "| --- |" + " --- |" * 6]
  for r in rows:
    w, d = r["win_rate"], r["score_diff"]
    lines.append(f"| {r['model_a']} vs {r['model_b']} | {r['prompts']} | "
                 f"{r['wins']} / {r['ties']} / {r['losses']} | "
                 f"{w['estimate']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}] | {w['p']:.3g} | "
                 f"{d['estimate']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | {d['p']:.3g} |")
  return "\n".join(lines)


def pm_slope(elos: Mapping[str, float], pm_means: Mapping[str, float]) -> float | None:
  """Least-squares slope of Elo on mean PM score over the models that have both.

  The paper reads ≈ 174 Elo per PM unit off its own models; this is ours, from the data.
  None with fewer than 2 models or no spread in PM score.
  """
  names = [m for m in elos if m in pm_means]
  if len(names) < 2:
    return None
  x = np.asarray([pm_means[m] for m in names], np.float64)  # [models]
  y = np.asarray([elos[m] for m in names], np.float64)      # [models]
  if np.ptp(x) < 1e-12:
    return None
  slope, _ = np.polyfit(x, y, 1)
  return float(slope)


def report(games: Sequence[Game], reference: str | None = None, judge: str = "",
           reference_elo: float = 0.0, models: Sequence[str] | None = None,
           pm_means: Mapping[str, float] | None = None, samples: int = 200,
           confidence: float = 0.95, seed: int = 0, prior_sd: float = PRIOR_SD) -> dict:
  """The `elo.json` object: reference, judge, one entry per model, the PM → Elo slope.

  Each model's row: Elo, its `bootstrap` interval (lo, hi) at `confidence`, games played,
  outright wins and ties. `bootstrap_unit` says what was resampled ("prompt" when every game
  names one, "game" when none does, "mixed": prompts, and each game without one alone) and
  `bootstrap_units` how many units there were. Callers add the paired
  `head_to_head` entries under "head_to_head".
  """
  models = _models_of(games, models)
  reference = models[0] if reference is None and models else reference
  elos = fit(games, reference, reference_elo, models, prior_sd)
  ci = bootstrap(games, reference, reference_elo, models, samples, confidence, seed, prior_sd)
  rows = []
  for m in models:
    mine = [g for g in games if m in (g.model_a, g.model_b)]
    score = [g.score_a if g.model_a == m else 1.0 - g.score_a for g in mine]
    row = {"name": m, "elo": elos[m], "lo": ci[m][0], "hi": ci[m][1],
           "games": len(mine), "wins": sum(x == 1.0 for x in score),
           "ties": sum(x == 0.5 for x in score)}
    if pm_means and m in pm_means:
      row["pm_score"] = float(pm_means[m])
    rows.append(row)
  units = intervals.prompt_units([g.prompt for g in games])
  with_prompt = sum(g.prompt is not None for g in games)
  return {"reference": reference, "reference_elo": reference_elo, "judge": judge,
          "confidence": confidence, "bootstrap_samples": samples, "prior_sd": prior_sd,
          "bootstrap_unit": "prompt" if with_prompt == len(games) else (
              "game" if not with_prompt else "mixed"),
          "bootstrap_units": int(units.max()) + 1 if len(units) else 0,
          "games": len(games), "models": rows,
          "pm_slope": pm_slope(elos, pm_means or {}), "pm_slope_paper": PAPER_PM_SLOPE}


def write(path: str, rep: dict) -> None:
  """Writes the report as JSON (local or gs://); `path` is usually WORKDIR/elo.json."""
  files.write_json(path, rep)


def plot(rep: dict, path: str, title: str = "") -> None:
  """Elo per model with its bootstrap interval as error bars, as a PNG (local or gs://)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = rep["models"]
  x = np.arange(len(rows))
  elo = np.asarray([r["elo"] for r in rows])
  err = np.asarray([[r["elo"] - r["lo"] for r in rows], [r["hi"] - r["elo"] for r in rows]])
  fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.8))
  ax.errorbar(x, elo, yerr=np.maximum(err, 0), fmt="o", capsize=4)
  ax.axhline(rep.get("reference_elo", 0.0), color="k", lw=0.8, ls="--")
  ax.set_xticks(x)
  ax.set_xticklabels([r["name"] for r in rows], rotation=30, ha="right")
  ax.set_ylabel(f"Elo (reference {rep['reference']})")
  pct = int(round(100 * rep.get("confidence", 0.95)))
  unit = rep.get("bootstrap_unit", "game")
  ax.set_title(title or f"Elo by {rep.get('judge') or 'judge'}, {pct}% {unit}-bootstrap "
               "intervals")
  fig.tight_layout()
  files.save_figure(fig, path, dpi=120)
  plt.close(fig)


# ---------------------------------------------------------------------------------------
# Judges and games.


class Judge(Protocol):
  name: str

  def compare(self, contexts: Sequence[str], responses_a: Sequence[str],
              responses_b: Sequence[str]) -> np.ndarray:
    """A's score per game, float [n] in {0, 0.5, 1}."""


class ScoreJudge:
  """A judge from any scorer with `score(contexts, responses) -> [n]`: the higher score wins.

  temperature 0: the exact comparison, equal scores (within `labelers.TIE_TOLERANCE`) a
  tie, half a win each. temperature T > 0: A wins with probability σ((s_A − s_B)/T)
  (Bradley-Terry, as `labelers.label_pair` draws its labels), seeded. Scores are cached per (context, response), so playing every pair of M models
  scores each response once, not M − 1 times.
  """

  def __init__(self, scorer, name: str, temperature: float = 0.0, seed: int = 0):
    if temperature < 0:
      raise UserError(f"judge temperature must be >= 0, got {temperature}")
    self.scorer, self.name, self.temperature = scorer, name, float(temperature)
    self._rng = random.Random(f"judge/{name}/{seed}")
    self._cache: dict[tuple[str, str], float] = {}

  def scores(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Scores [n], each (context, response) computed once."""
    todo = sorted({(c, r) for c, r in zip(contexts, responses)} - self._cache.keys())
    if todo:
      got = np.asarray(self.scorer.score([c for c, _ in todo], [r for _, r in todo]))
      self._cache.update({k: float(v) for k, v in zip(todo, got)})
    return np.asarray([self._cache[(c, r)] for c, r in zip(contexts, responses)], np.float64)

  def compare(self, contexts, responses_a, responses_b) -> np.ndarray:
    from hh_jax.data import labelers  # pylint: disable=g-import-not-at-top  (eval stays light)
    sa, sb = self.scores(contexts, responses_a), self.scores(contexts, responses_b)
    if self.temperature == 0:  # scores within labelers.TIE_TOLERANCE tie
      tied = np.abs(sa - sb) <= labelers.TIE_TOLERANCE
      return np.where(tied, 0.5, np.where(sa > sb, 1.0, 0.0))
    return np.asarray([float(labelers.bradley_terry(x, y, self.temperature, self._rng))
                       for x, y in zip(sa, sb)])


def GoldJudge(temperature: float = 0.0, seed: int = 0, scorer: str = "gold") -> ScoreJudge:  # noqa: N802
  """The synthetic task's labeler (`labelers.SCORERS[scorer]`, default gold_score) as a judge."""
  from hh_jax.data import labelers  # pylint: disable=g-import-not-at-top
  if scorer not in labelers.SCORERS:
    raise UserError(f"unknown scorer {scorer!r}; use one of {sorted(labelers.SCORERS)}")
  fn = labelers.SCORERS[scorer]

  class _Scorer:
    def score(self, contexts, responses):
      return np.asarray([fn(c, r) for c, r in zip(contexts, responses)], np.float64)

  return ScoreJudge(_Scorer(), scorer, temperature, seed)


def PMJudge(pm, name: str = "pm") -> ScoreJudge:  # noqa: N802
  """A PM as a judge: `pm` is a `PMScorer` (or `PMScorer.from_workdir(...)`'s path)."""
  if isinstance(pm, str):
    from hh_jax.rl import reward  # pylint: disable=g-import-not-at-top
    pm = reward.PMScorer.from_workdir(pm)
  return ScoreJudge(pm, name)


def all_pairs(models: Iterable[str]) -> list[tuple[str, str]]:
  return list(itertools.combinations(list(models), 2))


def play(contexts: Sequence[str], responses: Mapping[str, Sequence[str]], judge: Judge,
         schedule: Sequence[tuple[str, str]] | None = None) -> list[Game]:
  """Every scheduled pair (default: all pairs) meets once on every context.

  responses: {model name: its response to each of `contexts`, in order} [n] each.
  Each game's prompt is its context's text, so `bootstrap` resamples contexts (a context
  drawn twice is one prompt: its games share its difficulty).
  """
  for m, rs in responses.items():
    if len(rs) != len(contexts):
      raise UserError(f"model {m!r} has {len(rs)} responses for {len(contexts)} contexts")
  schedule = all_pairs(responses) if schedule is None else list(schedule)
  games = []
  for ma, mb in schedule:
    for m in (ma, mb):
      if m not in responses:
        raise UserError(f"schedule names model {m!r}, which has no responses")
    out = judge.compare(contexts, responses[ma], responses[mb])  # [n]
    games.extend(Game(ma, mb, float(x), c) for x, c in zip(out, contexts))
  return games


def mean_scores(judge: ScoreJudge, contexts: Sequence[str],
                responses: Mapping[str, Sequence[str]]) -> dict[str, float]:
  """Each model's mean score under a scoring judge (a PM: the x of `pm_slope`)."""
  return {m: float(np.mean(judge.scores(contexts, rs))) for m, rs in responses.items()}


# ---------------------------------------------------------------------------------------
# Human judgments.


def read_judgments(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE) -> list[Game]:
  """Games from a jsonl of judgments, one per line (format: docs/evals.md).

  Required: "model_a", "model_b" (different non-empty strings) and "winner" ("a", "b" or
  "tie"). Optional strings: "context" (the game's prompt: `bootstrap` resamples contexts
  with all their judgments; a line without one is its own unit), "response_a", "response_b"
  (kept in the file for people, not needed for Elo). A bad line is skipped with
  `file:line: reason` (one warning line on stderr); more than `max_bad_share` of the lines
  bad is a one-line UserError.
  """
  path = str(path)
  if files.is_remote(path):
    raise UserError(f"{path}: read judgments from a local file (copy it down first)")
  skips = records.Skips(path, max_bad_share)
  games = []
  for lineno, raw in records.lines(path, skips):
    try:
      obj = records.json_object(raw)
      a, b = records.string(obj, "model_a"), records.string(obj, "model_b")
      if not a.strip() or not b.strip():
        raise ValueError("empty model name")
      if a == b:
        raise ValueError(f"model_a and model_b are both {a!r}")
      winner = records.string(obj, "winner").strip().lower()
      if winner not in WINNERS:
        raise ValueError(f"winner is {winner!r:.40}; use 'a', 'b' or 'tie'")
      context, _, _ = (records.string(obj, k, optional=True)
                       for k in ("context", "response_a", "response_b"))
    except ValueError as e:
      skips.bad(lineno, str(e))
      continue
    games.append(Game(a, b, WINNERS[winner], context or None))
  skips.finish("fix the judgments file")
  if not games:
    raise UserError(f"{path}: no judgments in the file")
  return games


def write_judgments(path: str, rows: Iterable[Mapping]) -> None:
  """The inverse, for tools that collect judgments: one JSON object per line."""
  files.write_text(path, "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows))


def table(rep: dict) -> str:
  """The report as a markdown table, for a README or report.md."""
  pct = int(round(100 * rep.get("confidence", 0.95)))
  unit = rep.get("bootstrap_unit", "game")
  lines = [f"| model | Elo | {pct}% interval ({unit} bootstrap) | games | wins | ties |",
           "| --- | --- | --- | --- | --- | --- |"]
  for r in rep["models"]:
    lines.append(f"| {r['name']} | {r['elo']:.0f} | [{r['lo']:.0f}, {r['hi']:.0f}] | "
                 f"{r['games']} | {r['wins']} | {r.get('ties', 0)} |")
  slope = rep.get("pm_slope")
  if slope is not None:
    lines.append("")
    lines.append(f"Elo per PM unit (fit): {slope:.0f}; the paper's: {rep['pm_slope_paper']:.0f}")
  return "\n".join(lines)

