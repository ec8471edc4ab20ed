"""SIGTERM as a request to stop at the next step boundary, agreed by every process.

A spot or preempted TPU VM gets SIGTERM and some seconds before SIGKILL. Dying at once
loses every step since the last checkpoint, so the handler only sets a flag; the training
loops (`runner.train_loop`, the PPO stage's loop) ask `should_stop(step)` once per step,
and on True they finish that step, save a checkpoint, flush metrics and raise
`errors.Preempted`, which `hh_jax.main` turns into exit status 75.

On a multi-host run each process gets its own SIGTERM, maybe not at the same step, and a
checkpoint is a collective: every process has to stop at the same step. The flags are
therefore OR-ed across processes (one tiny all-gather) every `sync_every` steps, so the
collective costs nothing per step; one process alone never stops by itself there.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np

_flag = threading.Event()
_previous = None  # the handler before `install`, put back by `uninstall`


def _handler(signum, frame):  # pylint: disable=unused-argument
  _flag.set()


def install() -> None:
  """Installs the SIGTERM handler at a stage's start (only the main thread may)."""
  global _previous
  if threading.current_thread() is not threading.main_thread():
    return
  _flag.clear()
  previous = signal.signal(signal.SIGTERM, _handler)
  if previous is not _handler:
    _previous = previous


def uninstall() -> None:
  """Puts the earlier SIGTERM handler back (a stage's close: a notebook or test goes on)."""
  global _previous
  if _previous is None or threading.current_thread() is not threading.main_thread():
    return
  signal.signal(signal.SIGTERM, _previous)
  _previous = None


def requested() -> bool:
  """This process got SIGTERM (not agreed with the others)."""
  return _flag.is_set()


def reset() -> None:
  """Forgets a request (for tests that run several stages in one process)."""
  _flag.clear()


def should_stop(step: int, sync_every: int = 10, force_sync: bool = False) -> bool:
  """True when the loop should stop after `step`, the same answer on every process.

  One process: the flag itself. Several: the OR of all flags, gathered every `sync_every`
  steps and whenever `force_sync` (pass it on checkpoint and last steps).
  """
  if jax.process_count() == 1:
    return _flag.is_set()
  if not force_sync and step % max(int(sync_every), 1):
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray(_flag.is_set(), np.int32))
  return bool(np.max(flags))
