"""A sweep's points, from their eval.json files, in one table and one scaling plot.

  python -m launch.sweeps.report --workdir=DIR   # launch/sweep.py runs it after the points

The manifest the launcher wrote (plan.MANIFEST) names every point, so a point that
has not finished is reported by name instead of silently missing from the trend. Each
finished point contributes its pm_eval results and its non-embedding parameter count (from
the PM run's config.json, i.e. the model that actually ran). Writes into the workdir:
`sweep.json` (rows, missing points, fits), `sweep.csv`, `sweep.md` and `sweep.png`.

The trend is the paper's: accuracy linear in log(parameters) and in log(data). It is
fitted per series (per data size against parameters, per rung against data) by least
squares of accuracy on log10(x), so a slope is the accuracy gained per 10× more.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys

import ml_collections
import numpy as np

from hh_jax import files
from hh_jax.errors import UserError
from hh_jax.model import flops
from launch.sweeps import plan as plan_lib

COLUMNS = ("name", "size", "params", "num_train", "seed", "accuracy", "ece", "gold_agreement",
           "spearman_gold", "num_pairs")


def fit_log_linear(x, y) -> dict:
  """Least squares y = intercept + slope · log10(x)."""
  slope, intercept = np.polyfit(np.log10(np.asarray(x, np.float64)),
                                np.asarray(y, np.float64), 1)
  return {"slope": float(slope), "intercept": float(intercept), "points": len(x)}


def fit_series(rows: list[dict]) -> list[dict]:
  """A fit per data size against params and per rung against data, where x takes ≥ 2 values."""
  out = []
  for x, group in (("params", "num_train"), ("num_train", "size")):
    for g in sorted({r[group] for r in rows}, key=str):
      rs = [r for r in rows if r[group] == g]
      if len({r[x] for r in rs}) >= 2:
        out.append({"x": x, "group_by": group, "group": g,
                    **fit_log_linear([r[x] for r in rs], [r["accuracy"] for r in rs])})
  return out


def params_of(point: dict) -> int:
  """Non-embedding parameters of the model the point's PM ran (its config.json if written)."""
  path = os.path.join(point["pm_workdir"], "config.json")
  model = files.read_json(path)["model"] if files.exists(path) else point["model"]
  return flops.param_count_non_embedding(ml_collections.ConfigDict(model))


def collect(manifest: dict) -> tuple[list[dict], list[dict]]:
  """(rows of finished points, [{name, reason}] of the others), rows in (params, data, seed)."""
  rows, missing = [], []
  for p in manifest["points"]:
    path = os.path.join(p["eval_workdir"], plan_lib.EVAL_DONE)
    if not files.exists(path):
      missing.append({"name": p["name"], "reason": f"no {path}"})
      continue
    try:
      ev = files.read_json(path)
      row = {k: p[k] for k in ("name", "size", "num_train", "seed")}
      row.update(params=params_of(p), **{k: ev.get(k) for k in COLUMNS[5:]})
    except (ValueError, KeyError) as e:
      missing.append({"name": p["name"], "reason": f"unreadable {path}: {e}"})
      continue
    if row["accuracy"] is None:
      missing.append({"name": p["name"], "reason": f"{path} has no accuracy"})
      continue
    rows.append(row)
  rows.sort(key=lambda r: (r["params"], r["num_train"], r["seed"]))
  return rows, missing


def _cell(v) -> str:
  if isinstance(v, float):
    return f"{v:.4f}"
  return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(rows: list[dict], missing: list[dict], fits: list[dict]) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
  lines.append("")
  for f in fits:
    lines.append(f"fit accuracy ~ log10({f['x']}) at {f['group_by']}={f['group']}: slope "
                 f"{f['slope']:+.4f} per decade, intercept {f['intercept']:.4f} "
                 f"({f['points']} points)")
  if missing:
    lines.append("missing: " + ", ".join(m["name"] for m in missing))
  return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
  out = [",".join(COLUMNS)]
  out += [",".join("" if r[c] is None else str(r[c]) for c in COLUMNS) for r in rows]
  return "\n".join(out) + "\n"


def report(workdir: str, out=print) -> dict:
  """Aggregates the sweep in `workdir`; returns {rows, missing, fits, files}."""
  from hh_jax.eval import plots  # pylint: disable=g-import-not-at-top  (matplotlib)
  if not files.is_remote(workdir):
    workdir = os.path.abspath(workdir)
  manifest_path = os.path.join(workdir, plan_lib.MANIFEST)
  if not files.exists(manifest_path):
    raise UserError(f"no {plan_lib.MANIFEST} in {workdir}; pass the --workdir of a sweep "
                    "that launch/sweep.py ran")
  rows, missing = collect(files.read_json(manifest_path))
  fits = fit_series(rows)
  outputs = {k: os.path.join(workdir, f"sweep.{k}") for k in ("json", "csv", "md", "png")}
  table = markdown(rows, missing, fits)
  files.write_text(outputs["json"], json.dumps(
      {"rows": rows, "missing": missing, "fits": fits}, indent=2, sort_keys=True))
  files.write_text(outputs["csv"], csv_text(rows))
  files.write_text(outputs["md"], table)
  if rows:
    buf = io.BytesIO()
    plots.sweep_scaling(rows, fits, buf)
    files.write_bytes(outputs["png"], buf.getvalue())
  else:
    del outputs["png"]
  out(table.rstrip("\n"))
  for m in missing:
    out(f"sweep_report: point {m['name']} is not finished ({m['reason']})")
  out(f"sweep_report: {len(rows)} of {len(rows) + len(missing)} points; wrote "
      f"{', '.join(os.path.basename(p) for p in outputs.values())} in {workdir}")
  return {"rows": rows, "missing": missing, "fits": fits, "files": outputs}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="the sweep's workdir (launch/sweep.py's)")
  a = p.parse_args(argv)
  try:
    report(a.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
