"""Scripted backends and a server launcher for the feedback tests.

`echo` replies "[<player>] you said: <the last message>" word by word, at once or with a
delay per word (`FEEDBACK_FAKE_DELAY` seconds), so a test knows each side's reply, can
catch a stream half way, and sees what a model would echo back (markup included).
`Server` runs `python -m hh_jax.feedback` on a free loopback port and stops it.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from hh_jax.feedback import store

REPO = pathlib.Path(__file__).resolve().parents[1]


class EchoBackend:
  def __init__(self, models, delay: float = 0.0):
    self.models = list(models)
    self.delay = delay

  def reply(self, player, context, seed):
    del seed
    said = store.split_turns(context)[-1]["human"]
    for word in f" [{player.name}] you said: {said}".split(" ")[1:]:
      if self.delay:
        time.sleep(self.delay)
      yield " " + word


def echo(runs, **_):
  """The `--backend=tests.feedback_fakes:echo` factory: one fake model per --models name."""
  return EchoBackend(runs, float(os.environ.get("FEEDBACK_FAKE_DELAY", "0")))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  """`python -m hh_jax.feedback` with `args` on a free 127.0.0.1 port, until `stop`."""

  def __init__(self, workdir, args, env=None, ready_timeout: float = 300.0):
    self.workdir, self.args = str(workdir), list(args)
    self.port = free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.log = open(os.path.join(self.workdir, f"server_{self.port}.log"), "w")  # noqa: SIM115
    env = {**os.environ, **(env or {})}
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "hh_jax.feedback", f"--workdir={self.workdir}",
         f"--port={self.port}", *self.args], cwd=REPO, env=env, stdout=self.log,
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + ready_timeout
    while True:
      if self.proc.poll() is not None:
        raise RuntimeError(f"feedback server exited {self.proc.returncode}:\n{self.output()}")
      if time.monotonic() > deadline:
        self.stop()
        raise RuntimeError(f"feedback server not up in {ready_timeout} s:\n{self.output()}")
      try:
        urllib.request.urlopen(self.url + "/api/state", timeout=2)
      except urllib.error.HTTPError as e:
        if e.code == 403:  # up, and refusing a request without a token
          break
      except OSError:
        pass
      time.sleep(0.2)

  def output(self) -> str:
    self.log.flush()
    with open(self.log.name) as f:
      return f.read()

  def kill(self) -> None:
    """SIGKILL: what a crash does (no shutdown handlers run)."""
    self.proc.send_signal(signal.SIGKILL)
    self.proc.wait(timeout=30)
    self.log.close()

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(timeout=20)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait(timeout=20)
    if not self.log.closed:
      self.log.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


def lines(workdir) -> list[dict]:
  with open(os.path.join(str(workdir), store.COMPARISONS), encoding="utf-8") as f:
    return [json.loads(x) for x in f]
