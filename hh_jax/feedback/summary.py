"""What a collection round gathered: counts, and each model pair's win rates with intervals.

Each judgment is a game between its two models that the chosen model won (helpful: the
reply picked; red_team: the one *not* picked, i.e. the less harmful), so win rates and Elo
(`eval/elo.py`'s `fit`) read "better" in both tasks; they are kept per task, as the paper
kept helpfulness and harmlessness apart. A pair of the same model (two samples of one model)
counts but wins nothing.

The intervals are percentile bootstraps over conversations (or, with unit="annotator", over
annotators): the turns of one conversation share its annotator and its history, so they are
not independent draws, and resampling single judgments would make the interval too narrow.
A resample holds whole conversations; the win rate and the Elo fit are recomputed on it.
"""
from __future__ import annotations

import collections
import math
from typing import Sequence

import numpy as np

from hh_jax.errors import UserError
from hh_jax.eval import elo as elo_lib
from hh_jax.feedback import store

UNITS = ("conversation", "annotator")


def games_of(lines: Sequence[dict]) -> list[elo_lib.Game]:
  """One game per judgment between two different models, won by the chosen one."""
  return [elo_lib.Game(line["chosen_model"], line["rejected_model"], 1.0)
          for line in lines if line["chosen_model"] != line["rejected_model"]]


def _clusters(lines: Sequence[dict], unit: str) -> list[list[dict]]:
  groups: dict[str, list[dict]] = collections.defaultdict(list)
  for line in lines:
    groups[str(line.get(unit))].append(line)
  return [groups[k] for k in sorted(groups)]


def _win_rate(lines: Sequence[dict], first: str, second: str) -> float | None:
  """Share of first-vs-second judgments the first model won; None with none."""
  n = wins = 0
  for line in lines:
    if {line["chosen_model"], line["rejected_model"]} == {first, second}:
      n += 1
      wins += line["chosen_model"] == first
  return wins / n if n else None


def _elo(lines: Sequence[dict], models: Sequence[str]) -> dict[str, float] | None:
  """Elo of `models` (the first at 0) from `lines`, or None when a model played no game."""
  games = games_of(lines)
  played = {m for g in games for m in (g.model_a, g.model_b)}
  if len(models) < 2 or not set(models) <= played:
    return None
  return elo_lib.fit(games, reference=models[0], models=list(models))


def task_summary(lines: Sequence[dict], unit: str = "conversation", samples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> dict:
  """Win rates per model pair and Elo per model for one task's judgments."""
  if unit not in UNITS:
    raise UserError(f"--unit={unit}; use one of {', '.join(UNITS)}")
  pairs = sorted({tuple(sorted((l["chosen_model"], l["rejected_model"]))) for l in lines
                  if l["chosen_model"] != l["rejected_model"]})
  models = sorted({m for p in pairs for m in p})
  clusters = _clusters(lines, unit)
  rng = np.random.default_rng(seed)
  boot_rates = {p: [] for p in pairs}
  boot_elo = {m: [] for m in models}
  skipped = 0
  for _ in range(samples):
    pick = rng.integers(0, len(clusters), len(clusters))
    sample = [l for i in pick for l in clusters[i]]
    for p in pairs:
      r = _win_rate(sample, *p)
      if r is not None:
        boot_rates[p].append(r)
    e = _elo(sample, models)
    if e is None:
      skipped += 1
    else:
      for m in models:
        boot_elo[m].append(e[m])
  tail = 100 * (1 - confidence) / 2

  def interval(values):
    if len(values) < 2:
      return None, None
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)

  rows = []
  for p in pairs:
    n = sum({l["chosen_model"], l["rejected_model"]} == set(p) for l in lines)
    lo, hi = interval(boot_rates[p])
    rows.append({"model": p[0], "versus": p[1], "judgments": n,
                 "win_rate": _win_rate(lines, *p), "lo": lo, "hi": hi})
  elo = _elo(lines, models)
  elo_rows = []
  if elo is not None:
    for m in models:
      lo, hi = interval(boot_elo[m])
      elo_rows.append({"model": m, "elo": elo[m], "lo": lo, "hi": hi})
  return {"pairs": rows, "elo": elo_rows, "elo_reference": models[0] if models else None,
          "elo_resamples_without_every_model": skipped}


def summarize(path: str, unit: str = "conversation", samples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> dict:
  """The summary object of a comparisons file (see the module docstring)."""
  lines = [l for l in store.read_lines(path)
           if all(isinstance(l.get(k), str) for k in ("task", "chosen_model", "rejected_model"))]
  if not lines:
    raise UserError(f"{path}: no judgments yet; collect some with `python -m hh_jax.feedback`")
  count = collections.Counter
  out = {"file": path, "judgments": len(lines), "unit": unit, "confidence": confidence,
         "bootstrap_samples": samples,
         "by_task": dict(count(l["task"] for l in lines)),
         "by_pair": {f"{a} vs {b}": n for (a, b), n in sorted(count(
             tuple(sorted((l["model_a"], l["model_b"]))) for l in lines).items())},
         "by_annotator": dict(sorted(count(str(l.get("annotator")) for l in lines).items())),
         "by_strength": dict(count(str(l.get("strength")) for l in lines)),
         "conversations": len({l.get("conversation") for l in lines}),
         "flagged": sum(bool(l.get("flagged")) for l in lines),
         "tasks": {}}
  for task in sorted(out["by_task"]):
    out["tasks"][task] = task_summary([l for l in lines if l["task"] == task], unit, samples,
                                      confidence, seed)
  return out


def _fmt(x, spec=".2f") -> str:
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(s: dict) -> str:
  """The summary as text, for the terminal."""
  pct = int(round(100 * s["confidence"]))
  out = [f"{s['judgments']} judgments in {s['conversations']} conversations "
         f"({s['flagged']} flagged) from {s['file']}",
         "per task: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_task"].items())),
         "per model pair: " + ", ".join(f"{k} {v}" for k, v in s["by_pair"].items()),
         "per annotator: " + ", ".join(f"{k} {v}" for k, v in s["by_annotator"].items())]
  for task, t in s["tasks"].items():
    out += ["", f"{task}: win rate of the first model (chosen = "
                f"{'picked' if task == 'helpful' else 'not picked, the less harmful'}); "
                f"{pct}% intervals over {s['unit']}s ({s['bootstrap_samples']} resamples)",
            "| model | versus | judgments | win rate | interval |", "| --- | --- | --- | --- | --- |"]
    for r in t["pairs"]:
      out.append(f"| {r['model']} | {r['versus']} | {r['judgments']} | {_fmt(r['win_rate'])} | "
                 f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}] |")
    if t["elo"]:
      out += ["", f"Elo ({t['elo_reference']} at 0; same {s['unit']} resamples)",
              "| model | Elo | interval |", "| --- | --- | --- |"]
      for r in t["elo"]:
        out.append(f"| {r['model']} | {_fmt(r['elo'], '.0f')} | "
                   f"[{_fmt(r['lo'], '.0f')}, {_fmt(r['hi'], '.0f')}] |")
  return "\n".join(out)
