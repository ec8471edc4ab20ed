"""Compiled per-device memory of a train step on a TPU slice, without a TPU.

With `libtpu` installed (requirements-tpu.txt), `jax.experimental.topologies` describes a
TPU slice on a CPU-only machine; the step is lowered with abstract inputs carrying their
real shardings over that slice's devices and compiled by the TPU compiler, and
`memory_analysis()` reports what each chip would hold. Nothing runs, nothing is allocated.

  python bench/memory_plan.py                      # the plan in PLAN: every rung, LM and PM
  python bench/memory_plan.py --only=52b           # the rows of one rung
  python bench/memory_plan.py --rung=13b --step=pm --topology=v5p:2x4x4 --mesh=1,8,4 \\
      --remat=full --dtype=bfloat16                 # one ad-hoc row
  python bench/memory_plan.py --markdown=docs/scaling_table.md   # also write the table

  python bench/memory_plan.py --only=llama3-8b     # Meta-Llama-3-8B's shape: PM and PPO rows

Prints one JSON object per row. Batch size and sequence length default to what the
stage configs (configs/lm.py, configs/pm.py, configs/ppo.py) would run for that rung. The
PPO row is the update program (`hh_jax.train.ppo.make_update`: policy and value model,
both optimizer states, every epoch × minibatch of one iteration), the program that holds
two trainable models; batch = responses per iteration, seq_len = prompt + new tokens.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # TPU slices are described, not attached
# Compile-only: no chip is opened, so several processes (xdist, a bench beside the tests) may
# load libtpu at once, and there is no TPU metadata server to ask.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # else libtpu logs a page of errors
os.environ.setdefault("TPU_WORKER_ID", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import mesh_utils, topologies  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402
from jax.sharding import AxisType, Mesh  # noqa: E402

from configs import lm as lm_config  # noqa: E402
from configs import pm as pm_config  # noqa: E402
from configs import ppo as ppo_config  # noqa: E402
from hh_jax.model import flops  # noqa: E402
from hh_jax.model.transformer import Transformer  # noqa: E402
from hh_jax.parallel import mesh as mesh_lib  # noqa: E402
from hh_jax.parallel.rules import MESH_AXES  # noqa: E402
from hh_jax.rl import ppo_stage  # noqa: E402
from hh_jax.train import lm, optimizer, pm, ppo, runner, state as state_lib  # noqa: E402

GIB = 2 ** 30
# HBM per chip (one JAX device: v4 and v5p run both TensorCores as one "megacore" device).
HBM_GIB = {"v4": 32, "v5p": 95, "v5e": 16, "v6e": 32}
# gcloud accelerator types count TensorCores on v4/v5p (2 per chip), chips on v5e/v6e.
CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}
GCLOUD_NAME = {"v5e": "v5litepod"}


@dataclasses.dataclass
class Row:
  """One compiled configuration. batch: sequences (LM) or comparisons (PM), global."""
  rung: str
  step: str  # "lm" | "pm" | "ppo"
  topology: str  # e.g. "v5p:4x4x4"
  mesh: tuple[int, int, int]  # (data, fsdp, tensor)
  remat: str = "none"
  dtype: str = "float32"  # compute dtype; params and optimizer state stay float32
  batch: int = 0  # 0: the stage config's
  seq_len: int = 0  # 0: the stage config's
  accum: int = 1


# The plan behind docs/scaling.md: for every rung, a small current slice it fits on, with the
# stage configs' batch and sequence length (LM 256 × 1024, PM 64 pairs × 1024; PM has no LM
# head, so it is the lighter of the two on the same slice). Mesh = (data, fsdp, tensor).
# Ordered so the rows that matter most come first when the plan is cut short.
_FULL = dict(remat="full", dtype="bfloat16")
PLAN = [
    Row("52b", "pm", "v5p:4x4x4", (1, 16, 4), **_FULL),
    Row("52b", "lm", "v5p:4x4x4", (1, 16, 4), **_FULL),
    Row("52b", "pm", "v4:4x4x8", (1, 32, 4), **_FULL),
    Row("13m", "lm", "v5e:2x2", (4, 1, 1), **_FULL),
    Row("13m", "pm", "v5e:2x2", (4, 1, 1), **_FULL),
    Row("13b", "lm", "v5p:2x4x4", (1, 8, 4), **_FULL),
    Row("13b", "pm", "v5p:2x4x4", (1, 8, 4), **_FULL),
    Row("2.7b", "lm", "v4:2x2x2", (1, 8, 1), accum=4, **_FULL),
    Row("2.7b", "pm", "v4:2x2x2", (1, 8, 1), **_FULL),
    Row("810m", "lm", "v5e:4x4", (1, 16, 1), accum=2, **_FULL),
    Row("810m", "pm", "v5e:4x4", (1, 16, 1), **_FULL),
    Row("197m", "lm", "v5e:4x4", (1, 16, 1), accum=2, **_FULL),
    Row("197m", "pm", "v5e:4x4", (1, 16, 1), **_FULL),
    Row("42m", "lm", "v5e:4x4", (16, 1, 1), accum=2, **_FULL),
    Row("42m", "pm", "v5e:4x4", (16, 1, 1), **_FULL),
    # Meta-Llama-3-8B's shape (configs/models.py `llama3-8b`: GQA 32/8 heads, SwiGLU 14336,
    # 128,256-token vocabulary, untied head), as an imported run would train it.
    Row("llama3-8b", "pm", "v5p:2x4x4", (1, 8, 4), **_FULL),
    Row("llama3-8b", "ppo", "v5p:2x4x4", (1, 8, 4), seq_len=512, **_FULL),  # 64 + 448 new
]


def generation(topology: str) -> str:
  return topology.split(":")[0]


def slice_name(topology: str) -> str:
  """gcloud's --accelerator-type: 'v5p:4x4x4' -> 'v5p-128', 'v5e:2x2' -> 'v5litepod-4'."""
  gen, dims = topology.split(":")
  chips = int(np.prod([int(d) for d in dims.split("x")]))
  return f"{GCLOUD_NAME.get(gen, gen)}-{chips * CORES_PER_CHIP.get(gen, 1)}"


