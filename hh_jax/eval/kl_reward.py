"""Reward against √KL: the paper's PPO measurements and the end-of-run evaluation.

Bai et al. (2022) found the PM score of a PPO policy roughly linear in √KL(π ‖ π_0); Gao
et al. (2022) fit gold reward against d = √KL with R_bon(d) = d(α - βd) for best-of-n
(whose KL is known exactly, log n - (n-1)/n) and R_RL(d) = d(α - β log d) for RL, and
showed a PM's score keeps rising while the gold score turns down (overoptimization). On
the synthetic task every one of these curves can be drawn, because a gold labeler scores
any text. `final_eval` does that at the end of a PPO run: initial vs final policy on fresh
prompts, best-of-n from the initial policy, the fits, and the PNGs.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np

from hh_jax import files
from hh_jax.data import fresh
from hh_jax import metrics as metrics_lib


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
  """KL(best-of-n ‖ policy) in nats: log n - (n - 1)/n."""
  return math.log(n) - (n - 1) / n


def parting_point(sqrt_kl, train, test, threshold: float, window: int = 5):
  """First √KL after which the train-PM's lead over the test-PM (rolling mean) stays above
  `threshold`; None if they never part."""
  gap = np.asarray(train, np.float64) - np.asarray(test, np.float64)
  if len(gap) < window:
    return None
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
# The end-of-run evaluation.


def _rollouts(setup, params, value_params, ids: Sequence[Sequence[int]], key):
  """Rollouts of `params` on `ids` in rollout-sized batches: host dict of [n, ...] arrays."""
  bs = setup.config.ppo.batch_size
  keys = ("scores", "stopped", "logp", "ref_logp", "response_mask")
  parts, texts = {k: [] for k in keys}, []
  for b, lo in enumerate(range(0, len(ids), bs)):
    chunk = list(ids[lo:lo + bs])
    n = len(chunk)
    chunk += [chunk[-1]] * (bs - n)  # fixed shape: one compiled rollout
    out = setup.run_rollout(params, value_params, chunk, jax.random.fold_in(key, b))
    host = jax.device_get({k: out[k] for k in keys})
    for k in keys:
      parts[k].append(np.asarray(host[k])[:n])
    texts.extend(setup.texts(out)[:n])
  out = {k: np.concatenate(v) for k, v in parts.items()}
  m = out["response_mask"].astype(np.float64)
  out["kl"] = np.sum((out["logp"] - out["ref_logp"]) * m, -1)
  out["texts"] = texts
  return out


def _history(workdir: str):
  rows = [r for r in metrics_lib.read_metrics(workdir) if "objective/kl" in r]
  by_step = {r["step"]: r for r in rows}  # a resumed run may repeat a step: keep the last
  return [by_step[s] for s in sorted(by_step)]


def final_eval(setup, state, workdir: str, is_synthetic: bool) -> dict:
  """Initial vs final policy on fresh prompts, best-of-n, fits and plots → the eval dict."""
  from hh_jax.rl import ppo_stage, prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import rejection_sampling  # pylint: disable=g-import-not-at-top
  c = setup.config.eval
  # Fresh prompts: none in a training set of the run, each kept whole within the budget.
  contexts, ids, drawn = prompts_lib.draw_eval(setup.config.prompts, int(c.num_prompts),
                                               int(c.seed), setup.fit, workdir,
                                               fresh.upstream(setup.config), "ppo_eval")
  key = jax.random.PRNGKey(c.seed)
  init_value = setup.pm.params if setup.config.ppo.value == "pm" else state.value_params
  init_params = setup.ref_params
  if setup.config.ppo.value == "shared":
    init_params = {**setup.ref_params, "scalar_head": state.params["scalar_head"]}
  first = _rollouts(setup, init_params, init_value, ids, jax.random.fold_in(key, 1))
  final = _rollouts(setup, state.params, state.value_params, ids, jax.random.fold_in(key, 2))
  n = len(ids)
  result = {"num_prompts": n, "eval_seed": int(c.seed),
            "pm_initial": float(first["scores"].mean()), "pm_final": float(final["scores"].mean()),
            "kl": float(final["kl"].mean()), "kl_initial": float(first["kl"].mean()),
            "stop_rate_initial": float(first["stopped"].mean()),
            "stop_rate_final": float(final["stopped"].mean()),
            "iterations": int(jax.device_get(state.step)),
            "prompts": {**getattr(setup, "prompt_counts", {}), "eval_excluded": drawn["excluded"],
                        "eval_shortened": drawn["shortened"]}}
  if is_synthetic:
    g0 = ppo_stage.gold_scores(contexts, first["texts"])
    g1 = ppo_stage.gold_scores(contexts, final["texts"])
    diff = g1 - g0
    result.update(gold_initial=float(g0.mean()), gold_final=float(g1.mean()),
                  gold_sem=float(diff.std(ddof=1) / math.sqrt(n)),
                  gold_gain=float(diff.mean()))
  hist = _history(workdir)
  d = np.sqrt(np.maximum([r["objective/kl"] for r in hist], 0.0))
  scores = np.asarray([r["objective/scores"] for r in hist])
  fit = fit_line(d, scores)
  result["sqrt_kl_fit"] = fit
  result["sqrt_kl_r2"] = fit["r2"]
  if jax.process_index() == 0 and len(hist) >= 2:
    plot_pm_vs_sqrt_kl(files.join(workdir, "pm_vs_sqrt_kl.png"), d, scores, fit)
  if is_synthetic and c.bon_n >= 2 and c.bon_prompts:
    m = min(int(c.bon_prompts), n)
    k = int(c.bon_n)
    rows = [i for i in range(m) for _ in range(k)]
    bon = _rollouts(setup, init_params, init_value, [ids[i] for i in rows],
                    jax.random.fold_in(key, 3))
    gold = ppo_stage.gold_scores([contexts[i] for i in rows], bon["texts"]).reshape(m, k)
    sel = bon["scores"].reshape(m, k)
    ks = [x for x in (1, 2, 4, 8, 16, 32, 64) if x <= k]
    table = rejection_sampling.gold_table(sel, gold, ks)
    base = table[0]["gold"]
    bon_d = [math.sqrt(row["analytic_kl"]) for row in table]
    bon_r = [row["gold"] - base for row in table]
    ppo_d = list(d) + [math.sqrt(max(result["kl"], 0.0))]
    g_hist = [r.get("objective/gold", math.nan) for r in hist]
    ppo_r = [g - result["gold_initial"] for g in g_hist] + [result["gold_gain"]]
    keep = [i for i, r in enumerate(ppo_r) if not math.isnan(r)]
    ppo_d, ppo_r = [ppo_d[i] for i in keep], [ppo_r[i] for i in keep]
    fits = {"bon": fit_bon(bon_d, bon_r), "rl": fit_rl(ppo_d, ppo_r)}
    result["best_of_n"] = table
    result["gold_fits"] = fits
    if jax.process_index() == 0:
      plot_gold_vs_sqrt_kl(files.join(workdir, "gold_vs_sqrt_kl.png"), ppo_d, ppo_r, bon_d,
                           bon_r, fits)
  if hist and "objective/test_pm_scores" in hist[-1]:
    test = np.asarray([r["objective/test_pm_scores"] for r in hist])
    parted = parting_point(d, scores, test, float(c.part_threshold))
    result["robustness"] = {"parted_at_sqrt_kl": parted,
                            "train_pm_final": float(scores[-1]), "test_pm_final": float(test[-1])}
    if jax.process_index() == 0:
      plot_robustness(files.join(workdir, "train_vs_test_pm.png"), d, scores, test, parted)
  return result


__all__ = ["fit_line", "fit_bon", "fit_rl", "bon_kl", "parting_point", "final_eval"]
