"""Sampling throughput: the KV-cache sampler vs a full-recompute loop vs HF `generate`.

  python bench/sampling.py [--size 13m --vocab 8192 --batch 8,64 --prompt_len 64 --new_tokens 128]

Prints one JSON object per batch size: new tokens per second for
  cached   hh_jax.model.sampling.Sampler (prefill + compiled while_loop over a KV cache),
  naive    the same compiled loop re-running the whole [prompt + new] sequence every step,
  peer     Hugging Face GPT-2 `generate` with its KV cache (bench/peers), same shape,
  tunix    Google Tunix's `Sampler` (KV cache, compiled while_loop) on a Tunix Llama3 of the
           same depth and width, parameter-matched (SwiGLU width 1365: the same 12.6M
           non-embedding parameters), on the same jax/jaxlib (bench/peers/tunix_peer.py),
all at temperature 1 with no top-k/top-p and no stop token, so every row makes exactly
`new_tokens` tokens, and all in this one run on this machine: the peers are held open and
their calls alternate with ours (`speedup_vs_*_paired` is the median of the per-round ratios).

Two batch sizes by default because they are two regimes: at 8 rows a decode step is a
matrix-vector product per weight (memory- and kernel-bound: every weight is read for 8
tokens), at 64 rows (PPO and rejection-sampling rollouts run 32-512) it is a small GEMM.
The naive loop runs only up to `--naive_max_batch` rows (at 64 it takes minutes).

`share_of_bandwidth_limit`: ours against the physical limit measured in the same run, the
bytes a decode step must read (every weight once, the KV cache's valid slots at the mean
context) over the read bandwidth of a jitted sum (`harness.measure_read_bandwidth`).
"""
import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import models  # noqa: E402
from hh_jax.model import sampling, transformer  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--size", default="13m")
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--batch", default="8,64", help="comma-separated batch sizes, one JSON each")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--iters", type=int, default=5)
  p.add_argument("--naive_iters", type=int, default=1, help="the naive loop is slow")
  p.add_argument("--naive_max_batch", type=int, default=8)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--no_peer", action="store_true", help="neither peer")
  p.add_argument("--peers", default="gpt2,tunix", help="which peers of bench/harness.PEERS")
  args = p.parse_args()
  for batch in [int(b) for b in str(args.batch).split(",") if b]:
    run(args, batch)