def tpu_devices(topology: str):
  """Compile-only devices of a TPU slice; v4 as megacore (one device per chip)."""
  kwargs = {"chip_config_name": "megacore"} if generation(topology) == "v4" else {}
  return topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs).devices


def make_mesh(devices, shape) -> Mesh:
  grid = mesh_utils.create_device_mesh(tuple(shape), list(devices))
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _stage_config(row: Row):
  arg = f"size={row.rung}"
  c = {"lm": lm_config, "pm": pm_config, "ppo": ppo_config}[row.step].get_config(arg)
  c.model.remat_policy = row.remat
  c.model.dtype = row.dtype
  if row.step == "ppo":  # data.* as the other steps spell it: responses, prompt + new tokens
    # the rollout's sequence is the PM's seq_len (prompt budget = it - the new tokens)
    c.data = {"batch_size": row.batch or c.ppo.batch_size,
              "seq_len": row.seq_len or int(pm_config.get_config(arg).data.seq_len)}
    c.optim.grad_accum_steps = 1
    return c
  if row.batch:
    c.data.batch_size = row.batch
  if row.seq_len:
    c.data.seq_len = row.seq_len
  c.optim.grad_accum_steps = row.accum
  return c


def _lm_step(c):
  model = Transformer(c.model)
  b, s = c.data.batch_size, c.data.seq_len
  batch = {k: jax.ShapeDtypeStruct((b, s), jnp.int32) for k in lm.BATCH_NDIMS}
  return model, lm.make_train_step(model, c.optim.grad_accum_steps), (b, s), batch, lm.BATCH_NDIMS


def _pm_step(c):
  model = Transformer(pm.model_config(c))
  b, s = c.data.batch_size, c.data.seq_len
  batch = {"tokens": jax.ShapeDtypeStruct((b, 2, s), jnp.int32),
           "mask": jax.ShapeDtypeStruct((b, 2, s), jnp.int32),
           "eoc_pos": jax.ShapeDtypeStruct((b, 2), jnp.int32)}
  step = pm.make_train_step(model, lm_weight=c.pm.lm_loss_weight,
                            center_weight=c.pm.center_weight,
                            accum_steps=c.optim.grad_accum_steps)
  return model, step, (2 * b, s), batch, pm.BATCH_NDIMS


