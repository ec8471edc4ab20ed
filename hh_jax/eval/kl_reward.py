"""Reward against √KL: the paper's PPO measurements, as analyses of numbers given to them.

Bai et al. (2022) found the PM score of a PPO policy roughly linear in √KL(π ‖ π_0); Gao
et al. (2022) fit gold reward against d = √KL with R_bon(d) = d(α - βd) for best-of-n
(whose KL is known exactly, log n - (n-1)/n) and R_RL(d) = d(α - β log d) for RL, and
showed a PM's score keeps rising while the gold score turns down (overoptimization). On
the synthetic task every one of these curves can be drawn, because a gold labeler scores
any text. `analyze` fits and draws them from a PPO run's per-iteration metrics and its
end-of-run evaluation (`hh_jax.rl.ppo_eval` samples the rollouts and scores them, then
hands the numbers here): this module runs no model and calls back into no stage.

The PM-vs-√KL fit reads the PM score of the replies that stopped (`objective/pm_stopped`),
not the reward: the reward also holds the no-stop penalty, so its rise mixes the PM's
opinion with the stop rate.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hh_jax import files


def fit_line(x, y) -> dict:
  """Least-squares y = slope·x + intercept with its R² (NaN with fewer than 3 points)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 3 or np.ptp(x) == 0:
    return {"slope": math.nan, "intercept": math.nan, "r2": math.nan, "n": int(len(x))}
  slope, intercept = np.polyfit(x, y, 1)
  resid = y - (slope * x + intercept)
  ss_tot = float(np.sum(np.square(y - y.mean())))
  r2 = 1.0 - float(np.sum(np.square(resid))) / ss_tot if ss_tot > 0 else math.nan
  return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n": int(len(x))}


def _fit_two(features, r) -> dict:
  if len(r) < 3:  # two parameters: fewer than 3 points fit exactly and say nothing
    return {"alpha": math.nan, "beta": math.nan, "r2": math.nan, "n": int(len(r))}
  coef, *_ = np.linalg.lstsq(features, r, rcond=None)
  pred = features @ coef
  ss_tot = float(np.sum(np.square(r - r.mean())))
  r2 = 1.0 - float(np.sum(np.square(r - pred))) / ss_tot if ss_tot > 0 else math.nan
  return {"alpha": float(coef[0]), "beta": float(coef[1]), "r2": r2, "n": int(len(r))}


def fit_bon(d, r) -> dict:
  """Gao et al.'s best-of-n form R(d) = d(α - βd), least squares in (α, β)."""
  d, r = np.asarray(d, np.float64), np.asarray(r, np.float64)
  return _fit_two(np.stack([d, -d * d], 1), r)


def fit_rl(d, r) -> dict:
  """Gao et al.'s RL form R(d) = d(α - β log d) over d > 0, least squares in (α, β)."""
  d, r = np.asarray(d, np.float64), np.asarray(r, np.float64)
  keep = d > 0
  d, r = d[keep], r[keep]
  return _fit_two(np.stack([d, -d * np.log(d)], 1), r)


def bon_kl(n: int) -> float:
  """KL(best-of-n ‖ policy) in nats: log n - (n - 1)/n, exact when the n samples are
  distinct; where samples can repeat (short replies, a peaked policy) it is an upper bound
  (Beirami et al. 2024)."""
  return math.log(n) - (n - 1) / n


def parting_point(sqrt_kl, train, test, threshold: float, window: int = 5):
  """First √KL after which the train-PM's lead over the test-PM (rolling mean over `window`
  iterations), less its lead over the first `window` iterations, stays above `threshold` to
  the end; None if they never part. The start's lead is subtracted because two PMs, each
  normalised on its own reference scores, need not agree on the initial policy's level:
  parting is the lead that optimisation adds."""
  gap = np.asarray(train, np.float64) - np.asarray(test, np.float64)
  if len(gap) < window:
    return None
  gap = gap - gap[:window].mean()
  smooth = np.convolve(gap, np.ones(window) / window, mode="valid")
  above = smooth > threshold
  for i in range(len(above)):
    if above[i:].all():
      return float(np.asarray(sqrt_kl)[i + window - 1])
  return None


