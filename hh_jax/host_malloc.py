"""Keeps XLA:CPU's per-step scratch memory mapped between steps (glibc hosts).

XLA:CPU allocates each execution's temporary buffer (about 1 GB for a 13M-parameter train
step at batch 8 × 256) with `posix_memalign` from a worker thread. glibc serves a request
that large from a fresh `mmap` (a thread arena cannot hold it) and unmaps it on free, so
every step first-touches every page again: ~260k page faults and a quarter of the step
time on a CPU host. Sending all threads to the main arena with mmap off and trimming
deferred makes the second step reuse the first step's pages. Measured by
`bench/lm_step.py` (the step drops from ~2.9 s to ~2.3 s with zero faults per step).

It must run before XLA's threads first allocate, i.e. before the first computation;
`import hh_jax` does it. Set HH_JAX_HOST_MALLOC=0 to leave the allocator alone.
"""
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def tune() -> bool:
  """Applies the settings once; returns whether they are in effect (False off glibc)."""
  if os.environ.get("HH_JAX_HOST_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl or another libc: nothing to tune
    return False
  return bool(mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0)
              and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
