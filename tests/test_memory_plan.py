"""The 13M PM step compiles for a small TPU slice on this CPU and reports per-chip memory.

Needs libtpu (requirements-tpu.txt) for the TPU compiler; skipped without it. The full plan
(every rung up to 52B) is `python bench/memory_plan.py`, too slow for the suite.
"""
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("libtpu", reason="libtpu is not installed: pip install -r requirements-tpu.txt "
                    "to compile for TPU topologies on a CPU machine")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import memory_plan  # noqa: E402
from configs import models  # noqa: E402
from configs import pm as pm_config  # noqa: E402
from hh_jax.model.transformer import Transformer  # noqa: E402


def test_13m_pm_step_compiles_for_v5p_8():
  row = memory_plan.Row("13m", "pm", "v5p:2x2x1", (1, 2, 2), remat="full", dtype="bfloat16",
                        batch=8, seq_len=128)
  try:
    devices = memory_plan.tpu_devices(row.topology)
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"libtpu cannot describe {row.topology} here: {str(e).splitlines()[0][:200]}")
  r = memory_plan.compile_row(row, devices)
  assert r["slice"] == "v5p-8" and r["chips"] == 4
  assert r["compiler_error"] == "" and r["fits"]
  # The state is float32 params + two Adam moments, sharded 4 ways (fsdp × tensor), and the
  # compiler's argument bytes agree with the shard arithmetic.
  state_gib = 3 * 4 * r["params"] / 4 / memory_plan.GIB
  assert state_gib <= r["argument_gib"] < 1.1 * state_gib
  assert 0 < r["total_gib"] < r["hbm_gib"] == 95


def test_slice_names_follow_gcloud():
  assert memory_plan.slice_name("v5p:4x4x4") == "v5p-128"
  assert memory_plan.slice_name("v4:4x4x8") == "v4-256"
  assert memory_plan.slice_name("v5e:16x16") == "v5litepod-256"


def test_llama_ppo_update_compiles_for_v5p_8_with_both_models_sharded():
  """The PPO row: policy + value model and both AdamW states of a GQA Llama-family rung."""
  row = memory_plan.Row("llama-test", "ppo", "v5p:2x2x1", (1, 2, 2), remat="full",
                        dtype="bfloat16", batch=16)
  try:
    devices = memory_plan.tpu_devices(row.topology)
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"libtpu cannot describe {row.topology} here: {str(e).splitlines()[0][:200]}")
  r = memory_plan.compile_row(row, devices)
  # the rollout's sequence: the PM's seq_len (the prompt budget is it minus the new tokens)
  pm_seq = pm_config.get_config("size=llama-test").data.seq_len
  assert r["compiler_error"] == "" and r["fits"] and r["seq_len"] == pm_seq
  # Both trainable models are in the state: the policy (LM head) and the value (scalar head).
  counts = {}
  for heads in (("lm",), ("scalar",)):
    cfg = models.get("llama-test")
    cfg.heads = heads
    tree = jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 8), jnp.int32))["params"]
    counts[heads] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(tree)))
  assert r["params"] == counts[("lm",)] + counts[("scalar",)]
  # float32 params + two Adam moments over 4 chips, at least (TPU tiles pad arrays this small).
  assert r["argument_gib"] >= 3 * 4 * r["params"] / 4 / memory_plan.GIB
