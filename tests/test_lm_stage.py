"""The LM stage end to end: falling loss, resume == uninterrupted, one-line user errors."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import lm as lm_config
from hh_jax import checkpoint, metrics
from hh_jax.train import lm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**train):
  c = lm_config.get_config("size=test,runlocal=True")
  c.train.log_every = 1
  c.train.ckpt_every = 0
  c.train.async_checkpointing = True
  for k, v in train.items():
    setattr(c.train, k, v)
  return c


TIMING = ("tokens_per_s", "step_time_s", "model_tflops_per_s")


def _rows(workdir):
  """Every metrics row in file order, without the wall-clock ones."""
  return [{k: v for k, v in r.items() if k not in TIMING} for r in metrics.read_metrics(workdir)]


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics.read_metrics(workdir) if "loss" in r}


def test_resumed_run_matches_uninterrupted(tmp_path):
  total = 6
  full = lm.run(_config(total_steps=total), str(tmp_path / "full"))
  lm.run(_config(total_steps=total, stop_at_step=total // 2), str(tmp_path / "split"))
  assert checkpoint.Checkpointer(str(tmp_path / "split" / "checkpoints")).latest_step() == 3
  resumed = lm.run(_config(total_steps=total), str(tmp_path / "split"))

  # The whole sequence, row by row (train and eval rows, in file order): a step logged
  # twice, a missing step or a rerun that started over from step 1 all fail here.
  a, b = _rows(tmp_path / "full"), _rows(tmp_path / "split")
  assert [r["step"] for r in b] == [r["step"] for r in a]
  assert [r["step"] for r in a if "loss" in r] == list(range(1, total + 1))
  for x, y in zip(a, b):
    assert y.keys() == x.keys(), x["step"]
    for k in x:
      assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-7), (x["step"], k)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
               checkpoint.to_host(full.params), checkpoint.to_host(resumed.params))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
               checkpoint.to_host(full.opt_state), checkpoint.to_host(resumed.opt_state))
  assert int(resumed.step) == total
  # The resolved config, tokenizer, TensorBoard events and checkpoints are in the workdir.
  for name in ("config.json", "tokenizer.model", "metrics.jsonl", "tensorboard", "checkpoints"):
    assert os.path.exists(tmp_path / "split" / name), name


def test_loss_falls_on_synthetic_corpus(tmp_path):
  # 40 steps: the framed requests of the synthetic world (greetings, openers, closers) make
  # the corpus less repetitive than it was, and 30 steps fell by 0.97 nats
  c = _config(total_steps=40)
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 3
  lm.run(c, str(tmp_path))
  losses = _losses(tmp_path)
  first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (38, 39, 40)])
  assert last < first - 1.0, (first, last)


def _cli(*args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "hh_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,expect", [
    (["--config=configs/lm.py:size=huge"], "unknown model size 'huge'"),
    (["--config=configs/lm.py:size=test", "--config.data.nope=1"], "--config.data.nope"),
    (["--config=configs/lm.py:size=test", "--config.mesh.fsdp=3"], "does not divide the 8 devices"),
    (["--config=configs/lm.py:size=test", "--config.data.batch_size=12"],
     "data.batch_size=12 is not divisible"),
    (["--config=configs/lm.py:size=test", "--config.model.remat_policy=some"], "remat_policy"),
    (["--config=configs/missing.py"], "does not exist"),
    (["--config=configs/lm.py:size=test", "--config.init.workdir=/nonexistent/run"],
     "init.workdir=/nonexistent/run is not an LM run"),
])
def test_user_errors_are_one_line(tmp_path, args, expect):
  out = _cli(*args, f"--workdir={tmp_path}/w")
  assert out.returncode == 2, out.stderr
  lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and expect in lines[0], out.stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")  # nothing compiled or saved


def test_unwritable_workdir_is_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  out = _cli("--config=configs/lm.py:size=test", f"--workdir={blocker}/sub")
  assert out.returncode == 2
  lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and "cannot write to workdir" in lines[0], out.stderr
