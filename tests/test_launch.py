"""The TPU pod launcher's dry run prints a complete command sequence and runs nothing."""
import os
import shlex
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "launch"))
import tpu_pod  # noqa: E402

JOBS = {
    "v5p-128": ["--name=pm52b", "--accelerator=v5p-128", "--zone=us-east5-a",
                "--project=proj-a", "--config=configs/pm.py:size=52b",
                "--workdir=gs://bucket-a/runs/pm52b", "--spot", "--dry-run",
                "--", "--config.mesh.fsdp=16", "--config.mesh.tensor=4"],
    "v4-256": ["--name=lm13b", "--accelerator=v4-256", "--zone=us-central2-b",
               "--project=proj-b", "--config=configs/lm.py:size=13b",
               "--workdir=gs://bucket-b/runs/lm13b", "--dry-run"],
}


def _dry_run(argv, capsys, monkeypatch):
  def refuse(*a, **k):
    raise AssertionError(f"dry run executed {a}")
  monkeypatch.setattr(subprocess, "run", refuse)
  assert tpu_pod.main(argv) == 0
  lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
  steps = [ln[1:ln.index("]")] for ln in lines]
  cmds = [shlex.split(ln[ln.index("]") + 1:].split("   #")[0]) for ln in lines]
  return steps, cmds


@pytest.mark.parametrize("accel", sorted(JOBS))
def test_dry_run_sequence(accel, capsys, monkeypatch):
  argv = JOBS[accel]
  flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a
               and not a.startswith("--config."))
  steps, cmds = _dry_run(argv, capsys, monkeypatch)
  assert [s for i, s in enumerate(steps) if s not in steps[:i]] == list(tpu_pod.STEPS)

  create = cmds[0]
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert f"--accelerator-type={accel}" in create and f"--node-id={flags['name']}" in create
  runtime = {"v5p": "v2-alpha-tpuv5", "v4": "tpu-ubuntu2204-base"}[accel.split("-")[0]]
  assert f"--runtime-version={runtime}" in create
  assert ("--spot" in create) == ("--spot" in argv)

  for cmd in cmds:  # every gcloud call names the project and zone
    if cmd[0] == "gcloud":
      assert f"--project={flags['project']}" in cmd and f"--zone={flags['zone']}" in cmd, cmd

  ssh_prefix = ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  ssh = [(s, c) for s, c in zip(steps, cmds) if c[:5] == ssh_prefix]
  for step, cmd in ssh:
    assert cmd[5] == flags["name"]
    assert ("--worker=0" if step == "logs" and "tail" in cmd[-1] else "--worker=all") in cmd
  install = [c for s, c in ssh if s == "install"][0][-1]
  assert "pip install" in install and "requirements-tpu.txt" in install

  run = [c for s, c in ssh if s == "run"][0][-1]
  assert "python -m hh_jax.main" in run
  assert f"--config={flags['config']}" in run and f"--workdir={flags['workdir']}" in run
  assert flags["workdir"].startswith("gs://")
  if "--" in argv:
    assert all(o in run for o in argv[argv.index("--") + 1:])
  assert "nohup" in run  # detached: a dropped ssh does not kill the job

  delete = cmds[-1]
  assert steps[-1] == "delete"
  assert delete[:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"]
  assert f"{flags['name']}-qr" in delete and "--force" in delete and "--quiet" in delete


def test_keep_skips_teardown(capsys, monkeypatch):
  steps, _ = _dry_run(JOBS["v4-256"] + ["--keep"], capsys, monkeypatch)
  assert "delete" not in steps


def test_local_workdir_is_refused():
  argv = [a if not a.startswith("--workdir") else "--workdir=/tmp/run" for a in JOBS["v4-256"]]
  with pytest.raises(SystemExit, match="gs://"):
    tpu_pod.main(argv)
