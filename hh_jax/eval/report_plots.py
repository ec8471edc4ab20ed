"""The paper's figures for `report.md`, from the files a pipeline's stages wrote.

Each figure is a PNG beside report.md, with labelled axes and its intervals drawn:

* `pm_learning_curve.png`: PM held-out accuracy against the comparisons seen (step × batch
  size) for the train PM and the test PM, each point with its Wilson 95% interval over the
  held-out pairs (Bai et al. Fig. 7's learning curve, from the run's own periodic evals);
* `sqrt_kl_bon_ppo.png`: gold and PM score against √KL for best-of-n (the RS stage's
  gold-vs-k table, KL analytic) and PPO (its per-iteration metrics), on one axis each (Fig. 4
  and Gao et al.);
* `train_vs_test_pm.png`: gold, train-PM and test-PM scores through PPO against √KL, and where
  the test PM parts from the train PM (Fig. 15, `parting`);
* `elo_by_iteration.png`: gold-judged Elo of the initial, PPO and online policies against the
  online iteration, with prompt-bootstrap intervals (Fig. 1's online curve).

PPO's per-iteration means are drawn with a band: the 95% normal interval of the rolling mean
over `WINDOW` iterations, from the spread of those iterations' means (each iteration scores a
fresh batch of prompts, so the iteration is the sampled unit). The functions that turn files
into points are pure and tested on hand-made numbers; `write_all` draws what the run has.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from hh_jax import files
from hh_jax import metrics as metrics_lib
from hh_jax.eval import intervals

WINDOW = 5  # PPO iterations per rolling mean (kl_reward's parting point uses the same)
Z95 = 1.959963984540054
PART_THRESHOLD = 0.25  # train-PM lead (in reward stds) that counts as parted, beyond the start's


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _float(x) -> float:
  """A metric value as a float (metrics.jsonl stores a non-finite one as a string)."""
  return float(x) if x is not None else math.nan


# ---------------------------------------------------------------------------------------
# PM accuracy against comparisons.


def learning_curve(rows: Sequence[Mapping], batch_size: int, num_pairs: int | None = None
                   ) -> list[dict]:
  """[{comparisons, accuracy, lo, hi, n}] from a PM stage's metrics rows that hold
  `eval_accuracy`: comparisons = step × batch size; n the held-out pairs the eval scored
  (`eval_pairs` of the row, else `num_pairs`); lo/hi the Wilson 95% interval of
  accuracy × n successes (a tie counts half, as the accuracy does). A step logged twice (a
  resumed run) keeps its last row."""
  by_step = {int(r["step"]): r for r in rows if "eval_accuracy" in r}
  out = []
  for step in sorted(by_step):
    r = by_step[step]
    n = int(r.get("eval_pairs") or num_pairs or 0)
    acc = _float(r["eval_accuracy"])
    lo, hi = intervals.wilson(acc * n, n) if n else (math.nan, math.nan)
    out.append({"comparisons": step * int(batch_size), "accuracy": acc, "lo": lo, "hi": hi,
                "n": n})
  return out


def pm_curve(pm_workdir: str) -> list[dict]:
  """The learning curve of one PM stage's workdir (its config.json gives the batch size)."""
  cfg = files.read_json(files.join(pm_workdir, "config.json"))
  return learning_curve(metrics_lib.read_metrics(pm_workdir), int(cfg["data"]["batch_size"]),
                        int(cfg["data"].get("num_eval") or 0) or None)


def plot_learning_curves(path: str, curves: Mapping[str, Sequence[Mapping]]) -> None:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.2, 3.6))
  for i, (name, pts) in enumerate(curves.items()):
    x = np.asarray([p["comparisons"] for p in pts], float)
    y = np.asarray([p["accuracy"] for p in pts], float)
    err = np.asarray([[p["accuracy"] - p["lo"] for p in pts], [p["hi"] - p["accuracy"] for p in pts]])
    ax.errorbar(x + 0.01 * i * max(x.max(initial=1.0), 1.0), y, yerr=np.maximum(err, 0),
                fmt="o-", capsize=3, ms=4, label=name)
  ax.axhline(0.5, color="grey", lw=0.6, ls=":")
  ax.set_xlabel("comparisons trained on (step × batch size)")
  ax.set_ylabel("held-out accuracy (Wilson 95%)")
  ax.set_title("PM accuracy vs comparisons")
  ax.legend(fontsize=7)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------------------