def _lower_ppo(c, mesh):
  """PPO's update program lowered with its PPOState (policy with the LM head, value model
  with the scalar head, both AdamW states) and one iteration's rollout batch, abstract."""
  policy_cfg = ml_collections.ConfigDict(c.model.to_dict())
  value_cfg = ml_collections.ConfigDict(c.model.to_dict())
  policy_cfg.heads, value_cfg.heads = ("lm",), ("scalar",)
  policy, value = Transformer(policy_cfg), Transformer(value_cfg)
  tx, vtx = optimizer.make(c.optim, 10_000), optimizer.make(c.value_optim, 10_000)
  example = jnp.zeros((mesh_lib.batch_size_divisor(mesh), 8), jnp.int32)
  abstract, sh = ppo_stage.state_shardings(policy, value, tx, vtx, example, mesh)
  b, s, t = c.data.batch_size, c.data.seq_len, c.sampling.max_new_tokens
  shapes = {"tokens": ((b, s), jnp.int32), "mask": ((b, s), jnp.int32),
            "response": ((b, t), jnp.int32), "response_mask": ((b, t), jnp.int32),
            "scores": ((b,), jnp.float32)}
  shapes.update({k: ((b, t), jnp.float32) for k in ("ref_logp", "sampler_logp")})
  batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=mesh_lib.batch_sharding(mesh, len(shape)))
           for k, (shape, dtype) in shapes.items()}
  assert set(batch) == set(ppo_stage.BATCH_KEYS)
  with mesh_lib.activate(mesh):
    update = jax.jit(ppo.make_update(policy, value, c.ppo),
                     in_shardings=(sh, {k: v.sharding for k, v in batch.items()}),
                     out_shardings=(sh, mesh_lib.replicated(mesh)), donate_argnums=(0,))
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract, sh)
    return update.lower(abstract, batch), abstract, batch


# step name -> builder(config) -> (model, step_fn, example token shape, abstract batch,
# batch ndims); "ppo" has its own state and is lowered by `_lower_ppo`.
STEPS = {"lm": _lm_step, "pm": _pm_step, "ppo": None}


@contextlib.contextmanager
def no_persistent_cache():
  """Keeps compile-only TPU programs out of JAX's persistent cache (a test session may have
  one on): they cannot be loaded back without a TPU, so each read would only warn."""
  enabled = jax.config.jax_enable_compilation_cache
  compilation_cache.reset_cache()
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()


def lower_row(row: Row, devices=None):
  """`row`'s train step lowered for its slice: (lowered, stage config, abstract state, batch).

  The devices are the slice's, so the program is lowered for TPU whatever this host is:
  platform-dependent code (`transformer.matmul`) takes its TPU branch.
  """
  c = _stage_config(row)
  runner.validate_model(c.model)
  devices = tpu_devices(row.topology) if devices is None else devices
  mesh = make_mesh(devices, row.mesh)
  if row.step == "ppo":
    lowered, abstract, batch = _lower_ppo(c, mesh)
    return lowered, c, abstract, batch
  model, step_fn, example_shape, batch, ndims = STEPS[row.step](c)
  tx = optimizer.make(c.optim, 10_000)
  abstract, shardings = state_lib.abstract_and_shardings(
      model, tx, jnp.zeros(example_shape, jnp.int32), mesh)
  with mesh_lib.activate(mesh):
    jitted, batch_sh = runner.compile_step(step_fn, shardings, mesh, ndims)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh[k])
             for k, v in batch.items()}
    lowered = jitted.lower(abstract, batch)
  return lowered, c, abstract, batch


