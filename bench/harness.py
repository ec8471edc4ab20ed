"""Shared plumbing for hh_jax's benchmarks: timing, a matmul peak, the peer.

A number from bench/ is meant to be read beside two others measured in the
same run on the same machine: the machine's own matmul peak (so MFU is honest
on whatever CPU or accelerator we landed on) and a peer's speed at the same shape
(so "fast" means faster than what a user would otherwise run). Absolute speeds
differ about 2x between the machines this project runs on, so neither may come
from a table.

Two peers (`PEERS`), each a script in bench/peers/ run as a subprocess with its
own venv's python, so hh_jax never imports them: "gpt2", Hugging Face GPT-2 in
PyTorch (bench/peers/.venv, `make bench-peers`), and "tunix", Google Tunix's
sampler and PPOLearner on the same JAX (bench/peers/.venv-tunix,
`make bench-peers-tunix`).

Typical use in a bench script:

  import harness
  ours, theirs, info = harness.against_peers(step, "lm", rounds=10, n_layer=4,
                                             d_model=512, n_head=8, vocab=8192,
                                             seq=256, batch=8)  # theirs: {} without the env
  peak = harness.measure_matmul_peak()
  harness.emit({"step_time_s": harness.median(ours), ...})

  # Tunix's PPOLearner beside ours (the peer also reports its phases per step):
  ours, theirs, info = harness.against_peers(step, "ppo", rounds=5, peer="tunix", ...)
  # theirs["tunix"]: iteration seconds; harness.reply_medians(info["tunix"]["replies"])
"""

import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hh_jax import host_malloc  # noqa: E402

host_malloc.ensure()  # before jax; CPU runs only: see hh_jax/host_malloc.py

import jax  # noqa: E402
import jax.numpy as jnp

PEERS_DIR = Path(__file__).resolve().parent / "peers"


@dataclasses.dataclass(frozen=True)
class PeerSpec:
  """One peer: its script, the venv whose python runs it, and how a bench opens it.

  `mallocs` are the allocator settings a bench opens it under by default, one process
  each. The PyTorch peer runs twice (as PyTorch users get it, and with hh_jax's settings);
  Tunix runs on the same JAX and XLA:CPU as ours, so only under ours ("tuned"): the
  comparison is of the two programs, everything under them held equal.
  """
  script: Path
  venv: Path
  make_target: str
  mallocs: tuple = ("default", "tuned")


PEERS = {
    "gpt2": PeerSpec(PEERS_DIR / "gpt2_peer.py", PEERS_DIR / ".venv", "bench-peers"),
    "tunix": PeerSpec(PEERS_DIR / "tunix_peer.py", PEERS_DIR / ".venv-tunix",
                      "bench-peers-tunix", mallocs=("tuned",)),
}
PEER_SCRIPT = PEERS["gpt2"].script


def time_fn(fn, *args, warmup=2, iters=5):
  """Wall-clock seconds of `fn(*args)`, one per timed call.

  JAX dispatch is asynchronous, so each call is blocked on
  (`jax.block_until_ready`) before the clock stops; otherwise we would time
  the dispatch, not the work. The warm-up calls absorb compilation.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return times


def measure_matmul_peak(dtype=jnp.float32, n=2048, repeats=10):
  """FLOP/s of a jitted [n, n] @ [n, n] `jnp.dot` on the default device.

  The best of `repeats` timed calls, since the peak is the least-disturbed
  run (the machine is shared); MFU divides by this instead of a spec-sheet
  number that a shared CPU never reaches.
  """
  kx, ky = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (n, n), dtype)  # [n, n]
  y = jax.random.normal(ky, (n, n), dtype)  # [n, n]
  dot = jax.jit(jnp.dot)
  best = min(time_fn(dot, x, y, warmup=2, iters=repeats))
  return 2 * n**3 / best


def measure_read_bandwidth(nbytes=256 << 20, repeats=10):
  """Bytes/s a jitted sum reads from a float32 buffer of `nbytes` (far above the caches).

  The best of `repeats`, as for the matmul peak: the sampler's physical limit per decode
  step is the bytes it must read (weights + the KV cache's valid slots) over this.
  """
  x = jnp.ones((nbytes // 4,), jnp.float32)  # [n]
  total = jax.jit(jnp.sum)
  best = min(time_fn(total, x, warmup=2, iters=repeats))
  return x.size * 4 / best


def decode_bytes_per_step(cfg, params, batch: int, context: float) -> float:
  """The least a decode step reads: every weight once (a tied embedding as the LM head;
  a learned position table is a lookup, left out) and the keys and values of `context`
  earlier tokens per row, at the params' and the compute dtype's sizes."""
  weights = sum(x.size * x.dtype.itemsize for name, sub in params.items()
                if name != "pos_embedding" for x in jax.tree.leaves(sub))
  from hh_jax.model import transformer  # pylint: disable=g-import-not-at-top
  n_kv = transformer.kv_heads(cfg)
  itemsize = jnp.dtype(cfg.dtype).itemsize
  kv = 2 * cfg.n_layers * batch * n_kv * cfg.head_dim * context * itemsize
  return float(weights + kv)


def peer_python(peer="gpt2"):
  """The peer venv's python, or None when its `make` target has not run."""
  python = PEERS[peer].venv / "bin" / "python"
  return python if python.exists() else None


def _missing_env(peer):
  spec = PEERS[peer]
  root = PEERS_DIR.parent.parent
  where = spec.venv.relative_to(root) if spec.venv.is_relative_to(root) else spec.venv
  return f"no {peer} peer env at {where} (run `make {spec.make_target}`)"


class PeerProcess:
  """A peer script held open in --serve mode: one `step()` is one timed peer step.

  Timing ours and the peer in separate blocks lets a slow spell of this shared VM (it
  swings 10-30% over minutes) land on one side only; holding the peer open lets a bench
  alternate them step by step instead (`interleave`). Every reply is kept whole in
  `replies` (a peer may report more than its step time: Tunix's PPO phases).
  """

  def __init__(self, task, *, malloc="default", peer="gpt2", **shape):
    python = peer_python(peer)
    if python is None:
      raise FileNotFoundError(_missing_env(peer))
    cmd = [str(python), str(PEERS[peer].script), "--task", task, "--serve"]
    for key, value in shape.items():
      if value is not None:
        cmd += [f"--{key}", str(value)]
    env = (host_malloc.env_with_tunables() if malloc == "tuned"
           else host_malloc.env_without_tunables())
    # stderr to a file, not a pipe: a chatty peer must never block on a full pipe.
    self.stderr = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.stderr, text=True, env=env)
    self.info = self._read()  # task, shape, versions; sent after the peer's warm-up
    self.replies = []

  def _read(self):
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      self.stderr.seek(0)
      tail = self.stderr.read().strip().splitlines()[-5:]
      raise RuntimeError(f"peer exited ({self.proc.returncode}): " + " | ".join(tail))
    return json.loads(line)

  def step(self):
    """Seconds of one peer step, timed inside the peer."""
    self.proc.stdin.write("step\n")
    self.proc.stdin.flush()
    reply = self._read()
    self.replies.append(reply)
    return reply["step_time_s"]

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.close()  # EOF ends the serve loop
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
    self.stderr.close()