# PPO's history.


def ppo_history(ppo_workdir: str) -> list[dict]:
  """One metrics row per PPO iteration (a resumed run's repeat: the last), in step order."""
  rows = [r for r in metrics_lib.read_metrics(ppo_workdir) if "objective/kl" in r]
  by_step = {r["step"]: r for r in rows}
  return [by_step[s] for s in sorted(by_step)]


def series(history: Sequence[Mapping], key: str) -> np.ndarray:
  return np.asarray([_float(r.get(key)) for r in history], np.float64)


def sqrt_kl(history: Sequence[Mapping]) -> np.ndarray:
  """√KL(π ‖ π₀) per iteration (a negative k1 estimate counts as 0)."""
  return np.sqrt(np.maximum(series(history, "objective/kl"), 0.0))


def rolling(values, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
  """(rolling means [n − window + 1], their 95% half-widths Z·sd/√window), the sd over the
  window's values (ddof 1); empty when fewer than `window` values."""
  v = np.asarray(values, np.float64)
  if len(v) < window:
    return np.zeros(0), np.zeros(0)
  w = np.lib.stride_tricks.sliding_window_view(v, window)  # [n − window + 1, window]
  return w.mean(-1), Z95 * w.std(-1, ddof=1) / math.sqrt(window)


def parting(sqrt_kls, train, test, threshold: float = PART_THRESHOLD,
            window: int = WINDOW) -> dict:
  """Where the test PM parts from the train PM (`kl_reward.parting_point`: the first √KL
  after which the train PM's lead over the test PM, as a rolling mean over `window`
  iterations and less its mean over the first `window` iterations, stays above `threshold`
  reward stds to the end). {"sqrt_kl", "kl" (None if they never part), "lead_start" (the
  first window's lead), "lead_end" (the last window's, less the start's)}."""
  from hh_jax.eval import kl_reward  # pylint: disable=g-import-not-at-top
  train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
  if len(train) < window:
    return {"sqrt_kl": None, "kl": None, "lead_start": math.nan, "lead_end": math.nan}
  start = float((train - test)[:window].mean())
  at = kl_reward.parting_point(sqrt_kls, train, test, threshold, window)
  end = float((train - test)[-window:].mean()) - start
  return {"sqrt_kl": at, "kl": None if at is None else at * at, "lead_start": start,
          "lead_end": end}


def _band(ax, x, y, color, label, window=WINDOW):
  """Points per iteration, the rolling mean as a line and its 95% band."""
  ok = ~(np.isnan(x) | np.isnan(y))
  x, y = x[ok], y[ok]
  ax.scatter(x, y, s=6, alpha=0.3, color=color)
  mean, half = rolling(y, window)
  if len(mean):
    xm = rolling(x, window)[0]
    ax.plot(xm, mean, color=color, label=f"{label} ({window}-iteration mean, 95% band)")
    ax.fill_between(xm, mean - half, mean + half, color=color, alpha=0.2, lw=0)
  elif len(y):
    ax.plot(x, y, color=color, label=label)


def plot_train_vs_test(path: str, history: Sequence[Mapping], part: dict,
                       train_key: str, test_key: str) -> None:
  """Gold, the train PM's and the test PM's scores through PPO against √KL."""
  plt = _plt()
  d = sqrt_kl(history)
  fig, (ax, gx) = plt.subplots(1, 2, figsize=(9.5, 3.7))
  _band(ax, d, series(history, train_key), "C0", "train PM (optimised)")
  _band(ax, d, series(history, test_key), "C1", "test PM (other half)")
  if part["sqrt_kl"] is not None:
    ax.axvline(part["sqrt_kl"], color="k", ls=":", label=f"parts at √KL {part['sqrt_kl']:.2f}")
  ax.set_xlabel("√KL(π ‖ π₀)  [√nats]")
  ax.set_ylabel("PM score (normalised, replies that stopped)")
  ax.set_title("Train PM vs test PM through PPO")
  ax.legend(fontsize=6)
  _band(gx, d, series(history, "objective/gold"), "C2", "gold")
  gx.set_xlabel("√KL(π ‖ π₀)  [√nats]")
  gx.set_ylabel("gold score")
  gx.set_title("Gold through PPO")
  gx.legend(fontsize=6)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)
  plt.close(fig)


