"""Child processes of tests: each one has a deadline and is stopped however its test ends.

`running(...)` is `subprocess.Popen(...)` as a context manager that kills the child if it
still runs when the block is left (an assertion failed, a wait timed out), reaps it and
closes its pipes, so a failing test never leaves a stage process training in the
background. Waits inside the block take their own timeouts (`communicate(timeout=)`,
`wait(timeout=)`, `subprocess.run(..., timeout=)`). Used by every test that starts a
process; tests/test_guards_procs.py checks that each such call has a timeout.
"""
from __future__ import annotations

import contextlib
import subprocess

GRACE_S = 30  # to reap a killed child


@contextlib.contextmanager
def running(*args, **kwargs):
  """Starts `subprocess.Popen(*args, **kwargs)`; on leaving the block, `stop`s it."""
  proc = subprocess.Popen(*args, **kwargs)  # pylint: disable=consider-using-with
  try:
    yield proc
  finally:
    stop(proc)


def stop(proc: subprocess.Popen) -> None:
  """Kills `proc` if it still runs, waits for it and closes its pipes."""
  if proc.poll() is None:
    proc.kill()
  try:
    proc.wait(timeout=GRACE_S)
  except subprocess.TimeoutExpired:
    pass
  for pipe in (proc.stdin, proc.stdout, proc.stderr):
    if pipe:
      pipe.close()
