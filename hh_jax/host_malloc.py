"""Keeps XLA:CPU's per-step scratch memory mapped between steps (glibc CPU hosts only).

XLA:CPU allocates each execution's temporary buffer (about 1 GB for a 13M-parameter train
step at batch 8 × 256) with `posix_memalign` from a worker thread. glibc serves a request
that large from a fresh `mmap` (a thread arena cannot hold it) and unmaps it on free, so
every step first-touches every page again: ~250k page faults per step, a fifth of the
step time on a CPU host (measured with `getrusage` around `bench/lm_step.py`'s step).
With one arena, mmap off and trimming deferred, the second step reuses the first step's
pages and faults zero times.

glibc fixes a thread's arena when the thread first allocates, so the settings only hold
for certain when they are in the environment before the process starts: the CPU entry
points (`python -m hh_jax.main`, the benches through `bench/harness.py`) call `ensure()`,
which re-execs the process once with them in GLIBC_TUNABLES. Nothing happens on
`import hh_jax` (a notebook or a library user keeps its allocator; to get the settings
there, start it with GLIBC_TUNABLES set to `TUNABLES`).

Only CPU runs: `ensure()` does nothing when the run will use an accelerator, decided
before any JAX backend starts (`cpu_run`): JAX_PLATFORMS when it is set, else no TPU
(/dev/accel*, /dev/vfio/<group>) or GPU (/dev/nvidia<N>, /dev/kfd) device files. Whether
libtpu is installed says nothing (CI installs it on CPU machines to compile for TPU). TPU
VMs keep glibc's defaults: nobody has measured these settings, or MaxText's tcmalloc, on
one, and a TPU step's temporaries live in HBM, not in host malloc. Set HH_JAX_HOST_MALLOC=0 to
leave the allocator alone on a CPU host too.
"""
from __future__ import annotations

import glob
import os
import platform
import sys

TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=68719476736")

# Device files of attached accelerators: TPU v4/v5p (accel), v5e/v6e (a vfio group), NVIDIA
# GPUs (nvidia0, ...), AMD GPUs (kfd). /dev/nvidiactl or /dev/vfio/vfio alone is no device.
ACCELERATOR_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")


def _applies() -> bool:
  return (os.environ.get("HH_JAX_HOST_MALLOC", "1") != "0" and sys.platform.startswith("linux")
          and platform.libc_ver()[0] == "glibc")


def cpu_run(env=None) -> bool:
  """Whether a JAX process started with `env` (default os.environ) will compute on CPU.

  Cheap and backend-free, so it can run before the re-exec: JAX_PLATFORMS names the
  platforms in priority order when set; otherwise JAX takes an attached accelerator, whose
  device files are then present.
  """
  env = os.environ if env is None else env
  platforms = env.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_FILES)


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
  """Re-executes this process once with the settings in its environment, on a CPU run.

  For entry points only, before jax is imported; a no-op off glibc, with
  HH_JAX_HOST_MALLOC=0, or when the run will use an accelerator (`cpu_run`).
  """
  if not cpu_run():
    return
  env = env_with_tunables()
  if env.get("GLIBC_TUNABLES") != os.environ.get("GLIBC_TUNABLES"):
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