def bon_points(rows: Sequence[Mapping]) -> dict[str, np.ndarray]:
  """Best-of-n rows (`rejection_sampling.gold_table`): √(analytic KL), gold and the PM's
  (selector's) score of the pick, with their standard errors over prompts where the rows
  carry them (`gold_se`, `selector_se`), else NaN."""
  get = lambda k: np.asarray([_float(r.get(k)) for r in rows], np.float64)  # noqa: E731
  return {"d": np.sqrt(np.maximum(get("analytic_kl"), 0.0)), "gold": get("gold"),
          "gold_se": get("gold_se"), "pm": get("selector_score"), "pm_se": get("selector_se")}


def plot_bon_ppo(path: str, bon_rows: Sequence[Mapping], history: Sequence[Mapping],
                 pm_key: str) -> None:
  """Gold (left) and PM score (right) against √KL: best-of-n and PPO on one axis each."""
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.7))
  b = bon_points(bon_rows)
  d = sqrt_kl(history)
  for ax, key, bon_key, label in ((axes[0], "objective/gold", "gold", "gold score"),
                                  (axes[1], pm_key, "pm", "PM score (normalised)")):
    if len(b["d"]):
      se = b[f"{bon_key}_se"]
      ax.errorbar(b["d"], b[bon_key], yerr=None if np.isnan(se).all() else Z95 * se,
                  fmt="s-", color="C1", capsize=3, ms=4,
                  label="best-of-n (RS stage; KL analytic, an upper bound)")
    _band(ax, d, series(history, key), "C0", "PPO")
    ax.set_xlabel("√KL(π ‖ π₀)  [√nats]")
    ax.set_ylabel(label)
    ax.legend(fontsize=6)
  axes[0].set_title("Gold vs √KL: best-of-n and PPO")
  axes[1].set_title("PM score vs √KL: best-of-n and PPO")
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------------------
# Elo against online iteration.


def elo_points(rep: Mapping, policy_iteration: Mapping[str, float]) -> list[dict]:
  """[{name, iteration, elo, lo, hi}] for each model of an Elo report (`elo.report`) that
  `policy_iteration` places (initial and ppo at 0, online_i at i), in iteration order."""
  out = [{"name": m["name"], "iteration": float(policy_iteration[m["name"]]), "elo": m["elo"],
          "lo": m["lo"], "hi": m["hi"]} for m in rep["models"] if m["name"] in policy_iteration]
  return sorted(out, key=lambda p: p["iteration"])


