"""bench/harness.py's alternation of our steps with the peer's (no peer env needed)."""
import importlib
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.fixture(scope="module")
def harness():
  # Importing the harness re-execs an entry point with allocator settings; not pytest.
  old = os.environ.get("HH_JAX_HOST_MALLOC")
  os.environ["HH_JAX_HOST_MALLOC"] = "0"
  sys.path.insert(0, BENCH)
  try:
    yield importlib.import_module("harness")
  finally:
    sys.path.remove(BENCH)
    if old is None:
      os.environ.pop("HH_JAX_HOST_MALLOC")
    else:
      os.environ["HH_JAX_HOST_MALLOC"] = old


class FakePeer:
  def __init__(self, name, log, seconds):
    self.name, self.log, self.seconds = name, log, list(seconds)

  def step(self):
    self.log.append(self.name)
    return self.seconds.pop(0)


def test_interleave_alternates_one_step_each_and_pairs_rounds(harness):
  log = []

  def ours():
    log.append("ours")
    return 0

  peers = {"a": FakePeer("a", log, [2.0, 4.0, 9.0]), "b": FakePeer("b", log, [1.0, 1.0, 1.0])}
  times, theirs = harness.interleave(ours, peers, rounds=3, warmup=1, pause_s=0)
  assert log == ["ours"] + ["ours", "a", "b"] * 3  # one warm-up, then strict turns
  assert len(times) == 3 and theirs == {"a": [2.0, 4.0, 9.0], "b": [1.0, 1.0, 1.0]}


def test_paired_ratio_is_the_median_of_same_round_ratios(harness):
  # A slow spell in round 2 slows both sides; pairing cancels it where medians of each
  # side would not line up.
  ours, theirs = [1.0, 3.0, 1.0], [2.0, 6.0, 2.5]
  assert harness.paired_ratio(ours, theirs) == pytest.approx(2.0)


def test_open_peers_without_the_env_gives_none(harness, monkeypatch, capsys):
  monkeypatch.setattr(harness, "peer_python", lambda: None)
  assert harness.open_peers("lm", n_layer=1) == {}
  assert "make bench-peers" in capsys.readouterr().err
