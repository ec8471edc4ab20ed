"""One hh_jax job on a Cloud TPU VM slice: create, ship code, install, run, stream logs, delete.

  python launch/tpu_pod.py --name=pm52b --accelerator=v5p-128 --zone=us-east5-a \\
      --project=my-project --config=configs/pm.py:size=52b \\
      --workdir=gs://my-bucket/runs/pm52b --spot --dry-run \\
      -- --config.init.workdir=gs://my-bucket/runs/lm52b --config.mesh.fsdp=16

Arguments after `--` are passed to `hh_jax.main` unchanged. Every worker of the slice runs
the same command; on TPU VMs `jax.distributed.initialize()` finds the other workers by
itself (hh_jax/parallel/multihost.py), so no coordinator flags are needed. The slice is a
queued resource (so a spot/preemptible request waits for capacity instead of failing), and
it is deleted at the end whatever happened, unless --keep. `--dry-run` prints every command
and runs none. Steps can be run one at a time with --steps (e.g. --steps=logs to reattach).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TPU VM software versions per generation (cloud.google.com/tpu/docs/runtimes).
RUNTIMES = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite",
            "v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
            "v6e": "v2-alpha-tpuv6e"}
STEPS = ("create", "wait", "ship", "install", "run", "logs", "delete")
REMOTE_DIR = "hh_jax"  # in each worker's home
LOG = "~/hh_jax_run.log"
RC = "~/hh_jax_run.rc"
PID = "~/hh_jax_run.pid"


@dataclasses.dataclass
class Job:
  name: str
  accelerator: str  # gcloud accelerator type, e.g. v5p-128 (TensorCores) or v5litepod-16
  zone: str
  project: str
  config: str
  workdir: str
  overrides: list = dataclasses.field(default_factory=list)
  spot: bool = False
  runtime: str = ""
  repo_url: str = ""  # empty: copy this checkout; else git clone this URL on every worker
  ref: str = "main"
  reservation: str = ""

  @property
  def qr(self) -> str:
    return f"{self.name}-qr"

  @property
  def generation(self) -> str:
    return self.accelerator.split("-")[0]


def validate(job: Job) -> None:
  if not job.workdir.startswith("gs://"):
    raise SystemExit(f"--workdir={job.workdir!r}: a pod job needs a gs:// workdir that every "
                     "worker can reach, e.g. gs://BUCKET/runs/NAME")
  if job.generation not in RUNTIMES and not job.runtime:
    raise SystemExit(f"--accelerator={job.accelerator!r}: unknown TPU generation; use one of "
                     f"{', '.join(sorted(RUNTIMES))} (e.g. v5p-128) or pass --runtime")
  if not job.config.startswith("configs/"):
    raise SystemExit(f"--config={job.config!r}: pass a path inside the repo, e.g. "
                     "configs/pm.py:size=52b")


def _where(job: Job) -> list[str]:
  return [f"--project={job.project}", f"--zone={job.zone}"]


def _ssh(job: Job, command: str, worker: str = "all") -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", job.name, f"--worker={worker}",
          *_where(job), f"--command={command}"]


def main_command(job: Job) -> str:
  """What each worker runs: the one hh_jax entry point, config and gs:// workdir."""
  args = ["python", "-m", "hh_jax.main", f"--config={job.config}", f"--workdir={job.workdir}",
          *job.overrides]
  return " ".join(shlex.quote(a) for a in args)


def commands(job: Job) -> dict[str, list[list[str]]]:
  """Every command per step, in order; the dry run prints exactly these."""
  runtime = job.runtime or RUNTIMES[job.generation]
  create = ["gcloud", "compute", "tpus", "queued-resources", "create", job.qr,
            f"--node-id={job.name}", f"--accelerator-type={job.accelerator}",
            f"--runtime-version={runtime}", *_where(job)]
  if job.spot:
    create.append("--spot")
  if job.reservation:
    create.append(f"--reservation={job.reservation}")
  wait = ["gcloud", "compute", "tpus", "queued-resources", "describe", job.qr, *_where(job),
          "--format=value(state.state)"]
  if job.repo_url:
    ship = [_ssh(job, f"rm -rf {REMOTE_DIR} && git clone --depth=1 --branch={shlex.quote(job.ref)} "
                      f"{shlex.quote(job.repo_url)} {REMOTE_DIR}")]
  else:
    tarball = f"/tmp/{job.name}-hh_jax.tgz"
    ship = [["tar", "czf", tarball, "-C", REPO, "--exclude=.venv", "--exclude=.git",
             "--exclude=__pycache__", "--exclude=workdir", "--exclude=workdirs", "."],
            ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, f"{job.name}:~/",
             "--worker=all", *_where(job)],
            _ssh(job, f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && "
                      f"tar xzf ~/{os.path.basename(tarball)} -C {REMOTE_DIR}")]
  install = [_ssh(job, f"cd {REMOTE_DIR} && python3 -m venv .venv && "
                       ".venv/bin/pip install -q -U pip && "
                       ".venv/bin/pip install -q -r requirements.txt -r requirements-tpu.txt")]
  # Detached, so a dropped ssh connection does not kill the job; logs and exit code go to files.
  run_cmd = (f"cd {REMOTE_DIR} && rm -f {RC} && (nohup sh -c "
             f"{shlex.quote('.venv/bin/' + main_command(job) + f'; echo $? > {RC}')} "
             f"> {LOG} 2>&1 & echo $! > {PID})")
  run = [_ssh(job, run_cmd)]
  logs = [_ssh(job, f"tail -n +1 -F {LOG} --pid=$(cat {PID})", worker="0"),
          _ssh(job, f"cat {RC}")]
  delete = ["gcloud", "compute", "tpus", "queued-resources", "delete", job.qr, *_where(job),
            "--force", "--quiet"]
  return {"create": [create], "wait": [wait], "ship": ship, "install": install, "run": run,
          "logs": logs, "delete": [delete]}


