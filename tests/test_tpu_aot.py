"""The LM and PM train steps, lowered for a TPU slice from this CPU host, are plain programs.

The XLA:CPU GEMM workarounds (`hh_jax/model/cpu_gemm.py`: a conditional around each
transpose, optimization barriers, a custom VJP) belong in CPU programs only. They are
chosen by the lowering platform, so a step compiled for TPU (AOT, with libtpu describing
a v5p slice; nothing runs) must hold no conditional and no optimization barrier, whatever
host traced it. Covers an unrolled stack (13m), a scanned, rematerialized one (tiny), and
the Llama family (GQA, SwiGLU, untied head) in the LM step and PPO's update.
"""
from __future__ import annotations

import os
import re
import sys

import pytest

pytest.importorskip("libtpu", reason="libtpu is not installed (pip install -r "
                    "requirements-tpu.txt): no TPU compiler to lower for a v5p topology here")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import memory_plan  # noqa: E402

TOPOLOGY = "v5p:2x2x1"  # v5p-8: 4 chips


@pytest.fixture(scope="module")
def devices():
  try:
    return memory_plan.tpu_devices(TOPOLOGY)
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"libtpu cannot describe {TOPOLOGY} here: {str(e).splitlines()[0][:200]}")


def _cpu_only_ops(text: str) -> dict:
  """Conditionals and optimization barriers in StableHLO or (compiled) HLO text."""
  return {"conditional": len(re.findall(r"\bconditional\(", text)),
          "opt-barrier": len(re.findall(r"\bopt-barrier\(|optimization_barrier", text))}


@pytest.mark.parametrize("rung,step,remat", [("13m", "lm", "none"), ("13m", "pm", "none"),
                                             ("tiny", "lm", "full"), ("tiny", "pm", "full"),
                                             ("llama-tiny", "lm", "full"),
                                             ("llama-tiny", "ppo", "full")])
def test_tpu_train_step_has_no_cpu_workarounds(devices, rung, step, remat):
  row = memory_plan.Row(rung, step, TOPOLOGY, (1, 2, 2), remat=remat, dtype="bfloat16",
                        batch=8, seq_len=128)
  lowered, c, _, _ = memory_plan.lower_row(row, devices)
  assert c.model.scan_layers == (rung != "13m")  # both stack structures are covered
  stablehlo = lowered.as_text()
  # The CPU branch (its barriers) is dropped at lowering; platform_dependent leaves a
  # one-branch case behind that the TPU compiler inlines.
  assert _cpu_only_ops(stablehlo)["opt-barrier"] == 0
  assert "dot_general" in stablehlo
  with memory_plan.no_persistent_cache():
    hlo = lowered.compile().as_text()
  assert _cpu_only_ops(hlo) == {"conditional": 0, "opt-barrier": 0}
