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
  monkeypatch.setattr(harness, "peer_python", lambda peer="gpt2": None)
  assert harness.open_peers("lm", n_layer=1) == {}
  assert "make bench-peers" in capsys.readouterr().err


# A --serve peer in miniature: metadata after "warm-up", then one reply per `step` line,
# each with an extra field as Tunix's PPO peer sends its phases.
FAKE_PEER = """
import json, sys
print(json.dumps({"task": sys.argv[sys.argv.index("--task") + 1], "argv": sys.argv[1:]}),
      flush=True)
for i, line in enumerate(sys.stdin):
  if line.strip() != "step":
    break
  print(json.dumps({"step_time_s": 1.0 + i, "rollout_s": 0.5}), flush=True)
"""


def fake_peer(harness, tmp_path, name, *, with_env=True):
  script = tmp_path / f"{name}_peer.py"
  script.write_text(FAKE_PEER)
  venv = tmp_path / f"venv-{name}"
  if with_env:
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
  return harness.PeerSpec(script, venv, f"bench-peers-{name}", mallocs=("tuned",))


def test_against_peers_opens_a_named_peer_and_leaves_out_one_without_env(
    harness, monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(harness.PEERS, "fake", fake_peer(harness, tmp_path, "fake"))
  monkeypatch.setitem(harness.PEERS, "gone", fake_peer(harness, tmp_path, "gone",
                                                       with_env=False))
  monkeypatch.setattr(harness, "interleave", lambda fn, peers, *, rounds, warmup: (
      [fn() for _ in range(rounds)],
      {name: [p.step() for _ in range(rounds)] for name, p in peers.items()}))
  ours, theirs, info = harness.against_peers(lambda: 0.5, "ppo", rounds=2, warmup=0,
                                             peer=("gone", "fake"), n_layer=4, batch=None)
  assert ours == [0.5, 0.5] and theirs == {"fake": [1.0, 2.0]}  # keyed by the peer's name
  assert info["fake"]["task"] == "ppo"
  assert info["fake"]["argv"] == ["--task", "ppo", "--serve", "--n_layer", "4"]  # None: no flag
  assert [r["rollout_s"] for r in info["fake"]["replies"]] == [0.5, 0.5]
  assert harness.reply_medians(info["fake"]["replies"]) == {"step_time_s": 1.5,
                                                            "rollout_s": 0.5}
  assert "make bench-peers-gone" in capsys.readouterr().err


def test_peer_key_keeps_the_gpt2_names(harness):
  assert harness.peer_key("gpt2", "tuned", ("default", "tuned")) == "tuned"
  assert harness.peer_key("tunix", "tuned", ("tuned",)) == "tunix"
  assert harness.peer_key("tunix", "default", ("default", "tuned")) == "tunix_default"


def test_decode_bytes_per_step_counts_weights_once_and_valid_kv(harness):
  """The sampler's physical limit reads every weight once (the tied embedding as the LM
  head, not the learned position table) and keys + values of the context per row."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from configs import models  # pylint: disable=g-import-not-at-top
  from hh_jax.model import transformer  # pylint: disable=g-import-not-at-top
  cfg = models.get("test")
  model = transformer.Transformer(cfg)
  params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                      jnp.zeros((1, 8), jnp.int32)))["params"])
  pos = cfg.max_len * cfg.d_model * 4 if cfg.pos_embedding == "learned" else 0
  weights = sum(x.size * 4 for x in jax.tree.leaves(params)) - pos
  kv = 2 * cfg.n_layers * 3 * transformer.kv_heads(cfg) * cfg.head_dim * 10.5 * 4
  assert harness.decode_bytes_per_step(cfg, params, 3, 10.5) == pytest.approx(weights + kv)
  assert harness.measure_read_bandwidth(nbytes=1 << 20, repeats=2) > 0
