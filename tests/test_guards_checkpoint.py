"""The checkpoint fallback's exact result on disk: damaged steps gone, the rest untouched.

`Checkpointer.restore` without a step restores the newest readable step and deletes the
newer damaged ones, so a rerun can save those steps again (orbax will not write a step
that exists) and no later restore meets them. test_faults.py checks the warning and the
resumed run's losses; here the directory listing itself, on a small state, is checked.
"""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hh_jax import checkpoint
from hh_jax.errors import UserError


def _state(step):
  return {"w": jnp.arange(6, dtype=jnp.float32) * step, "step": jnp.int32(step)}


ABSTRACT = jax.eval_shape(lambda: _state(0))


def _saved(tmp_path, steps):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=10, async_save=False)
  for s in steps:
    ckpt.save(s, _state(s), {"batches": s})
  ckpt.wait()
  return ckpt


def _on_disk(ckpt):
  return sorted(n for n in os.listdir(ckpt.directory) if not n.startswith("."))


def _damage(ckpt, step):
  files = glob.glob(os.path.join(ckpt.directory, str(step), "state", "**", "d", "*"),
                    recursive=True)
  assert files
  for path in files:  # every array file cut in half, as a crash mid-write would
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def _restored_step(out):
  state, data = out
  return int(state["step"]), data


def test_damaged_newest_steps_are_deleted_and_the_newest_good_one_restored(tmp_path, capsys):
  ckpt = _saved(tmp_path, [1, 2, 3, 4])
  assert _on_disk(ckpt) == ["1", "2", "3", "4"]
  _damage(ckpt, 4)
  _damage(ckpt, 3)
  state, data = ckpt.restore(ABSTRACT)
  assert (int(state["step"]), data) == (2, {"batches": 2})
  np.testing.assert_array_equal(state["w"], np.arange(6) * 2.0)
  assert _on_disk(ckpt) == ["1", "2"]  # 3 and 4 gone, 1 and 2 as they were
  assert ckpt.latest_step() == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "/4 is damaged" in err[0] and "restored step 2 instead" in err[0]
  assert "(2 newer steps skipped)" in err[0]
  # The rerun saves step 3 again, and a later restore finds it.
  ckpt.save(3, _state(3), {"batches": 3})
  ckpt.wait()
  assert _on_disk(ckpt) == ["1", "2", "3"]
  assert _restored_step(ckpt.restore(ABSTRACT)) == (3, {"batches": 3})
  ckpt.close()


def test_an_undamaged_restore_deletes_nothing(tmp_path):
  ckpt = _saved(tmp_path, [1, 2])
  assert _restored_step(ckpt.restore(ABSTRACT)) == (2, {"batches": 2})
  assert _restored_step(ckpt.restore(ABSTRACT, step=1)) == (1, {"batches": 1})
  assert _on_disk(ckpt) == ["1", "2"]
  ckpt.close()


def test_a_damaged_step_asked_for_by_number_is_an_error_and_stays(tmp_path):
  ckpt = _saved(tmp_path, [1, 2])
  _damage(ckpt, 2)
  with pytest.raises(UserError, match=r"no readable checkpoint in .*ckpt \(step 2: "):
    ckpt.restore(ABSTRACT, step=2)
  assert _on_disk(ckpt) == ["1", "2"]  # no fallback asked for: nothing deleted
  ckpt.close()


def test_every_step_damaged_deletes_nothing(tmp_path):
  ckpt = _saved(tmp_path, [1, 2])
  _damage(ckpt, 1)
  _damage(ckpt, 2)
  with pytest.raises(UserError, match=r"no readable checkpoint in .*ckpt \(step 2: "):
    ckpt.restore(ABSTRACT)
  assert _on_disk(ckpt) == ["1", "2"]  # the user decides what to delete
  ckpt.close()