def run(args, batch: int):
  """One batch size: ours, the naive loop and the peers, one JSON line."""
  cfg = models.get(args.size)
  cfg.vocab_size, cfg.dtype = args.vocab, args.dtype
  model = transformer.Transformer(cfg)
  params = jax.jit(lambda k: nn.unbox(model.init(k, jnp.zeros((1, 8), jnp.int32))["params"]))(
      jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, args.vocab, size=(batch, args.prompt_len)).astype(np.int32)
  settings = sampling.Settings(max_new_tokens=args.new_tokens, temperature=1.0)
  new_tokens = batch * args.new_tokens
  key = jax.random.PRNGKey(1)

  # Cached: the user-facing Sampler, host padding and transfers included.
  sampler = sampling.Sampler(cfg, params, buckets=(args.prompt_len,))
  t0 = time.perf_counter()
  out = sampler(list(prompts), key, settings)
  cached_first = time.perf_counter() - t0  # compile + one run
  assert (out["lengths"] == args.new_tokens).all()
  # The peers' samplers are held open and take turns with ours call by call, so a slow
  # spell of this shared machine lands on both sides of each ratio.
  cached, peer_times, peers = harness.against_peers(
      lambda: sampler(list(prompts), key, settings)["tokens"], "generate", rounds=args.iters,
      warmup=0, use_peer=not args.no_peer, peer=tuple(args.peers.split(",")),
      n_layer=cfg.n_layers, d_model=cfg.d_model,
      n_head=cfg.n_heads, vocab=args.vocab, batch=batch, prompt_len=args.prompt_len,
      new_tokens=args.new_tokens)

  cached_tps = new_tokens / harness.median(cached)
  result = {
      "bench": "sampling", "size": args.size, "vocab": args.vocab, "batch": batch,
      "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "dtype": args.dtype,
      "device": jax.devices()[0].device_kind, "jax": jax.__version__,
      # Token and position embeddings are a lookup, not compute: the peers match the rest.
      "params": sum(x.size for x in jax.tree.leaves(params)),
      "non_embedding_params": sum(leaf.size for name, sub in params.items()
                                  if name not in ("embedding", "pos_embedding")
                                  for leaf in jax.tree.leaves(sub)),
      "cached_tokens_per_s": cached_tps, "cached_call_s": harness.median(cached),
      "cached_first_call_s": cached_first,
  }
  # The physical limit in the same run: the bytes a decode step must read over the
  # measured read bandwidth (the mean context over the decode: prompt + half the reply).
  bandwidth = harness.measure_read_bandwidth()
  step_bytes = harness.decode_bytes_per_step(cfg, params, batch,
                                             args.prompt_len + args.new_tokens / 2)
  limit_tps = batch * bandwidth / step_bytes
  result.update({"read_bandwidth_gb_per_s": bandwidth / 1e9,
                 "bytes_per_decode_step": step_bytes,
                 "bandwidth_limit_tokens_per_s": limit_tps,
                 "share_of_bandwidth_limit": cached_tps / limit_tps})
  if batch <= args.naive_max_batch:
    # Naive: the same loop, no cache; compiled ahead so only the run is timed.
    mask = np.ones_like(prompts)
    naive_fn = jax.jit(functools.partial(sampling.sample_full_recompute, model, settings=settings))
    naive_exec = naive_fn.lower(params, prompts, mask, key=key).compile()
    naive = harness.time_fn(lambda: naive_exec(params, prompts, mask, key=key)["tokens"],
                            warmup=0, iters=args.naive_iters)
    naive_tps = new_tokens / harness.median(naive)
    result.update({"naive_tokens_per_s": naive_tps, "naive_call_s": harness.median(naive),
                   "speedup_vs_naive": cached_tps / naive_tps})
  if "default" in peers:  # HF generate with glibc's allocator, as PyTorch users get it
    theirs, info = peer_times["default"], peers["default"]
    result["peer"] = {"tokens_per_s": new_tokens / harness.median(theirs),
                      "step_time_s": harness.median(theirs), "step_times_s": theirs,
                      **{k: info[k] for k in ("torch", "transformers", "threads")}}
    result["speedup_vs_peer"] = harness.median(theirs) / harness.median(cached)
    result["speedup_vs_peer_paired"] = harness.paired_ratio(cached, theirs)
  if "tuned" in peers:  # the same peer given hh_jax's allocator settings (hh_jax/host_malloc.py)
    theirs = peer_times["tuned"]
    result["peer_same_malloc_tokens_per_s"] = new_tokens / harness.median(theirs)
    result["speedup_vs_peer_same_malloc"] = harness.median(theirs) / harness.median(cached)
  if "tunix" in peers:  # Tunix's Sampler, same JAX/XLA and our allocator settings
    theirs, info = peer_times["tunix"], peers["tunix"]
    result["tunix"] = {"tokens_per_s": new_tokens / harness.median(theirs),
                       "step_time_s": harness.median(theirs), "step_times_s": theirs,
                       **{k: info[k] for k in ("tunix", "jax", "jaxlib", "params",
                                               "non_embedding_params", "shape", "threads")}}
    result["cached_step_times_s"] = cached
    result["speedup_vs_tunix"] = harness.median(theirs) / harness.median(cached)
    result["speedup_vs_tunix_paired"] = harness.paired_ratio(cached, theirs)
  harness.emit(result)


if __name__ == "__main__":
  main()
