"""Faults a long run meets: damaged checkpoints, NaN batches, divergence, a full disk,
a workdir of another run, a write cut short. Each ends in a fallback or in one line."""
import glob
import json
import os
import resource
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import lm as lm_config
from configs import pm as pm_config
from hh_jax import checkpoint, files, metrics as metrics_lib
from hh_jax.data import lm_data, synthetic, tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.model import params as params_lib
from hh_jax.model.transformer import Transformer
from hh_jax.train import lm, optimizer as optim_lib, runner, state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _lm_config(**train):
  c = lm_config.get_config("size=test,runlocal=True")
  c.train.update(ckpt_every=1, async_checkpointing=False, log_every=1, **train)
  return c


def _truncate_newest_array_files(workdir) -> str:
  step = max(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
  data = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**", "d", "*"),
                   recursive=True)
  assert data
  for path in data:  # every array data file cut in half, as a crash mid-write would
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  return str(step)


def _losses(workdir):
  return [(r["step"], r["loss"]) for r in metrics_lib.read_metrics(workdir) if "loss" in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An undamaged 6-step LM run: its final state and metrics."""
  work = str(tmp_path_factory.mktemp("ref"))
  return work, lm.run(_lm_config(), work)


def test_truncated_array_file_in_newest_checkpoint_falls_back(reference, tmp_path, capsys):
  ref_dir, ref_state = reference
  work = str(tmp_path / "run")
  lm.run(_lm_config(stop_at_step=4), work)
  assert _truncate_newest_array_files(work) == "4"
  capsys.readouterr()
  state = lm.run(_lm_config(), work)
  err = capsys.readouterr().err
  warn = [ln for ln in err.splitlines() if ln.startswith("warning: checkpoint")]
  assert len(warn) == 1 and "/checkpoints/4 is damaged" in warn[0], err[-2000:]
  assert "restored step 3 instead" in warn[0]
  assert _losses(work) == _losses(ref_dir)  # step 4 recomputed, every loss as undamaged
  jax.tree.map(np.testing.assert_array_equal, checkpoint.to_host(ref_state.params),
               checkpoint.to_host(state.params))


def test_every_checkpoint_damaged_is_one_line(tmp_path):
  work = str(tmp_path / "run")
  lm.run(_lm_config(stop_at_step=1, keep_checkpoints=1), work)
  _truncate_newest_array_files(work)
  with pytest.raises(UserError, match=r"no readable checkpoint in .*checkpoints \(step 1: "):
    lm.run(_lm_config(), work)


def test_damaged_source_checkpoint_is_one_line_naming_it(tmp_path):
  work = str(tmp_path / "lm")
  lm.run(_lm_config(total_steps=1), work)
  _truncate_newest_array_files(work)
  with pytest.raises(UserError, match=r"source checkpoint .*lm/checkpoints/1 is damaged") as e:
    params_lib.load_lm(work)
  assert "\n" not in str(e.value)
  os.remove(os.path.join(work, "checkpoints", "1", "state", "_METADATA"))
  with pytest.raises(UserError, match=r"source checkpoint .*lm/checkpoints/1 is damaged"):
    params_lib.load_lm(work)


class _Batches:
  """LM batches 0, 1, ... of a real stream, with batch `nan_at` given a NaN mask."""

  def __init__(self, src, n, nan_at=None):
    self.src, self.n, self.nan_at, self.i = src, n, nan_at, 0

  def __next__(self):
    b = dict(self.src.batch(self.i if self.nan_at is None or self.i <= self.nan_at
                            else self.i - 1))
    b["mask"] = b["mask"].astype(np.float32)
    if self.i == self.nan_at:
      b["mask"][0, 0] = np.nan
    self.i += 1
    return b


def _loop(tmp, batches, total, max_nonfinite=10):
  c = _lm_config(total_steps=total)
  model = Transformer(c.model)
  tx = optim_lib.make(c.optim, 100)
  example = jnp.zeros((c.data.batch_size, c.data.seq_len), jnp.int32)
  mesh = runner.make_mesh(c)
  state, sh = state_lib.create(model, tx, example, mesh, 0)
  ckpt = checkpoint.Checkpointer(str(tmp / "ckpt"), 2, 1, async_save=False)
  writer = metrics_lib.MetricWriter(str(tmp))
  compiled, batch_sh = runner.compile_step(lm.make_train_step(model), sh, mesh, lm.BATCH_NDIMS)
  try:
    state = runner.train_loop(state=state, step_fn=compiled, batches=batches,
                              batch_shardings=batch_sh, total_steps=total, checkpointer=ckpt,
                              writer=writer, log_every=1, desc="t", tokens_per_step=1,
                              max_nonfinite=max_nonfinite)
  finally:
    ckpt.close()
    writer.close()
  return state, metrics_lib.read_metrics(str(tmp))


def test_nan_batch_is_skipped_and_counted(tmp_path):
  c = _lm_config()
  texts = synthetic.lm_corpus(200, 0)
  tok = tok_lib.train(texts, c.data.tokenizer_vocab)
  src = lm_data.LMBatches(lm_data.pack(tok.encode_batch(texts), tok.eos_id),
                          c.data.batch_size, c.data.seq_len, 0)
  (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
  clean, clean_rows = _loop(tmp_path / "a", _Batches(src, 2), 2)
  dirty, rows = _loop(tmp_path / "b", _Batches(src, 3, nan_at=1), 3)
  assert [r["nonfinite_steps"] for r in rows] == [0.0, 1.0, 0.0]
  assert rows[1]["loss"] == "nan"
  assert rows[2]["loss"] == clean_rows[1]["loss"]
  # The NaN step moved neither the params nor Adam's moments or count: the state after
  # (good, NaN, good) is the state after (good, good).
  jax.tree.map(np.testing.assert_array_equal, checkpoint.to_host(clean.params),
               checkpoint.to_host(dirty.params))
  jax.tree.map(np.testing.assert_array_equal, checkpoint.to_host(clean.opt_state),
               checkpoint.to_host(dirty.opt_state))
  assert int(dirty.step) == 3


def _cli(work, *extra, preexec_fn=None):
  return subprocess.run([sys.executable, "-m", "hh_jax.main",
                         "--config=configs/lm.py:size=test,runlocal=True",
                         "--config.train.async_checkpointing=False", "--config.train.ckpt_every=1",
                         f"--workdir={work}", *extra], cwd=REPO, env=ENV, capture_output=True,
                        text=True, preexec_fn=preexec_fn, timeout=600)


def test_diverging_run_stops_with_one_line_and_saves_no_nan(tmp_path):
  work = str(tmp_path / "run")
  out = _cli(work, "--config.optim.learning_rate=1e6", "--config.optim.warmup_steps=0",
             "--config.train.total_steps=12", "--config.train.max_nonfinite=2",
             "--config.train.log_every=1")
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: step ") and "3 non-finite losses or gradients in a row" in last
  assert "train.max_nonfinite=2" in last and "last good checkpoint: " in last, last
  assert "Traceback" not in out.stderr
  steps = sorted(int(n) for n in os.listdir(os.path.join(work, "checkpoints")) if n.isdigit())
  assert steps and steps[-1] < 12
  saved = ocp.PyTreeCheckpointer().restore(os.path.join(work, "checkpoints", str(steps[-1]),
                                                        "state"))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(saved["params"]))
  rows = metrics_lib.read_metrics(work)
  assert sum(r.get("nonfinite_steps", 0) for r in rows) >= 3


def _small_files_only():
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
  resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def test_full_disk_fails_the_save_in_one_line_and_keeps_the_last_checkpoint(tmp_path):
  work = str(tmp_path / "run")
  first = _cli(work, "--config.train.stop_at_step=3")
  assert first.returncode == 0, first.stderr[-3000:]
  full = _cli(work, preexec_fn=_small_files_only)  # the array file (~480 kB) cannot be written
  assert full.returncode == 2, full.stderr[-3000:]
  # orbax and tensorstore log the failed write from their own threads (their tracebacks
  # have no hh_jax frame); hh_jax's own report is the one error line.
  # (a thread's log line may still end on the same line when it has no newline yet: CI once
  # saw no line starting with "error:", so the line is found where it starts)
  errors = [ln[ln.index("error:"):] for ln in full.stderr.splitlines() if "error:" in ln]
  assert errors == [f"error: cannot write checkpoint {work}/checkpoints/4 (File too large); "
                    "step 3 is intact; free disk space or raise the quota and rerun"], errors
  assert "/hh_jax/" not in full.stderr
  again = _cli(work)  # space again: the rerun restores step 3 and finishes
  assert again.returncode == 0, again.stderr[-3000:]
  steps = [s for s, _ in _losses(work)]
  assert steps == sorted(set(steps)) and steps[-1] == 6, steps  # no step twice, to the end


def test_workdir_of_another_stage_or_model_is_refused(tmp_path):
  work = str(tmp_path)
  c = _lm_config()
  runner.write_config(c, work)
  runner.check_workdir(c, work)  # the same run: a resume
  other = lm_config.get_config("size=nano,runlocal=True")
  with pytest.raises(UserError, match=r"holds a run of another model \(model\.") as e:
    runner.check_workdir(other, work)
  assert "overwrite_workdir=True" in str(e.value)
  pm = pm_config.get_config("size=test,runlocal=True")
  with pytest.raises(UserError, match=r"holds a 'lm' run, not 'pm'"):
    runner.check_workdir(pm, work)
  pm.train.overwrite_workdir = True
  runner.check_workdir(pm, work)


def test_writes_are_atomic(tmp_path, monkeypatch):
  path = str(tmp_path / "config.json")
  files.write_json(path, {"a": 1})

  def fail(*_):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError):
    files.write_json(path, {"a": 2})
  monkeypatch.undo()
  assert json.loads(open(path).read()) == {"a": 1}  # the old file, whole
  assert os.listdir(tmp_path) == ["config.json"]  # no temporary left behind


def test_another_model_on_a_workdir_is_refused_and_overriding_meets_the_mismatch(tmp_path):
  work = str(tmp_path / "run")
  lm.run(_lm_config(total_steps=1), work)
  c = _lm_config(total_steps=2)
  c.model.max_len = 256  # a learned position table of another shape
  with pytest.raises(UserError, match=r"model\.max_len=128 there, 256 here"):
    lm.run(c, work)
  c.train.overwrite_workdir = True  # allowed in, the checkpoint still cannot become this model
  with pytest.raises(UserError, match=r"checkpoints/1 does not match this config \("):
    lm.run(c, work)