def show(cmd: list[str]) -> str:
  return " ".join(shlex.quote(c) for c in cmd)


def _wait_active(cmd: list[str], timeout_s: float, poll_s: float = 30) -> None:
  deadline = time.monotonic() + timeout_s
  while True:
    state = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    print(f"queued resource: {state}", flush=True)
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED"):
      raise SystemExit(f"queued resource is {state}; see `{show(cmd[:-1])}`")
    if time.monotonic() > deadline:
      raise SystemExit(f"queued resource not ACTIVE after {timeout_s:.0f}s (state {state})")
    time.sleep(poll_s)


def execute(job: Job, steps, dry_run: bool, keep: bool, wait_timeout_s: float) -> int:
  plan, status = commands(job), 0
  try:
    for step in steps:
      if step == "delete":
        continue  # always last, in `finally`
      for cmd in plan[step]:
        print(f"[{step}] {show(cmd)}" + ("   # repeat until ACTIVE" if step == "wait" else ""),
              flush=True)
        if dry_run:
          continue
        if step == "wait":
          _wait_active(cmd, wait_timeout_s)
        elif cmd is plan["logs"][-1]:  # every worker's exit code of the job
          out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
          print(f"exit codes: {' '.join(out)}", flush=True)
          if any(c != "0" for c in out):
            status = 1
        else:
          subprocess.run(cmd, check=True)
  finally:
    if "delete" in steps and not keep:
      cmd = plan["delete"][0]
      print(f"[delete] {show(cmd)}", flush=True)
      if not dry_run:
        subprocess.run(cmd, check=False)
  return status


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              usage="%(prog)s [options] [-- hh_jax.main overrides...]")
  p.add_argument("--name", required=True, help="TPU VM name; the queued resource is NAME-qr")
  p.add_argument("--accelerator", required=True, help="e.g. v5p-128, v4-256, v5litepod-16")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", required=True)
  p.add_argument("--config", required=True, help="e.g. configs/pm.py:size=52b")
  p.add_argument("--workdir", required=True, help="gs://BUCKET/PATH")
  p.add_argument("--spot", action="store_true", help="spot capacity (preemptible, cheaper)")
  p.add_argument("--reservation", default="")
  p.add_argument("--runtime", default="", help="TPU software version (default per generation)")
  p.add_argument("--repo_url", default="", help="git clone this on the workers (default: copy)")
  p.add_argument("--ref", default="main")
  p.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
  p.add_argument("--keep", action="store_true", help="do not delete the slice at the end")
  p.add_argument("--wait_timeout_s", type=float, default=6 * 3600)
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                 help="print every command, run none")
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = []
  if "--" in argv:
    i = argv.index("--")
    argv, overrides = argv[:i], argv[i + 1:]
  a = p.parse_args(argv)
  steps = [s for s in a.steps.split(",") if s]
  bad = [s for s in steps if s not in STEPS]
  if bad:
    p.error(f"--steps: unknown {bad}; use some of {','.join(STEPS)}")
  job = Job(a.name, a.accelerator, a.zone, a.project, a.config, a.workdir, overrides, a.spot,
            a.runtime, a.repo_url, a.ref, a.reservation)
  validate(job)
  return job, steps, a


def main(argv=None) -> int:
  job, steps, a = parse(argv)
  return execute(job, steps, a.dry_run, a.keep, a.wait_timeout_s)


if __name__ == "__main__":
  sys.exit(main())
