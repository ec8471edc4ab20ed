"""The glibc allocator settings are for CPU runs only, and only entry points apply them."""
from __future__ import annotations

import pytest

from hh_jax import host_malloc


@pytest.fixture
def no_devices(tmp_path, monkeypatch):
  """The module's device-file patterns moved from /dev to an empty folder; returns it."""
  patterns = tuple(p.replace("/dev/", f"{tmp_path}/", 1)
                   for p in host_malloc.ACCELERATOR_DEVICE_FILES)
  assert all(p.startswith(str(tmp_path)) for p in patterns)
  monkeypatch.setattr(host_malloc, "ACCELERATOR_DEVICE_FILES", patterns)
  return tmp_path


@pytest.mark.parametrize("platforms,want", [("cpu", True), ("CPU", True), ("cpu,tpu", True),
                                            ("tpu", False), ("cuda,cpu", False),
                                            ("tpu,cpu", False)])
def test_jax_platforms_decides_when_set(no_devices, platforms, want):
  (no_devices / "accel0").touch()  # JAX_PLATFORMS wins over what is attached
  assert host_malloc.cpu_run({"JAX_PLATFORMS": platforms}) is want


@pytest.mark.parametrize("device", [None, "accel0", "vfio/0", "nvidia0", "kfd", "vfio/vfio",
                                    "nvidiactl"])
def test_attached_accelerators_decide_otherwise(no_devices, device):
  if device:
    (no_devices / device).parent.mkdir(exist_ok=True)
    (no_devices / device).touch()
  # The vfio control node and nvidiactl exist without any device bound.
  want = device in (None, "vfio/vfio", "nvidiactl")
  assert host_malloc.cpu_run({}) is want


@pytest.mark.parametrize("platforms,reexec", [("cpu", True), ("tpu", False)])
def test_ensure_reexecs_only_a_cpu_run(no_devices, monkeypatch, platforms, reexec):
  calls = []
  monkeypatch.setattr(host_malloc.os, "execve", lambda exe, argv, env: calls.append(env))
  monkeypatch.setattr(host_malloc, "_applies", lambda: True)  # as on a glibc host
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  host_malloc.ensure()
  assert len(calls) == int(reexec)
  if reexec:
    assert host_malloc.TUNABLES in calls[0]["GLIBC_TUNABLES"]
