"""Shared plumbing for hh_jax's benchmarks: timing, a matmul peak, the peer.

A number from bench/ is meant to be read beside two others measured in the
same run on the same machine: the machine's own matmul peak (so MFU is honest
on whatever CPU or accelerator we landed on) and the PyTorch peer's speed at the
same shape (so "fast" means faster than what a user would otherwise run).
Absolute speeds differ about 2x between the machines this project runs on, so
neither may come from a table.

Runs in hh_jax's venv. It never imports torch: the peer runs as a subprocess
with bench/peers/.venv's python (created by `make bench-peers`).

Typical use in a bench script:

  import harness
  ours, theirs, info = harness.against_peers(step, "lm", rounds=10, n_layer=4,
                                             d_model=512, n_head=8, vocab=8192,
                                             seq=256, batch=8)  # theirs: {} without the env
  peak = harness.measure_matmul_peak()
  harness.emit({"step_time_s": harness.median(ours), ...})
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hh_jax import host_malloc  # noqa: E402

host_malloc.ensure()  # before jax: see hh_jax/host_malloc.py

import jax  # noqa: E402
import jax.numpy as jnp

PEERS_DIR = Path(__file__).resolve().parent / "peers"
PEER_SCRIPT = PEERS_DIR / "gpt2_peer.py"


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


def peer_python():
  """The peer venv's python, or None when `make bench-peers` has not run."""
  python = PEERS_DIR / ".venv" / "bin" / "python"
  return python if python.exists() else None


class PeerProcess:
  """gpt2_peer.py held open in --serve mode: one `step()` is one timed peer step.

  Timing ours and the peer in separate blocks lets a slow spell of this shared VM (it
  swings 10-30% over minutes) land on one side only; holding the peer open lets a bench
  alternate them step by step instead (`interleave`).
  """

  def __init__(self, task, *, malloc="default", **shape):
    python = peer_python()
    if python is None:
      raise FileNotFoundError("no peer env at bench/peers/.venv (run `make bench-peers`)")
    cmd = [str(python), str(PEER_SCRIPT), "--task", task, "--serve"]
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
    return self._read()["step_time_s"]

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.close()  # EOF ends the serve loop
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
    self.stderr.close()


def open_peers(task, mallocs=("default", "tuned"), **shape):
  """{malloc: PeerProcess} for each allocator setting, or {} (with a note) without the env."""
  if peer_python() is None:
    print("harness: no peer env at bench/peers/.venv (run `make bench-peers`);"
          " peer numbers left out", file=sys.stderr)
    return {}
  peers = {}
  try:
    for malloc in mallocs:
      peers[malloc] = PeerProcess(task, malloc=malloc, **shape)
  except RuntimeError as e:
    print(f"harness: {e}; peer numbers left out", file=sys.stderr)
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


def against_peers(fn, task, *, rounds, warmup=2, use_peer=True, **shape):
  """`interleave` with the peers for `task` opened and closed around it.

  Returns (our times, {malloc: peer times}, {malloc: peer metadata}); the dicts are empty
  without the peer env or with use_peer=False, and ours are timed all the same.
  """
  peers = open_peers(task, **shape) if use_peer else {}
  try:
    ours, theirs = interleave(fn, peers, rounds=rounds, warmup=warmup)
  finally:
    close_peers(peers)
  return ours, theirs, {name: peer.info for name, peer in peers.items()}


def paired_ratio(ours, theirs):
  """Median over rounds of (their time / our time) for the same round: above 1, ours is faster."""
  return statistics.median(t / o for o, t in zip(ours, theirs))


def emit(result):
  """Prints `result` as the one JSON object on stdout that a bench promises."""
  print(json.dumps(result), flush=True)


def median(times):
  """Median of `time_fn`'s list; less swayed by a neighbour's burst than mean."""
  return statistics.median(times)
