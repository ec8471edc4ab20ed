"""The host-malloc re-exec happens once, only where it applies, and with exactly the settings.

test_host_malloc.py checks which runs count as CPU runs and that a CPU run re-execs; here
the guard against re-executing again: the process `ensure()` starts sees the settings and
goes on, whatever else GLIBC_TUNABLES held, checked on hand-built environments and in a
real child process (with a timeout, so a re-exec loop fails instead of hanging).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hh_jax import host_malloc

T = host_malloc.TUNABLES
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def glibc(monkeypatch):
  """As on a glibc Linux host, with HH_JAX_HOST_MALLOC unset."""
  monkeypatch.setattr(host_malloc.sys, "platform", "linux")
  monkeypatch.setattr(host_malloc.platform, "libc_ver", lambda: ("glibc", "2.35"))
  monkeypatch.delenv("HH_JAX_HOST_MALLOC", raising=False)


@pytest.mark.parametrize("before,after", [
    ({}, {"GLIBC_TUNABLES": T}),
    ({"GLIBC_TUNABLES": ""}, {"GLIBC_TUNABLES": T}),
    ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, {"GLIBC_TUNABLES": "glibc.pthread.rseq=0:" + T}),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}),
    ({"GLIBC_TUNABLES": T, "X": "1"}, {"GLIBC_TUNABLES": T, "X": "1"}),
])
def test_env_with_tunables_adds_the_settings_once(glibc, before, after):
  assert host_malloc.env_with_tunables(before) == after
  assert host_malloc.env_with_tunables(after) == after  # applying twice changes nothing


@pytest.mark.parametrize("setting,libc,platform_,applies", [
    (None, "glibc", "linux", True), ("1", "glibc", "linux", True), ("0", "glibc", "linux", False),
    (None, "", "linux", False), (None, "musl", "linux", False), (None, "glibc", "darwin", False)])
def test_the_settings_apply_on_glibc_linux_unless_turned_off(monkeypatch, setting, libc,
                                                               platform_, applies):
  monkeypatch.setattr(host_malloc.sys, "platform", platform_)
  monkeypatch.setattr(host_malloc.platform, "libc_ver", lambda: (libc, "2.35" if libc else ""))
  if setting is None:
    monkeypatch.delenv("HH_JAX_HOST_MALLOC", raising=False)
  else:
    monkeypatch.setenv("HH_JAX_HOST_MALLOC", setting)
  want = {"GLIBC_TUNABLES": T} if applies else {}
  assert host_malloc.env_with_tunables({}) == want


def test_env_without_tunables_takes_out_exactly_the_settings():
  assert host_malloc.env_without_tunables({"GLIBC_TUNABLES": T, "A": "1"}) == {"A": "1"}
  assert host_malloc.env_without_tunables({"GLIBC_TUNABLES": "glibc.pthread.rseq=0:" + T}) == {
      "GLIBC_TUNABLES": "glibc.pthread.rseq=0"}
  assert host_malloc.env_without_tunables({}) == {}


@pytest.mark.parametrize("user", ["", "glibc.pthread.rseq=0"])
def test_the_reexeced_process_does_not_exec_again(glibc, monkeypatch, user):
  execs = []
  monkeypatch.setattr(host_malloc.os, "execve", lambda exe, argv, env: execs.append(dict(env)))
  monkeypatch.setattr(host_malloc, "cpu_run", lambda env=None: True)
  monkeypatch.setenv("GLIBC_TUNABLES", user)
  host_malloc.ensure()
  assert [e["GLIBC_TUNABLES"] for e in execs] == [":".join(x for x in (user, T) if x)]
  # The new process starts with the environment it was given: it must go on, not exec.
  monkeypatch.setattr(host_malloc.os, "environ", execs[0])
  host_malloc.ensure()
  assert len(execs) == 1


@pytest.mark.parametrize("env", [{"HH_JAX_HOST_MALLOC": "0"}, {"JAX_PLATFORMS": "tpu"},
                                 {"JAX_PLATFORMS": "cuda"}])
def test_no_exec_where_the_settings_do_not_apply(glibc, monkeypatch, env):
  execs = []
  monkeypatch.setattr(host_malloc.os, "execve", lambda *a: execs.append(a))
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  host_malloc.ensure()
  assert execs == []


def test_a_real_process_execs_exactly_once():
  """`python -c` calling ensure(): its code runs twice (before and after the exec), once
  with the settings; a second exec would run it a third time, a loop until the timeout."""
  if not (sys.platform.startswith("linux") and host_malloc.platform.libc_ver()[0] == "glibc"):
    pytest.skip("the settings apply on glibc Linux only")
  code = ("import os, sys; sys.path.insert(0, os.getcwd()); "
          "print('start', os.environ.get('GLIBC_TUNABLES', ''), flush=True); "
          "from hh_jax import host_malloc; host_malloc.ensure(); print('ran', flush=True)")
  env = host_malloc.env_without_tunables({**os.environ, "JAX_PLATFORMS": "cpu"})
  env.pop("HH_JAX_HOST_MALLOC", None)
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60, check=True)
  assert out.stdout.splitlines() == ["start " + env.get("GLIBC_TUNABLES", ""),
                                     "start " + ":".join(
                                         x for x in (env.get("GLIBC_TUNABLES"), T) if x),
                                     "ran"], out.stdout + out.stderr