def peer_key(peer, malloc, mallocs):
  """The name a peer process goes by in the dicts a bench gets back.

  The PyTorch peer keeps its allocator names ("default", "tuned"), as the benches have
  always read them; any other peer goes by its own name ("tunix"), with the allocator
  appended only when it runs under more than one.
  """
  if peer == "gpt2":
    return malloc
  return peer if len(mallocs) == 1 else f"{peer}_{malloc}"


def open_peers(task, mallocs=None, peer="gpt2", **shape):
  """{name: PeerProcess} for each allocator setting (`peer_key`), or {} (with a note on
  stderr) without the peer's env or when it fails to start."""
  mallocs = tuple(mallocs or PEERS[peer].mallocs)
  if peer_python(peer) is None:
    print(f"harness: {_missing_env(peer)}; {peer} peer numbers left out", file=sys.stderr)
    return {}
  peers = {}
  try:
    for malloc in mallocs:
      peers[peer_key(peer, malloc, mallocs)] = PeerProcess(task, malloc=malloc, peer=peer,
                                                           **shape)
  except RuntimeError as e:
    print(f"harness: {peer}: {e}; {peer} peer numbers left out", file=sys.stderr)
    close_peers(peers)
    return {}
  return peers


def close_peers(peers):
  for peer in peers.values():
    peer.close()


def interleave(fn, peers, *, rounds, warmup=2, pause_s=0.25):
  """Times `fn` (ours) and one step of each peer in turn, `rounds` times.

  Returns (our times, {name: peer times}), index i of each from the same round, so a slow
  spell of the machine hits both sides of a ratio. The pause after every step lets the
  threads that just ran (OpenMP's and XLA's spin before they sleep) go idle first.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn())
  ours, theirs = [], {name: [] for name in peers}
  for _ in range(rounds):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ours.append(time.perf_counter() - t0)
    time.sleep(pause_s)
    for name, peer in peers.items():
      theirs[name].append(peer.step())
      time.sleep(pause_s)
  return ours, theirs


def against_peers(fn, task, *, rounds, warmup=2, use_peer=True, peer="gpt2", **shape):
  """`interleave` with the peers for `task` opened and closed around it.

  `peer` names one peer of `PEERS` or a tuple of them, all taking turns with ours in the
  same rounds. Returns (our times, {name: peer times}, {name: peer metadata}), names as
  `peer_key` gives them, each metadata dict with the peer's whole replies under
  "replies"; a peer without its env (or with use_peer=False) is left out of both dicts,
  with a note on stderr, and ours are timed all the same.
  """
  names = (peer,) if isinstance(peer, str) else tuple(peer)
  peers = {}
  try:
    for name in names if use_peer else ():
      peers.update(open_peers(task, peer=name, **shape))
    ours, theirs = interleave(fn, peers, rounds=rounds, warmup=warmup)
  finally:
    close_peers(peers)
  return ours, theirs, {name: {**p.info, "replies": p.replies} for name, p in peers.items()}


def reply_medians(replies):
  """{key: median over steps} of a peer's numeric reply fields (e.g. Tunix's PPO phases)."""
  keys = [k for k in replies[0] if isinstance(replies[0][k], (int, float))] if replies else []
  return {k: statistics.median(r[k] for r in replies if k in r) for k in keys}


def paired_ratio(ours, theirs):
  """Median over rounds of (their time / our time) for the same round: above 1, ours is faster."""
  return statistics.median(t / o for o, t in zip(ours, theirs))


def emit(result):
  """Prints `result` as the one JSON object on stdout that a bench promises."""
  print(json.dumps(result), flush=True)


def median(times):
  """Median of `time_fn`'s list; less swayed by a neighbour's burst than mean."""
  return statistics.median(times)
