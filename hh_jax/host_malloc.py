"""Keeps XLA:CPU's per-step scratch memory mapped between steps (glibc hosts).

XLA:CPU allocates each execution's temporary buffer (about 1 GB for a 13M-parameter train
step at batch 8 × 256) with `posix_memalign` from a worker thread. glibc serves a request
that large from a fresh `mmap` (a thread arena cannot hold it) and unmaps it on free, so
every step first-touches every page again: ~250k page faults per step, a fifth of the
step time on a CPU host (measured with `getrusage` around `bench/lm_step.py`'s step).
With one arena, mmap off and trimming deferred, the second step reuses the first step's
pages and faults zero times.

glibc fixes a thread's arena when the thread first allocates, so the settings only hold
for certain when they are in the environment before the process starts: the entry points
(`python -m hh_jax.main`, the benches) re-exec themselves once with them (`ensure`).
`import hh_jax` also applies them with `mallopt`, which covers threads that allocate
later (a notebook). Set HH_JAX_HOST_MALLOC=0 to leave the allocator alone.
"""
import ctypes
import ctypes.util
import os
import platform
import sys

TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=68719476736")
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _applies() -> bool:
  return (os.environ.get("HH_JAX_HOST_MALLOC", "1") != "0" and sys.platform.startswith("linux")
          and platform.libc_ver()[0] == "glibc")


def env_with_tunables(env=None) -> dict:
  """A copy of `env` (default os.environ) whose GLIBC_TUNABLES carry the settings."""
  env = dict(os.environ if env is None else env)
  if _applies() and "glibc.malloc.arena_max" not in env.get("GLIBC_TUNABLES", ""):
    env["GLIBC_TUNABLES"] = ":".join(x for x in (env.get("GLIBC_TUNABLES"), TUNABLES) if x)
  return env


def env_without_tunables(env=None) -> dict:
  """A copy of `env` (default os.environ) with these settings taken out of GLIBC_TUNABLES."""
  env = dict(os.environ if env is None else env)
  rest = env.pop("GLIBC_TUNABLES", "").replace(TUNABLES, "").strip(":")
  if rest:
    env["GLIBC_TUNABLES"] = rest
  return env


def ensure() -> None:
  """Re-executes this process once with the settings in its environment (entry points only)."""
  env = env_with_tunables()
  if env.get("GLIBC_TUNABLES") != os.environ.get("GLIBC_TUNABLES"):
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def tune() -> bool:
  """mallopt the same settings now; returns whether that took (False off glibc)."""
  if not _applies():
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  return bool(mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0)
              and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
