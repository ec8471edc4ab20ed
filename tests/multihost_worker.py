"""One PM train step plus a checkpoint, as each process of a multi-process job runs it.

`tests/test_multihost.py` starts this file twice through `launch/local_multiprocess.py`
(2 processes × 4 CPU devices, gloo) and runs `one_step` itself on 8 devices in one
process; the two must agree. Usage: python tests/multihost_worker.py OUT_DIR
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hh_jax.parallel import multihost  # noqa: E402  (must start before devices are touched)

if __name__ == "__main__":
  multihost.initialize()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import models  # noqa: E402
from hh_jax import checkpoint as ckpt_lib  # noqa: E402
from hh_jax import metrics as metrics_lib  # noqa: E402
from hh_jax.model.transformer import Transformer  # noqa: E402
from hh_jax.parallel import mesh as mesh_lib  # noqa: E402
from hh_jax.train import optimizer, pm, runner, state as state_lib  # noqa: E402

PAIRS, SEQ = 8, 16
MESH = (2, 2, 2)  # data across the two processes; fsdp and tensor inside each
LR, EPS = 1e-2, 1e-4  # eps well above gradient noise, as in test_sharding


def model_and_tx():
  cfg = models.get("test")
  cfg.heads = ("scalar",)
  optim = ml_collections.ConfigDict(dict(
      learning_rate=LR, warmup_steps=0, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=EPS,
      weight_decay=0.1, grad_clip_norm=1.0))
  return Transformer(cfg), optimizer.make(optim, 10)


def make_mesh(shape=MESH):
  return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(zip(("data", "fsdp", "tensor"), shape))))


def example_tokens():
  return jnp.zeros((2 * PAIRS, SEQ), jnp.int32)  # [pairs · 2, seq]: chosen and rejected rows


def global_batch():
  """The same comparisons in every process: tokens/mask [pairs, 2, seq], eoc_pos [pairs, 2]."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 512, size=(PAIRS, 2, SEQ)).astype(np.int32)
  lengths = rng.integers(SEQ // 2, SEQ + 1, size=(PAIRS, 2))
  mask = (np.arange(SEQ)[None, None, :] < lengths[..., None]).astype(np.int32)
  return {"tokens": tokens * mask, "mask": mask, "eoc_pos": (lengths - 1).astype(np.int32)}


def local_rows(sharding, global_shape) -> slice:
  """Rows of a batch-sharded array that this process's devices hold, as one slice.

  hh_jax/data loaders build block `process_index` of `process_count` of every global batch
  and `runner.to_global` assembles the global array from those blocks; this says which
  rows the mesh actually puts on this process, so the worker can check the two agree.
  """
  n = global_shape[0]
  index_map = sharding.addressable_devices_indices_map(tuple(global_shape))
  spans = sorted({(idx[0] if idx else slice(None)).indices(n)[:2] for idx in index_map.values()})
  lo, hi = spans[0][0], spans[0][0]
  for start, stop in spans:  # replicas repeat a span; a gap means rows owned elsewhere
    if start > hi:
      raise ValueError(f"this process's rows of {sharding} are not contiguous; "
                       "order the mesh so each process owns one block of the batch axis")
    hi = max(hi, stop)
  return slice(lo, hi)


def one_step():
  """(metrics, state) after one PM step from a fresh state on the current device set.

  Each process feeds only its block of rows, as hh_jax/data does (block `process_index`
  of `process_count`); `local_rows` checks that block is what the sharding wants.
  """
  mesh = make_mesh()
  model, tx = model_and_tx()
  state, shardings = state_lib.create(model, tx, example_tokens(), mesh, seed=0)
  with mesh_lib.activate(mesh):
    step, batch_sh = runner.compile_step(pm.make_train_step(model), shardings, mesh,
                                         pm.BATCH_NDIMS)
    full = global_batch()
    per = PAIRS // jax.process_count()
    block = slice(jax.process_index() * per, (jax.process_index() + 1) * per)
    for k, v in full.items():
      assert local_rows(batch_sh[k], v.shape) == block, (k, block)
    state, metrics = step(state, runner.to_global({k: v[block] for k, v in full.items()},
                                                  batch_sh))
  return jax.device_get(metrics), state


def gather(tree):
  """Every leaf whole on every process (a collective: all processes must call it)."""
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def flat(tree) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def main(out_dir):
  assert jax.process_count() == 2 and jax.device_count() == 8, (jax.process_count(),
                                                                 jax.device_count())
  metrics, state = one_step()
  ckpt = ckpt_lib.Checkpointer(os.path.join(out_dir, "checkpoints"), async_save=True)
  ckpt.save(1, state, {"position": 1})
  ckpt.close()
  writer = metrics_lib.MetricWriter(out_dir)  # a no-op on process 1
  writer.write(1, metrics)
  writer.close()
  params = gather(state.params)
  if jax.process_index() == 0:
    np.savez(os.path.join(out_dir, "result.npz"), loss=metrics["loss"], **flat(params))
  multihost.sync("worker_done")
  print(f"process {jax.process_index()} done, loss {float(metrics['loss']):.6f}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