def compile_row(row: Row, devices=None) -> dict:
  """Lowers and compiles `row`'s train step for its slice; returns per-device bytes."""
  devices = tpu_devices(row.topology) if devices is None else devices
  t0 = time.perf_counter()
  lowered, c, abstract, batch = lower_row(row, devices)
  t1 = time.perf_counter()
  arg_bytes = _shard_bytes(abstract) + _shard_bytes(batch)
  try:
    with no_persistent_cache():
      ma = lowered.compile().memory_analysis()
    # The state is donated, so outputs alias arguments: live peak = args + outputs - aliased
    # + temporaries (+ the program itself).
    out_b, alias_b = ma.output_size_in_bytes, ma.alias_size_in_bytes
    temp_b = ma.temp_size_in_bytes
    total = ma.argument_size_in_bytes + out_b - alias_b + temp_b + ma.generated_code_size_in_bytes
    arg_bytes, error = ma.argument_size_in_bytes, ""
  except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a program over HBM
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    found = re.search(r"\(([\d.]+)([KMGT])\)", str(e))
    temp_b = float(found.group(1)) * 1024 ** "KMGT".index(found.group(2)) * 1024 if found else 0
    out_b = alias_b = 0
    total = arg_bytes + temp_b
    error = str(e).splitlines()[0][:200]
  t2 = time.perf_counter()
  gen = generation(row.topology)
  hbm = HBM_GIB.get(gen, 0) * GIB
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  tokens = (2 if row.step == "pm" else 1) * c.data.batch_size * c.data.seq_len
  if row.step == "ppo":  # the value model trains too; every epoch passes over the batch
    n_params += sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.value_params))
    tokens *= 2 * int(c.ppo.epochs)
  return {
      **dataclasses.asdict(row), "slice": slice_name(row.topology), "chips": len(devices),
      "batch": c.data.batch_size, "seq_len": c.data.seq_len, "params": n_params,
      "train_tflops_per_step": flops.train_flops_per_token(c.model, c.data.seq_len) * tokens / 1e12,
      "argument_gib": arg_bytes / GIB, "output_gib": out_b / GIB, "alias_gib": alias_b / GIB,
      "temp_gib": temp_b / GIB, "total_gib": total / GIB, "hbm_gib": hbm / GIB,
      "fits": bool(hbm and total <= hbm and not error), "compiler_error": error,
      "lower_s": round(t1 - t0, 1), "compile_s": round(t2 - t1, 1),
  }


def _shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""
  return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def markdown(results: list[dict]) -> str:
  head = ("| rung | step | slice (topology) | mesh data×fsdp×tensor | remat | compute dtype "
          "| batch × seq (accum) | args GiB | temp GiB | total GiB | HBM GiB | fits "
          "| compile s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
  lines = [
      f"| {r['rung']} | {r['step'].upper()} | {slice_name(r['topology'])} (`{r['topology']}`) "
      f"| {'×'.join(map(str, r['mesh']))} | {r['remat']} | {r['dtype']} "
      f"| {r['batch']} × {r['seq_len']} ({r['accum']}) | {r['argument_gib']:.2f} "
      f"| {r['temp_gib']:.2f} | {r['total_gib']:.2f} | {r['hbm_gib']:.0f} "
      f"| {'yes' if r['fits'] else '**no**'} | {r['compile_s']:.0f} |" for r in results]
  return head + "\n".join(lines) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", default="", help="comma-separated rungs of PLAN to compile")
  p.add_argument("--rung", default="", help="an ad-hoc row instead of PLAN")
  p.add_argument("--step", default="pm", choices=sorted(STEPS))
  p.add_argument("--topology", default="v5p:2x2x1")
  p.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor; one may be -1")
  p.add_argument("--remat", default="full")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--batch", type=int, default=0)
  p.add_argument("--seq_len", type=int, default=0)
  p.add_argument("--accum", type=int, default=1)
  p.add_argument("--markdown", default="", help="also write the table to this file")
  p.add_argument("--jsonl", default="", help="append rows here; rows already in it are reused")
  a = p.parse_args(argv)
  if a.rung:
    n = len(tpu_devices(a.topology))
    mesh = [int(x) for x in a.mesh.split(",")]
    if -1 in mesh:
      mesh[mesh.index(-1)] = n // -int(np.prod(mesh))
    rows = [Row(a.rung, a.step, a.topology, tuple(mesh), a.remat, a.dtype, a.batch, a.seq_len,
                a.accum)]
  else:
    only = {r for r in a.only.split(",") if r}
    rows = [r for r in PLAN if not only or r.rung in only]
  done = {}
  if a.jsonl and os.path.exists(a.jsonl):
    with open(a.jsonl) as f:
      done = {_key(r): r for r in map(json.loads, filter(str.strip, f))}
  results = []
  for row in rows:
    r = done.get(_key(dataclasses.asdict(row)))
    if r is None:
      r = compile_row(row)
      if a.jsonl:
        with open(a.jsonl, "a") as f:
          f.write(json.dumps(r) + "\n")
    results.append(r)
    print(json.dumps(r), flush=True)
  if a.markdown:
    with open(a.markdown, "w") as f:
      f.write(markdown(results))


def _key(r: dict) -> tuple:
  """A row's identity; batch/seq 0 (config default) matches the resolved value loosely."""
  return (r["rung"], r["step"], r["topology"], tuple(r["mesh"]), r["remat"], r["dtype"],
          r["accum"])


if __name__ == "__main__":
  main()