def plot_elo_by_iteration(path: str, series_: Mapping[str, Sequence[Mapping]]) -> None:
  """Each series' Elo points against online iteration, with their intervals."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.2, 3.6))
  for i, (label, pts) in enumerate(series_.items()):
    if not pts:
      continue
    x = np.asarray([p["iteration"] for p in pts], float) + 0.06 * i
    y = np.asarray([p["elo"] for p in pts], float)
    err = np.asarray([[p["elo"] - p["lo"] for p in pts], [p["hi"] - p["elo"] for p in pts]])
    ax.errorbar(x, y, yerr=np.maximum(err, 0), fmt="o-" if i == 0 else "s--", capsize=3,
                ms=4, label=label)
    if i == 0:
      for p, xi, yi in zip(pts, x, y):
        ax.annotate(p["name"], (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
  ticks = sorted({p["iteration"] for pts in series_.values() for p in pts})
  ax.set_xticks(ticks)
  ax.set_xticklabels(["ppo" if t == 0.5 else "initial" if t == 0 else f"{t:g}" for t in ticks])
  ax.set_xlabel("online iteration (initial: before RLHF; ppo: the offline PPO policy)")
  ax.set_ylabel("Elo (initial policy = 0), 95% interval")
  ax.set_title("Elo vs online iteration")
  ax.legend(fontsize=6)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)
  plt.close(fig)


__all__ = ["learning_curve", "pm_curve", "plot_learning_curves", "ppo_history", "series",
           "sqrt_kl", "rolling", "parting", "plot_train_vs_test", "bon_points", "plot_bon_ppo",
           "elo_points", "plot_elo_by_iteration", "WINDOW", "PART_THRESHOLD"]


# ---------------------------------------------------------------------------------------
# All of them, from a pipeline's workdir.

# Where each policy sits on the online axis: the initial policy before the loop, the offline
# PPO policy (the first one deployed) between it and iteration 1.
def policy_iterations(names: Sequence[str]) -> dict[str, float]:
  out = {}
  for name in names:
    if name == "initial":
      out[name] = 0.0
    elif name == "ppo":
      out[name] = 0.5
    elif name.startswith("online_") and name.rsplit("_", 1)[1].isdigit():
      out[name] = float(name.rsplit("_", 1)[1])
  return out


PM_STAGES = (("pm", "train PM (first half)"), ("pm_test", "test PM (second half)"))
FIGURES = {"learning_curve": "pm_learning_curve.png", "bon_ppo": "sqrt_kl_bon_ppo.png",
           "train_vs_test": "train_vs_test_pm.png", "elo": "elo_by_iteration.png"}


def write_all(workdir: str, elo_report: Mapping, record: Mapping, part_threshold: float
              ) -> dict:
  """Draws every figure the run has the files for beside report.md; returns {"figures":
  {key: file name}, "learning_curves", "parting", "elo_points", "loop_elo_points"}."""
  from hh_jax.eval import kl_reward  # pylint: disable=g-import-not-at-top
  out: dict = {"figures": {}}
  curves = {}
  for stage, label in PM_STAGES:
    wd = files.join(workdir, stage)
    if files.exists(files.join(wd, "config.json")):
      pts = pm_curve(wd)
      if pts:
        curves[label] = pts
  out["learning_curves"] = curves
  if curves:
    plot_learning_curves(files.join(workdir, FIGURES["learning_curve"]), curves)
    out["figures"]["learning_curve"] = FIGURES["learning_curve"]

  history = ppo_history(files.join(workdir, "ppo"))
  rs_path = files.join(workdir, "rs", "rs_results.json")
  bon = files.read_json(rs_path).get("gold_vs_k", []) if files.exists(rs_path) else []
  if history:
    plot_bon_ppo(files.join(workdir, FIGURES["bon_ppo"]), bon, history, kl_reward.PM_KEY)
    out["figures"]["bon_ppo"] = FIGURES["bon_ppo"]
  rob = kl_reward.robustness(history, part_threshold) if history else None
  if rob is not None:
    out["parting"] = {**parting(rob["sqrt_kl"], rob["train"], rob["test"], part_threshold),
                      "threshold": part_threshold, "window": WINDOW,
                      "iterations": int(len(rob["sqrt_kl"]))}
    plot_train_vs_test(files.join(workdir, FIGURES["train_vs_test"]), history, out["parting"],
                       kl_reward.PM_KEY, kl_reward.TEST_PM_KEY)
    out["figures"]["train_vs_test"] = FIGURES["train_vs_test"]

  names = [m["name"] for m in elo_report["models"]]
  out["elo_points"] = elo_points(elo_report, policy_iterations(names))
  loop = record.get("iterations", [])
  last = loop[-1].get("elo", []) if loop else []
  out["loop_elo_points"] = elo_points({"models": last},
                                      policy_iterations([m["name"] for m in last]))
  if out["elo_points"]:
    plot_elo_by_iteration(files.join(workdir, FIGURES["elo"]), {
        "report Elo (gold judge, report prompts)": out["elo_points"],
        "the loop's own Elo (its last iteration)": out["loop_elo_points"]})
    out["figures"]["elo"] = FIGURES["elo"]
  return out


__all__ += ["write_all", "policy_iterations", "FIGURES", "PM_STAGES"]


# ---------------------------------------------------------------------------------------
# Their paragraphs in report.md.


def _img(figs: Mapping, key: str, alt: str) -> list[str]:
  name = figs["figures"].get(key)
  return [f"![{alt}]({name})", ""] if name else []


def learning_curve_md(figs: Mapping) -> list[str]:
  curves = figs.get("learning_curves") or {}
  if not curves:
    return []
  last = "; ".join(f"{label}: {pts[-1]['accuracy']:.3f} [{pts[-1]['lo']:.3f}, "
                   f"{pts[-1]['hi']:.3f}] after {pts[-1]['comparisons']} comparisons "
                   f"({pts[-1]['n']} held-out pairs)" for label, pts in curves.items())
  return ["### PM accuracy against comparisons", "",
          "Held-out accuracy of each PM at its periodic evaluations against the comparisons "
          "it had trained on (step × batch size; past one epoch a comparison counts again), "
          "with Wilson 95% intervals over the held-out pairs (a tie counts half). Last "
          f"points: {last}.", ""] + _img(figs, "learning_curve", "PM learning curve")


def bon_ppo_md(figs: Mapping) -> list[str]:
  if "bon_ppo" not in figs["figures"]:
    return []
  return ["### Best-of-n and PPO against √KL", "",
          "Gold (left) and PM score (right) against √KL(π ‖ π₀): best-of-n from the "
          "rejection-sampling stage (the LM's samples, the PM picks; KL analytic, "
          "log n − (n−1)/n, an upper bound where samples repeat; bars: 95% over prompts) and "
          "PPO from the distilled policy (each iteration's batch; line and band: the "
          f"{WINDOW}-iteration rolling mean and its 95% interval from the spread of the "
          "iterations' means).", ""] + _img(figs, "bon_ppo", "gold and PM vs sqrt KL")


def train_vs_test_md(figs: Mapping, table_md: str) -> list[str]:
  part = figs.get("parting")
  if part is None:
    return []
  if part["sqrt_kl"] is None:
    when = (f"They do not part within the run's {part['iterations']} iterations: the train "
            f"PM's lead over its start ended at {part['lead_end']:+.3f} reward stds.")
  else:
    when = (f"The test PM parts from the train PM at √KL = {part['sqrt_kl']:.2f} "
            f"(KL = {part['kl']:.2f} nats); the lead over its start ended at "
            f"{part['lead_end']:+.3f} reward stds.")
  return ["## Train PM vs test PM (disjoint halves)", "",
          "The PM comparisons are split into two halves that share no context: the train PM "
          "(`pm`) learns the first, the test PM (`pm_test`) the second, with the same recipe "
          "otherwise. PPO optimises the train PM; the test PM only scores its rollouts. Both "
          "scores are each PM's normalised score of the replies that stopped. *Parting*: the "
          f"first √KL after which the train PM's lead over the test PM, as a {part['window']}-"
          "iteration rolling mean and less its mean over the first "
          f"{part['window']} iterations (the two PMs need not agree on the initial policy; "
          f"the start's lead was {part['lead_start']:+.3f}), stays above "
          f"{part['threshold']:g} reward stds to the end of training. {when}", ""] + _img(
              figs, "train_vs_test", "train vs test PM") + [
          "Each model's mean score under the two halves' PMs on the report's prompts, minus "
          "the initial policy's, in each PM's reward std (in bold the PM a policy was trained "
          "against):", "", table_md, ""]


def elo_by_iteration_md(figs: Mapping) -> list[str]:
  if "elo" not in figs["figures"]:
    return []
  return ["### Elo against online iteration", "",
          "The report's gold-judged Elo (above) of the initial policy, the offline PPO policy "
          "and each online policy against the online iteration, with its prompt-bootstrap 95% "
          "interval; beside it, the loop's own Elo from its last iteration (other prompts).",
          ""] + _img(figs, "elo", "Elo by online iteration")


__all__ += ["learning_curve_md", "bon_ppo_md", "train_vs_test_md", "elo_by_iteration_md"]
