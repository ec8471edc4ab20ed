"""Runs a sweep's points, locally one process at a time or as TPU pod jobs, then aggregates.

  python -m launch.sweep --sweep=configs/sweeps/pm_ladder.py:runlocal=True --workdir=/tmp/sweep
  python -m launch.sweep --sweep=configs/sweeps/pm_ladder.py:sizes=13m/42m/197m \\
      --workdir=gs://MY_BUCKET/sweeps/ladder --mode=pod --name=ladder \\
      --accelerator=v5litepod-16 --zone=us-west4-a --project=MY_PROJECT --spot --dry-run \\
      -- --config.mesh.data=1 --config.mesh.fsdp=16

A point is a chain of ordinary `hh_jax.main` runs (LM → PM → pm_eval, see
launch/sweeps/plan.py) in its own sub-workdir. A run whose last file exists is skipped,
so rerunning the same command resumes the sweep and does no finished work again; `--only`
(re)runs some points alone. Local mode runs each as a subprocess with its output in
`<run workdir>.log` and one progress line per run and per point; pod mode runs each point
on its own slice through launch/tpu_pod.py (create, ship, install, then run + logs per
stage, delete). Then launch/sweeps/report.py aggregates every eval.json (also for a
partial sweep: unfinished points are listed by name). `--sweep.KEY=VALUE` overrides the
sweep config's fields; arguments after `--` go to every LM and PM run.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _p in (REPO, HERE):
  if _p not in sys.path:
    sys.path.insert(0, _p)

import tpu_pod  # noqa: E402  pylint: disable=g-import-not-at-top

from hh_jax import files  # noqa: E402  pylint: disable=g-import-not-at-top
from hh_jax.errors import UserError  # noqa: E402  pylint: disable=g-import-not-at-top
from launch.sweeps import plan as sweep_plan, report as sweep_report  # noqa: E402  pylint: disable=g-import-not-at-top

POD_SETUP = ["create", "wait", "ship", "install"]
POD_RUN = ["run", "logs"]


def _show(cmd: list[str]) -> str:
  return " ".join(shlex.quote(c) for c in cmd)


def _tail(path: str, n: int = 5) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-n:]).rstrip()
  except OSError:
    return ""


def _accuracy(point) -> str:
  try:
    ev = files.read_json(os.path.join(point.eval_workdir, sweep_plan.EVAL_DONE))
    return f"held-out accuracy {ev['accuracy']:.4f}"
  except (OSError, ValueError, KeyError):
    return "no eval.json"


def run_local(points, dry_run: bool, env: dict) -> list[str]:
  """Runs every unfinished run of every point in order; returns the names of failed points."""
  failed, broken, printed = [], set(), set()  # broken: workdirs of runs that failed
  for i, p in enumerate(points, 1):
    tag = f"[{i}/{len(points)}] {p.name}"
    if p.runs[-1].done():
      print(f"{tag}: finished earlier, skipped ({_accuracy(p)})", flush=True)
      continue
    times = []
    for run in p.runs:
      if run.workdir in broken:
        print(f"{tag}: skipped, its {run.stage} run {run.workdir} failed above", flush=True)
        failed.append(p.name)
        break
      if run.done():
        continue
      cmd = [sys.executable, "-m", "hh_jax.main", *run.argv()]
      if dry_run:
        if run.workdir not in printed:
          print(f"{tag}: [{run.stage}] {_show(cmd)}", flush=True)
          printed.add(run.workdir)
        continue
      log = f"{run.workdir}.log"
      os.makedirs(os.path.dirname(log), exist_ok=True)
      t0 = time.monotonic()
      with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                            check=False).returncode
      dt = time.monotonic() - t0
      if rc or not run.done():
        broken.add(run.workdir)
        failed.append(p.name)
        why = f"exit {rc}" if rc else f"exit 0 but no {run.marker}"
        print(f"{tag}: {run.stage} FAILED ({why}) after {dt:.1f}s; log {log}:\n"
              f"{_tail(log)}", flush=True)
        break
      times.append(f"{run.stage} {dt:.1f}s")
      print(f"{tag}: {run.stage} done in {dt:.1f}s", flush=True)
    else:
      if not dry_run:
        print(f"{tag}: {_accuracy(p)} ({', '.join(times)})", flush=True)
  return failed


def slice_name(prefix: str, point: str) -> str:
  """A TPU VM name for the point's slice: lowercase letters, digits and '-', ≤ 50 chars."""
  name = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{point}".lower()).strip("-")
  name = name if name[:1].isalpha() else f"s-{name}"
  return name[:50].rstrip("-")


def pod_jobs(point, runs, a) -> list[tpu_pod.Job]:
  """tpu_pod jobs for `runs` of `point`, all on the point's slice; validated like tpu_pod's."""
  if not files.is_remote(point.lm_workdir):
    raise SystemExit(f"point {point.name}: its LM workdir {point.lm_workdir} must be gs:// "
                     "so the slice can read it; fix lm_workdirs or --workdir")
  name = slice_name(a.name, point.name)
  jobs = [tpu_pod.Job(name, a.accelerator, a.zone, a.project, r.config, r.workdir,
                      list(r.overrides), a.spot, a.runtime, a.repo_url, a.ref, a.reservation)
          for r in runs]
  for j in jobs:
    tpu_pod.validate(j)
  return jobs


