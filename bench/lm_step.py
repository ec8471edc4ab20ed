"""LM train step throughput and MFU, beside the PyTorch GPT-2 peer on the same shape.

  python bench/lm_step.py [--size 13m --vocab 8192 --batch 8 --seq 256 --steps 5]

Prints one JSON object. MFU divides by a matmul peak measured in this same run; the peer
(bench/peers, `make bench-peers`) is held open and takes turns with ours step by step, so the
ratios compare like with like: `speedup_vs_peer` (medians), `_paired` (median of per-round
ratios), `_best` (fastest steps), each also against the peer given our allocator settings.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import lm as lm_config  # noqa: E402
from configs import models  # noqa: E402
from hh_jax.model import flops  # noqa: E402
from hh_jax.model.transformer import Transformer  # noqa: E402
from hh_jax.parallel import mesh as mesh_lib  # noqa: E402
from hh_jax.train import lm, optimizer, runner, state as state_lib  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--size", default="13m")
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--steps", type=int, default=10, help="rounds of one step each")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--remat", default="none")
  p.add_argument("--layers", choices=("config", "scan", "unroll"), default="config",
                 help="the rung's model.scan_layers, or force nn.scan / an unrolled stack")
  p.add_argument("--no_peer", action="store_true")
  args = p.parse_args()

  cfg = models.get(args.size)
  cfg.vocab_size, cfg.max_len, cfg.dtype, cfg.remat_policy = args.vocab, args.seq, args.dtype, args.remat
  if args.layers != "config":
    cfg.scan_layers = args.layers == "scan"
  optim_cfg = lm_config.get_config(f"size={args.size}").optim
  mesh = mesh_lib.one_device_mesh()
  model = Transformer(cfg)
  tx = optimizer.make(optim_cfg, 1000)
  state, shardings = state_lib.create(model, tx, jnp.zeros((args.batch, args.seq), jnp.int32),
                                      mesh, seed=0)
  rng = np.random.default_rng(0)
  window = rng.integers(3, args.vocab, size=(args.batch, args.seq + 1)).astype(np.int32)
  batch = {"inputs": window[:, :-1], "targets": window[:, 1:],
           "mask": np.ones((args.batch, args.seq), np.int32)}  # each [batch, seq]
  with mesh_lib.activate(mesh):
    step, batch_sh = runner.compile_step(lm.make_train_step(model), shardings, mesh,
                                         lm.BATCH_NDIMS)
    batch = runner.to_global(batch, batch_sh)
    holder = [state]

    def one_step():
      holder[0], metrics = step(holder[0], batch)  # the state is donated: keep the new one
      return metrics["loss"]

    # Ours and each peer take turns step by step, so a slow spell of this shared machine
    # lands on both sides of the ratio.
    times, peer_times, peers = harness.against_peers(
        one_step, "lm", rounds=args.steps, use_peer=not args.no_peer, n_layer=cfg.n_layers,
        d_model=cfg.d_model, n_head=cfg.n_heads, vocab=args.vocab, seq=args.seq,
        batch=args.batch)

  step_time = harness.median(times)
  tokens = args.batch * args.seq
  flops_per_token = flops.train_flops_per_token(cfg, args.seq)
  peak = harness.measure_matmul_peak()
  ours = tokens / step_time
  result = {
      "bench": "lm_step", "size": args.size, "vocab": args.vocab, "batch": args.batch,
      "seq": args.seq, "dtype": args.dtype, "scan_layers": cfg.scan_layers, "device": jax.devices()[0].device_kind,
      "jax": jax.__version__, "step_time_s": step_time, "tokens_per_s": ours,
      "model_flops_per_token": flops_per_token,
      "step_times_s": times, "achieved_flops_per_s": flops_per_token * ours,
      "matmul_peak_flops_per_s": peak, "mfu": flops_per_token * ours / peak,
  }
  # "default": the peer with glibc's allocator as PyTorch users get it; "same_malloc": the
  # peer given hh_jax's allocator settings too (hh_jax/host_malloc.py), which speed it up.
  for malloc, suffix in (("default", ""), ("tuned", "_same_malloc")):
    if malloc not in peers:
      continue
    theirs, info = peer_times[malloc], peers[malloc]
    peer_step = harness.median(theirs)
    result["peer" + suffix] = {"tokens_per_s": tokens / peer_step, "step_time_s": peer_step,
                               "step_times_s": theirs, "torch": info["torch"],
                               "threads": info["threads"]}
    result["peer_mfu" + suffix] = flops_per_token * tokens / peer_step / peak
    result["speedup_vs_peer" + suffix] = peer_step / step_time
    result["speedup_vs_peer_paired" + suffix] = harness.paired_ratio(times, theirs)
    result["speedup_vs_peer_best" + suffix] = min(theirs) / min(times)
  harness.emit(result)


if __name__ == "__main__":
  main()
