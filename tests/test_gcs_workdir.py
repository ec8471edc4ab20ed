"""gs:// workdirs against a real GCS API (fake-gcs-server): LM run, resume, PM from it.

Each stage runs as the README's command, `python -m hh_jax.main ... --workdir=gs://...`, in
a subprocess whose environment points gcsfs/epath (STORAGE_EMULATOR_HOST) and orbax's
TensorStore (TENSORSTORE_GCS_HTTP_URL) at the emulator. The run's cwd is an empty temp dir,
which must stay empty: a path that lost its scheme (`os.path.abspath("gs://b/x")` is
`<cwd>/gs:/b/x`) would land there.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LM = f"--config={REPO}/configs/lm.py:size=test,runlocal=True"
PM = f"--config={REPO}/configs/pm.py:size=test,runlocal=True"


def _main(emulator, cwd, *args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **emulator.env)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get(
      "HH_JAX_TEST_CACHE", "/tmp/hh_jax_test_jax_cache"))
  out = subprocess.run([sys.executable, "-m", "hh_jax.main", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=400)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _steps(names, prefix):
  """Checkpoint steps committed under `prefix`checkpoints/."""
  root = prefix + "checkpoints/"
  return sorted({int(n[len(root):].split("/")[0]) for n in names
                 if n.startswith(root) and n.endswith("/_CHECKPOINT_METADATA")})


def _rows(emulator, name):
  return [json.loads(ln) for ln in emulator.read(name).decode().splitlines() if ln.strip()]


def test_lm_then_pm_on_gs_workdirs(gcs_emulator, tmp_path):
  gcs = gcs_emulator
  cwd = tmp_path / "cwd"
  cwd.mkdir()

  _main(gcs, cwd, LM, "--workdir=gs://bucket/lm")
  names = gcs.list("lm/")
  for name in ("lm/config.json", "lm/metrics.jsonl", "lm/tokenizer.model"):
    assert name in names, (name, names)
  assert any(n.startswith("lm/tensorboard/events.out.tfevents") for n in names), names
  assert _steps(names, "lm/") == [3, 6], names
  assert json.loads(gcs.read("lm/config.json"))["stage"] == "lm"
  first = _rows(gcs, "lm/metrics.jsonl")
  assert [r["step"] for r in first if "loss" in r] == [2, 4, 6]
  assert not any(n.startswith("lm/.write_test") for n in names)  # the probe is removed
  assert list(cwd.iterdir()) == [], list(cwd.iterdir())  # nothing local, no `gs:` dir

  # A rerun resumes: with a larger total it continues from step 6, keeping the earlier rows
  # of metrics.jsonl (an object cannot be appended to, so it is rewritten whole).
  _main(gcs, cwd, LM, "--workdir=gs://bucket/lm", "--config.train.total_steps=8")
  names = gcs.list("lm/")
  assert _steps(names, "lm/") == [6, 8], names  # keep-last-2
  again = _rows(gcs, "lm/metrics.jsonl")
  assert again[:len(first)] == first
  assert [r["step"] for r in again[len(first):] if "loss" in r] == [8]  # steps 7-8 only
  assert list(cwd.iterdir()) == []

  # A PM starts from the gs:// LM run (trunk restored, tokenizer copied) and finishes with
  # reward_stats.json in its own gs:// workdir.
  out = _main(gcs, cwd, PM, "--config.init.workdir=gs://bucket/lm", "--workdir=gs://bucket/pm")
  assert "restored from gs://bucket/lm" in out.stdout, out.stdout
  names = gcs.list("pm/")
  for name in ("pm/config.json", "pm/metrics.jsonl", "pm/tokenizer.model",
               "pm/reward_stats.json", "pm/final_eval.json"):
    assert name in names, (name, names)
  assert gcs.read("pm/tokenizer.model") == gcs.read("lm/tokenizer.model")
  stats = json.loads(gcs.read("pm/reward_stats.json"))
  assert stats["step"] == 8 and _steps(names, "pm/")[-1] == 8, (stats, names)
  assert list(cwd.iterdir()) == []


def test_missing_bucket_is_one_line(gcs_emulator, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **gcs_emulator.env)
  out = subprocess.run([sys.executable, "-m", "hh_jax.main", LM, "--workdir=gs://nobucket/lm"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and "cannot write to workdir gs://nobucket/lm" in lines[0], out.stderr
