"""PNG figures for PM evaluation: reliability diagram, score histograms, the scaling plot.

matplotlib with the Agg backend, so plots render on a headless machine; figures are
written through hh_jax/files.py, so a path may be in a gs:// workdir.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402

from hh_jax import files  # noqa: E402


def reliability_diagram(bins: Sequence[dict], ece: float, path: str, title: str = "") -> None:
  """Observed frequency vs predicted P(A beats B) per bin, with the diagonal."""
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  full = [b for b in bins if b["n"]]
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
  ax.plot([b["predicted"] for b in full], [b["observed"] for b in full], "o-",
          label=f"PM (ECE {ece:.3f})")
  ax.set_xlabel("predicted P(A preferred) = σ(r_A − r_B)")
  ax.set_ylabel("observed frequency A preferred")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_title(title or "PM calibration")
  ax.legend(loc="upper left")
  fig.tight_layout()
  files.save_figure(fig, path, dpi=120)
  plt.close(fig)


def score_histogram(chosen: np.ndarray, rejected: np.ndarray, path: str, title: str = "") -> None:
  fig, ax = plt.subplots(figsize=(5, 3.5))
  both = np.concatenate([chosen, rejected])
  edges = np.linspace(both.min(), both.max() + 1e-6, 41)
  ax.hist(chosen, bins=edges, alpha=0.6, label="chosen")
  ax.hist(rejected, bins=edges, alpha=0.6, label="rejected")
  ax.set_xlabel("PM score")
  ax.set_ylabel("count")
  ax.set_title(title or "PM score distribution")
  ax.legend()
  fig.tight_layout()
  files.save_figure(fig, path, dpi=120)
  plt.close(fig)


def gold_scatter(pm: np.ndarray, gold: np.ndarray, rho: float, path: str) -> None:
  fig, ax = plt.subplots(figsize=(4.5, 4))
  ax.scatter(gold, pm, s=4, alpha=0.4)
  ax.set_xlabel("gold score")
  ax.set_ylabel("PM score")
  ax.set_title(f"PM vs gold (Spearman {rho:.3f})")
  fig.tight_layout()
  files.save_figure(fig, path, dpi=120)
  plt.close(fig)


def sweep_scaling(rows: Sequence[dict], fits: Sequence[dict], path_or_file) -> None:
  """PM accuracy vs parameters and vs train comparisons, each series with its log-linear fit.

  Left: a series per data size against non-embedding parameters; right: a series per rung
  against train comparisons. Each line is the least-squares fit acc = a + b·log10(x) of
  launch/sweeps/report.py's fit_series, its slope b (accuracy per decade) in the legend; a
  series with a single x has no fit and is drawn as points only.
  """
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  panels = (("params", "num_train", "non-embedding parameters", "{} pairs"),
            ("num_train", "size", "train comparisons", "{}"))
  order = {r["size"]: r["params"] for r in rows}
  for ax, (xkey, gkey, xlabel, fmt) in zip(axes, panels):
    groups = sorted({r[gkey] for r in rows}, key=lambda g: order.get(g, g))
    for i, g in enumerate(groups):
      rs = [r for r in rows if r[gkey] == g]
      x = np.array([r[xkey] for r in rs], np.float64)
      fit = next((f for f in fits if f["x"] == xkey and f["group"] == g), None)
      label = fmt.format(g)
      if fit is None:
        ax.plot(x, [r["accuracy"] for r in rs], "o", color=f"C{i}",
                label=f"{label} (one x: no fit)")
        continue
      ax.plot(x, [r["accuracy"] for r in rs], "o", color=f"C{i}")
      xs = np.geomspace(x.min(), x.max(), 50)
      ax.plot(xs, fit["intercept"] + fit["slope"] * np.log10(xs), "-", color=f"C{i}",
              label=f"{label}: {fit['slope']:+.3f} / decade")
    ticks = sorted({r[xkey] for r in rows})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks], rotation=30)
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out PM accuracy (pm_eval)")
    ax.legend(fontsize=8)
  axes[0].set_title("vs model size")
  axes[1].set_title("vs data")
  fig.suptitle("PM accuracy, log-linear fits (slope: accuracy per decade)")
  fig.tight_layout()
  fig.savefig(path_or_file, dpi=120, format="png")
  plt.close(fig)