def run_pod(points, a) -> list[str]:
  """One slice per point: set up once, then run + logs for each of its runs, then delete.

  The dry run prints every point's full sequence without checking what is finished (the
  gs:// workdirs may not be readable from here); a real run skips finished runs.
  """
  failed, planned, broken = [], set(), set()
  todo = []
  for p in points:
    runs = [r for r in p.runs if r.workdir not in planned and (a.dry_run or not r.done())]
    planned.update(r.workdir for r in runs)
    todo.append((p, runs, pod_jobs(p, runs, a) if runs else []))  # validates all up front
  for i, (p, runs, jobs) in enumerate(todo, 1):
    tag = f"[{i}/{len(points)}] {p.name}"
    if not runs:
      print(f"== {tag}: finished earlier, skipped", flush=True)
      continue
    if any(r.workdir in broken for r in p.runs):
      print(f"== {tag}: skipped, a run it needs failed above", flush=True)
      failed.append(p.name)
      continue
    print(f"== {tag}: {p.workdir} on slice {jobs[0].name} "
          f"({', '.join(r.stage for r in runs)})", flush=True)
    bad, run = None, runs[0]
    try:
      for k, (run, job) in enumerate(zip(runs, jobs)):
        steps = (POD_SETUP if k == 0 else []) + POD_RUN  # the slice is set up once
        if tpu_pod.execute(job, steps, a.dry_run, True, a.wait_timeout_s):
          bad = run
          break
    except (subprocess.CalledProcessError, SystemExit) as e:
      print(f"== {tag}: {run.stage} failed: {e}", flush=True)
      bad = run
    finally:
      tpu_pod.execute(jobs[0], ["delete"], a.dry_run, a.keep, a.wait_timeout_s)
    if bad is not None:
      broken.add(bad.workdir)
      failed.append(p.name)
  return failed


def parse(argv):
  p = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      usage="%(prog)s --sweep=FILE[:arg] --workdir=DIR [options] [--sweep.KEY=VALUE ...] "
            "[-- LM/PM overrides...]")
  p.add_argument("--sweep", required=True, help="e.g. configs/sweeps/pm_ladder.py:runlocal=True")
  p.add_argument("--workdir", required=True, help="local dir, or gs://BUCKET/PATH for --mode=pod")
  p.add_argument("--mode", choices=("local", "pod"), default="local")
  p.add_argument("--only", default="", help="comma-separated point names to run (all: empty)")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                 help="print every command, run none, write nothing")
  p.add_argument("--jax_cache", default=None,
                 help="local: persistent jax compilation cache shared by the runs (default "
                      "WORKDIR/jax_cache unless JAX_COMPILATION_CACHE_DIR is set; '' for none)")
  pod = p.add_argument_group("pod mode (see launch/tpu_pod.py)")
  pod.add_argument("--name", default="", help="slice name prefix (default: the sweep's name)")
  pod.add_argument("--accelerator", default="", help="e.g. v5litepod-16, v5p-128")
  pod.add_argument("--zone", default="")
  pod.add_argument("--project", default="")
  pod.add_argument("--spot", action="store_true")
  pod.add_argument("--reservation", default="")
  pod.add_argument("--runtime", default="")
  pod.add_argument("--repo_url", default="")
  pod.add_argument("--ref", default="main")
  pod.add_argument("--keep", action="store_true", help="keep each point's slice at the end")
  pod.add_argument("--wait_timeout_s", type=float, default=6 * 3600)
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = []
  if "--" in argv:
    i = argv.index("--")
    argv, extra = argv[:i], argv[i + 1:]
  a, rest = p.parse_known_args(argv)
  bad = [r for r in rest if not r.startswith("--sweep.")]
  if bad:
    p.error(f"unrecognized arguments: {' '.join(bad)} (LM/PM overrides go after `--`)")
  if a.mode == "pod":
    missing = [f"--{k}" for k in ("accelerator", "zone", "project") if not getattr(a, k)]
    if missing:
      p.error(f"--mode=pod needs {', '.join(missing)}")
  elif files.is_remote(a.workdir):
    p.error(f"--workdir={a.workdir}: local mode needs a local directory (gs:// is for "
            "--mode=pod)")
  return a, rest, extra


def main(argv=None) -> int:
  a, sweep_overrides, extra = parse(argv)
  try:
    sweep = sweep_plan.load_sweep(a.sweep, REPO)
    sweep_plan.apply_overrides(sweep, sweep_overrides)
    workdir = a.workdir if files.is_remote(a.workdir) else os.path.abspath(a.workdir)
    points = sweep_plan.plan(sweep, workdir, extra)
    only = [n for n in a.only.split(",") if n]
    unknown = sorted(set(only) - {p.name for p in points})
    if unknown:
      raise UserError(f"--only={a.only}: no point named {', '.join(unknown)}; points are "
                      f"{', '.join(p.name for p in points)}")
    chosen = [p for p in points if not only or p.name in only]
    print(f"sweep {sweep.name}: {len(chosen)} of {len(points)} points in {workdir} "
          f"({a.mode}{', dry run' if a.dry_run else ''})", flush=True)
    if not a.dry_run:
      sweep_plan.write_manifest(workdir, a.sweep, sweep, points)
    if a.mode == "pod":
      a.name = a.name or sweep.name
      failed = run_pod(chosen, a)
    else:
      env = dict(os.environ)
      cache = a.jax_cache if a.jax_cache is not None else (
          "" if env.get("JAX_COMPILATION_CACHE_DIR") else os.path.join(workdir, "jax_cache"))
      if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(cache)
      failed = run_local(chosen, a.dry_run, env)
    if a.dry_run:
      agg = [sys.executable, "-m", "launch.sweeps.report", f"--workdir={workdir}"]
      print(f"[aggregate] {_show(agg)}", flush=True)
    else:
      sweep_report.report(workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if failed:
    print(f"sweep {sweep.name}: failed points: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
