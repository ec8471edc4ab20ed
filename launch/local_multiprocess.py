"""Starts N copies of a command on this machine as one multi-process JAX job (CPU, gloo).

  python launch/local_multiprocess.py --num_processes=2 --devices_per_process=4 -- \\
      python -m hh_jax.main --config=configs/lm.py:size=test,runlocal=True --workdir=/tmp/mp

Each copy gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (read by
`hh_jax.parallel.multihost.initialize`) and `devices_per_process` virtual CPU devices, so
2 × 4 here is the same 8-device mesh as one process with 8 devices, split over two "hosts".
Output lines are prefixed with `[pI]`. If one process fails or the timeout passes, the
others are killed (their whole process groups), so a crashed peer never leaves the rest
waiting on a collective forever. Exit code: the first non-zero one, else 0.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(base: dict, index: int, num: int, port: int, devices: int) -> dict:
  env = dict(base)
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
  env["JAX_NUM_PROCESSES"] = str(num)
  env["JAX_PROCESS_ID"] = str(index)
  env["PYTHONUNBUFFERED"] = "1"
  return env


def _pump(proc, prefix: str, sink: list, echo: bool):
  for line in proc.stdout:
    sink.append(line)
    if echo:
      sys.stdout.write(f"{prefix} {line}")
      sys.stdout.flush()


def _kill(proc):
  if proc.poll() is None:
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # the group this launcher created for it
    except ProcessLookupError:
      pass


def launch(cmd: list[str], num_processes: int = 2, devices_per_process: int = 4,
           timeout_s: float = 600, port: int = 0, env: dict | None = None, cwd=None,
           echo: bool = True) -> tuple[list[int], list[str]]:
  """Runs `cmd` num_processes times; returns (exit codes, each process's output)."""
  port = port or free_port()
  base = dict(os.environ if env is None else env)
  procs, outputs, pumps = [], [], []
  try:
    for i in range(num_processes):
      p = subprocess.Popen(cmd, env=process_env(base, i, num_processes, port, devices_per_process),
                           cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
      sink: list[str] = []
      t = threading.Thread(target=_pump, args=(p, f"[p{i}]", sink, echo), daemon=True)
      t.start()
      procs.append(p)
      outputs.append(sink)
      pumps.append(t)
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
        break  # a failed peer would leave the others blocked in a collective
      time.sleep(0.1)
  finally:
    for p in procs:
      _kill(p)
    for p in procs:
      p.wait()
    for t in pumps:
      t.join(timeout=5)
  codes = [p.returncode for p in procs]
  return codes, ["".join(o) for o in outputs]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   usage="%(prog)s [options] -- COMMAND [ARGS...]")
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--timeout_s", type=float, default=3600)
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  argv = sys.argv[1:] if argv is None else argv
  if "--" not in argv:
    parser.error("put the command after --, e.g. -- python -m hh_jax.main --config=...")
  split = argv.index("--")
  args, cmd = parser.parse_args(argv[:split]), argv[split + 1:]
  if not cmd:
    parser.error("no command after --")
  codes, _ = launch(cmd, args.num_processes, args.devices_per_process, args.timeout_s, args.port)
  bad = [c for c in codes if c != 0]
  if bad:
    print(f"local_multiprocess: exit codes {codes}", file=sys.stderr)
  return bad[0] if bad else 0


if __name__ == "__main__":
  sys.exit(main())
