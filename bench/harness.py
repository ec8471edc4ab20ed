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
  times = harness.time_fn(step, state, batch)
  peak = harness.measure_matmul_peak()
  peer = harness.run_peer("lm", n_layer=4, d_model=512, n_head=8, vocab=8192,
                          seq=256, batch=8)
  harness.emit({"tokens_per_s": ..., "peer_tokens_per_s": peer and ...})
"""

import json
import statistics
import subprocess
import sys
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


def run_peer(task, *, timeout_s=1800, malloc="default", **shape):
  """Runs gpt2_peer.py for `task` at `shape` and returns its JSON as a dict.

  `shape` keys are the script's flags without dashes (n_layer, d_model,
  n_head, vocab, seq, batch, steps, warmup, threads, prompt_len, new_tokens,
  dtype). Returns None, with a note on stderr, when the peer env is missing
  or the run fails, so a benchmark still prints hh_jax's own numbers.

  malloc: "default" runs the peer with glibc's allocator as PyTorch users get it;
  "tuned" hands it hh_jax's settings too (hh_jax/host_malloc.py), which speeds PyTorch
  up as well, so a bench reports both ratios.
  """
  python = peer_python()
  if python is None:
    print("harness: no peer env at bench/peers/.venv (run `make bench-peers`);"
          " peer numbers left out", file=sys.stderr)
    return None
  cmd = [str(python), str(PEER_SCRIPT), "--task", task]
  for key, value in shape.items():
    if value is not None:
      cmd += [f"--{key}", str(value)]
  # Ours reach the peer through host_malloc.ensure()'s environment unless taken out.
  env = (host_malloc.env_with_tunables() if malloc == "tuned"
         else host_malloc.env_without_tunables())
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    print(f"harness: peer timed out after {timeout_s}s: {' '.join(cmd)}",
          file=sys.stderr)
    return None
  if proc.returncode != 0:
    tail = proc.stderr.strip().splitlines()[-5:]
    print(f"harness: peer failed ({proc.returncode}): " + "\n".join(tail),
          file=sys.stderr)
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result):
  """Prints `result` as the one JSON object on stdout that a bench promises."""
  print(json.dumps(result), flush=True)


def median(times):
  """Median of `time_fn`'s list; less swayed by a neighbour's burst than mean."""
  return statistics.median(times)
