"""Multi-process runs: one JAX process per host, all of them running the same program.

`initialize` must run before anything touches a device (jax.devices(), a jit, an array),
which is why `hh_jax.main` calls it right after parsing the config. Where the settings come
from, first match wins:

1. `config.distributed` (coordinator_address, num_processes, process_id), if set;
2. the environment `launch/local_multiprocess.py` sets: JAX_COORDINATOR_ADDRESS,
   JAX_NUM_PROCESSES, JAX_PROCESS_ID;
3. a Cloud TPU VM (TPU chips on this host's PCI bus): `jax.distributed.initialize()` with no
   arguments, which reads the slice's workers from the TPU metadata;
4. otherwise a single process: nothing to do.

On CPU, cross-process collectives go through gloo, so 2 processes × 4 virtual devices on
one machine behave like a 2-host pod. After `initialize`, `jax.devices()` is the global
device list, meshes span every process, and the rest of the code (the shardings, the
compiled step, orbax checkpoints that every process writes its shards of into one directory,
metrics from process 0) needs no change.
"""
from __future__ import annotations

import glob
import os

import jax

from hh_jax.errors import UserError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def settings(dist_cfg=None, environ=None) -> dict:
  """(coordinator_address, num_processes, process_id) from config, then environment.

  Empty values ("" / 0 / -1) mean "not set". Returns a dict with `mode` in
  {"explicit", "tpu_auto", "single"}; pure, so it is testable without starting anything.
  """
  environ = os.environ if environ is None else environ
  cfg = dist_cfg.to_dict() if hasattr(dist_cfg, "to_dict") else dict(dist_cfg or {})
  address = str(cfg.get("coordinator_address") or environ.get(ENV_COORDINATOR, "") or "")
  num = int(cfg.get("num_processes") or environ.get(ENV_NUM_PROCESSES, 0) or 0)
  pid = cfg.get("process_id", -1)
  pid = int(pid if pid not in (None, "", -1) else environ.get(ENV_PROCESS_ID, -1))
  timeout = int(cfg.get("timeout_s") or 300)
  if address:
    if num < 1 or not 0 <= pid < num:
      raise UserError(f"distributed coordinator {address!r} needs num_processes >= 1 and "
                      f"0 <= process_id < num_processes (got {num}, {pid}); set "
                      "--config.distributed.num_processes/process_id or "
                      f"{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID}")
    if ":" not in address:
      raise UserError(f"distributed.coordinator_address={address!r} has no port; "
                      "use HOST:PORT, e.g. 10.0.0.2:8476")
    return {"mode": "explicit", "coordinator_address": address, "num_processes": num,
            "process_id": pid, "timeout_s": timeout}
  if num > 1:
    raise UserError(f"num_processes={num} but no coordinator address; set "
                    f"--config.distributed.coordinator_address=HOST:PORT or {ENV_COORDINATOR}")
  if _on_cloud_tpu_vm():
    return {"mode": "tpu_auto", "timeout_s": timeout}
  return {"mode": "single"}


def _on_cloud_tpu_vm() -> bool:
  """TPU chips on this host, found without initialising a backend."""
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # pylint: disable=broad-except  (a private API that may move)
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def is_initialized() -> bool:
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client is not None


def initialize(dist_cfg=None, environ=None) -> dict:
  """Starts the distributed runtime if this is a multi-process run; returns the settings.

  Idempotent: a second call (say a test that already initialised) does nothing.
  """
  s = settings(dist_cfg, environ)
  if s["mode"] == "single" or is_initialized():
    return s
  if s["mode"] == "tpu_auto":
    jax.distributed.initialize(initialization_timeout=s["timeout_s"])
    return s
  # Gloo gives CPU devices cross-process collectives; TPU/GPU backends ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(s["coordinator_address"], s["num_processes"], s["process_id"],
                             initialization_timeout=s["timeout_s"])
  return s


def sync(name: str) -> None:
  """Barrier across processes (no-op in one process), e.g. before reading another's file."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