# ---------------------------------------------------------------------------------------
# Plots.


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _finish(plt, fig, ax, path: str, xlabel: str, ylabel: str, title: str) -> None:
  """Labels, legend, and the PNG written through the files layer (gs:// too)."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=120)
  plt.close(fig)


def plot_pm_vs_sqrt_kl(path: str, sqrt_kl, scores, fit: dict) -> None:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  ax.scatter(sqrt_kl, scores, s=10, alpha=0.6, label="PPO iterations")
  if not math.isnan(fit["slope"]):
    xs = np.linspace(0, max(sqrt_kl), 50)
    ax.plot(xs, fit["slope"] * xs + fit["intercept"], "k--",
            label=f"fit: {fit['slope']:.2f}·√KL + {fit['intercept']:.2f}, R²={fit['r2']:.2f}")
  _finish(plt, fig, ax, path, "√KL(π ‖ π₀)  [√nats]", "PM score (normalized)", "PM reward vs √KL during PPO")


def plot_gold_vs_sqrt_kl(path: str, ppo_d, ppo_r, bon_d, bon_r, fits: dict) -> None:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.4, 3.8))
  ax.scatter(ppo_d, ppo_r, s=10, alpha=0.5, label="PPO (per iteration)")
  ax.plot(bon_d, bon_r, "o-", color="C1", label="best-of-n (PM picks)")
  top = max([*ppo_d, *bon_d, 1e-3])
  xs = np.linspace(1e-3, top, 80)
  if "rl" in fits and not math.isnan(fits["rl"]["r2"]):
    a, b = fits["rl"]["alpha"], fits["rl"]["beta"]
    ax.plot(xs, xs * (a - b * np.log(xs)), "--", color="C0", label="R_RL = d(α − β log d)")
  if "bon" in fits and not math.isnan(fits["bon"]["r2"]):
    a, b = fits["bon"]["alpha"], fits["bon"]["beta"]
    ax.plot(xs, xs * (a - b * xs), "--", color="C1", label="R_bon = d(α − βd)")
  ax.axhline(0, color="grey", lw=0.5)
  _finish(plt, fig, ax, path, "d = √KL(π ‖ π₀)  [√nats]", "gold score − initial policy's", "Gold reward vs √KL: PPO and best-of-n")


def plot_robustness(path: str, sqrt_kl, train, test, parted) -> None:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  # Points per iteration, and each PM's 5-iteration rolling mean (in iteration order).
  smooth = lambda v: np.convolve(v, np.ones(5) / 5, mode="valid")  # noqa: E731
  for values, color, label in ((train, "C0", "train PM (optimized)"),
                               (test, "C1", "test PM (other half)")):
    ax.scatter(sqrt_kl, values, s=6, alpha=0.35, color=color)
    if len(values) >= 5:
      ax.plot(smooth(np.asarray(sqrt_kl, float)), smooth(np.asarray(values, float)), color=color,
              label=label + ", rolling mean")
  if parted is not None:
    ax.axvline(parted, color="k", ls=":", label=f"part at √KL ≈ {parted:.2f}")
  _finish(plt, fig, ax, path, "√KL(π ‖ π₀)  [√nats]", "PM score (normalized)", "Train-PM vs test-PM during PPO")


# ---------------------------------------------------------------------------------------
# The analysis of one PPO run.

PM_KEY = "objective/pm_stopped"  # the PM score of the replies that stopped, per iteration
TEST_PM_KEY = "objective/test_pm_stopped"


def _series(history: Sequence[dict], key: str) -> np.ndarray:
  """One metric per row as floats; metrics.jsonl stores a non-finite value as a string."""
  return np.asarray([float(r.get(key, math.nan)) for r in history], np.float64)


def sqrt_kl(history: Sequence[dict]) -> np.ndarray:
  """√KL(π ‖ π₀) per iteration from `objective/kl` (a negative k1 estimate counts as 0)."""
  return np.sqrt(np.maximum(_series(history, "objective/kl"), 0.0))


def pm_fit(history: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, dict]:
  """(√KL, PM score on stopped replies, their line fit) over the iterations that have both."""
  d, pm = sqrt_kl(history), _series(history, PM_KEY)
  keep = ~np.isnan(pm)
  return d[keep], pm[keep], fit_line(d[keep], pm[keep])


def gold_curves(history: Sequence[dict], gold_initial: float, gold_gain: float,
                final_kl: float, bon_table: Sequence[dict]) -> dict:
  """PPO's and best-of-n's gold gain against d = √KL, and Gao et al.'s fits.

  PPO: each iteration's `objective/gold` less the initial policy's eval gold, then the final
  eval's gain at the final KL. Best-of-n: `gold_table` rows, at d = √(log n - (n-1)/n) (an
  upper bound on best-of-n's KL where samples repeat, so its points may sit right of the truth).
  """
  bon_d = [math.sqrt(row["analytic_kl"]) for row in bon_table]
  bon_r = [row["gold"] - bon_table[0]["gold"] for row in bon_table]
  ppo_d = list(sqrt_kl(history)) + [math.sqrt(max(final_kl, 0.0))]
  ppo_r = [g - gold_initial for g in _series(history, "objective/gold")] + [gold_gain]
  keep = [i for i, r in enumerate(ppo_r) if not math.isnan(r)]
  ppo_d, ppo_r = [ppo_d[i] for i in keep], [ppo_r[i] for i in keep]
  return {"ppo_d": ppo_d, "ppo_r": ppo_r, "bon_d": bon_d, "bon_r": bon_r,
          "fits": {"bon": fit_bon(bon_d, bon_r), "rl": fit_rl(ppo_d, ppo_r)}}


def robustness(history: Sequence[dict], threshold: float) -> dict | None:
  """Train-PM vs test-PM (each on the replies that stopped) against √KL; None without a
  test PM."""
  if not history or TEST_PM_KEY not in history[-1]:
    return None
  d, train, test = sqrt_kl(history), _series(history, PM_KEY), _series(history, TEST_PM_KEY)
  keep = ~(np.isnan(train) | np.isnan(test))
  d, train, test = d[keep], train[keep], test[keep]
  return {"sqrt_kl": d, "train": train, "test": test,
          "parted_at_sqrt_kl": parting_point(d, train, test, threshold)}


def analyze(history: Sequence[dict], evaluation: dict, bon_table: Sequence[dict] | None,
            part_threshold: float, plot_dir: str | None = None) -> dict:
  """The √KL analyses of a PPO run, from numbers only; plots into `plot_dir` if given.

  history: per-iteration metrics rows (one per step, in order). evaluation: the end-of-run
  numbers (`kl`; `gold_initial` and `gold_gain` on the synthetic task). bon_table:
  `rejection_sampling.gold_table` rows of best-of-n from the initial policy, or None.
  Returns the keys `ppo_eval.json` gains: sqrt_kl_fit, sqrt_kl_r2, gold_fits, robustness.
  """
  out = {}
  d, pm, fit = pm_fit(history)
  out["sqrt_kl_fit"] = fit
  out["sqrt_kl_r2"] = fit["r2"]
  if plot_dir is not None and len(d) >= 2:
    plot_pm_vs_sqrt_kl(files.join(plot_dir, "pm_vs_sqrt_kl.png"), d, pm, fit)
  if bon_table and "gold_gain" in evaluation:
    g = gold_curves(history, evaluation["gold_initial"], evaluation["gold_gain"],
                    evaluation["kl"], bon_table)
    out["gold_fits"] = g["fits"]
    if plot_dir is not None:
      plot_gold_vs_sqrt_kl(files.join(plot_dir, "gold_vs_sqrt_kl.png"), g["ppo_d"], g["ppo_r"],
                           g["bon_d"], g["bon_r"], g["fits"])
  rob = robustness(history, part_threshold)
  if rob is not None:
    out["robustness"] = {"parted_at_sqrt_kl": rob["parted_at_sqrt_kl"],
                         "train_pm_final": float(rob["train"][-1]) if len(rob["train"]) else None,
                         "test_pm_final": float(rob["test"][-1]) if len(rob["test"]) else None}
    if plot_dir is not None:
      plot_robustness(files.join(plot_dir, "train_vs_test_pm.png"), rob["sqrt_kl"],
                      rob["train"], rob["test"], rob["parted_at_sqrt_kl"])
  return out


__all__ = ["fit_line", "fit_bon", "fit_rl", "bon_kl", "parting_point", "sqrt_kl", "pm_fit",
           "gold_curves", "robustness", "analyze"]
