"""PM train step at the 13M rung vs the PyTorch peer's reward-model step, as one JSON line.

Shape: 4 layers × d_model 512, vocab 8192, 8 comparisons × 2 replies × 256 tokens,
float32, right-padded with random lengths in [seq/2, seq] like the peer's batch. Our
step is `hh_jax.train.pm.make_train_step` compiled by `runner.compile_step` (the one the
pm stage runs, AdamW and clipping included) on one device. MFU divides the model FLOPs
by the matmul peak measured in this same run. The peer (bench/peers) is held open and takes
turns with ours step by step: `ratio` is peer step time / ours (medians), `ratio_paired` the
median of the per-round ratios, `ratio_best` over each side's fastest step; `*_same_malloc`
the same against the peer given our allocator settings.

  python bench/pm_step.py [--steps 10] [--no_peer] [--layers config|scan|unroll]
"""
import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from configs import common, models  # noqa: E402
from hh_jax.model.transformer import Transformer  # noqa: E402
from hh_jax.parallel import mesh as mesh_lib  # noqa: E402
from hh_jax.train import optimizer, pm, runner, state as state_lib  # noqa: E402


def make_batch(batch, seq, vocab, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, vocab, size=(batch, 2, seq)).astype(np.int32)  # [batch, 2, seq]
  lengths = rng.integers(seq // 2, seq + 1, size=(batch, 2))  # [batch, 2]
  mask = (np.arange(seq)[None, None, :] < lengths[..., None]).astype(np.int32)  # [b, 2, seq]
  return {"tokens": tokens * mask, "mask": mask, "eoc_pos": (lengths - 1).astype(np.int32)}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="13m")
  ap.add_argument("--batch", type=int, default=8, help="comparisons per step")
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--steps", type=int, default=10, help="rounds of one step each")
  ap.add_argument("--no_peer", action="store_true")
  ap.add_argument("--layers", choices=("config", "scan", "unroll"), default="config",
                  help="the rung's model.scan_layers, or force nn.scan / an unrolled stack")
  args = ap.parse_args()

  cfg = models.get(args.size)
  cfg.heads = ("scalar",)
  cfg.dtype = "float32"
  if args.layers != "config":
    cfg.scan_layers = args.layers == "scan"
  optim = common.adamw(1e-4, 0)
  mesh = mesh_lib.one_device_mesh()
  model = Transformer(cfg)
  example = jnp.zeros((2 * args.batch, args.seq), jnp.int32)
  state, shardings = state_lib.create(model, optimizer.make(optim, 1000), example, mesh, 0)
  with mesh_lib.activate(mesh):
    compiled, batch_sh = runner.compile_step(pm.make_train_step(model), shardings, mesh,
                                             pm.BATCH_NDIMS)
    batch = runner.to_global(make_batch(args.batch, args.seq, cfg.vocab_size), batch_sh)
    holder = [state]

    def step():
      holder[0], metrics = compiled(holder[0], batch)  # the state is donated: thread it
      return metrics["loss"]

    # Ours and each peer take turns step by step, so a slow spell of this shared machine
    # lands on both sides of the ratio.
    times, peer_times, peers = harness.against_peers(
        step, "rm", rounds=args.steps, use_peer=not args.no_peer, n_layer=cfg.n_layers,
        d_model=cfg.d_model, n_head=cfg.n_heads, vocab=cfg.vocab_size, seq=args.seq,
        batch=args.batch)
  step_time = harness.median(times)
  tokens = 2 * args.batch * args.seq
  model_flops = pm.train_flops_per_token(cfg, args.seq) * tokens
  peak = harness.measure_matmul_peak()
  out = {
      "bench": "pm_step", "device": jax.devices()[0].device_kind,
      "shape": {"size": args.size, "n_layer": cfg.n_layers, "d_model": cfg.d_model,
                "n_head": cfg.n_heads, "vocab": cfg.vocab_size, "batch": args.batch,
                "seq": args.seq, "dtype": cfg.dtype, "scan_layers": cfg.scan_layers},
      "step_time_s": step_time, "step_times_s": times, "tokens_per_step": tokens,
      "tokens_per_s": tokens / step_time,
      "model_tflops_per_s": model_flops / step_time / 1e12,
      "matmul_peak_tflops": peak / 1e12, "mfu": model_flops / step_time / peak,
  }
  if "default" in peers:  # the peer with glibc's allocator, as PyTorch users get it
    theirs, info = peer_times["default"], peers["default"]
    out.update(peer_step_time_s=harness.median(theirs), peer_step_times_s=theirs,
               peer_tokens_per_s=tokens / harness.median(theirs), peer_threads=info["threads"],
               peer_torch=info["torch"], ratio=harness.median(theirs) / step_time,
               ratio_paired=harness.paired_ratio(times, theirs),
               ratio_best=min(theirs) / min(times))
  if "tuned" in peers:  # the peer given hh_jax's allocator settings as well
    theirs = peer_times["tuned"]
    out.update(peer_same_malloc_step_time_s=harness.median(theirs),
               peer_same_malloc_step_times_s=theirs,
               ratio_same_malloc=harness.median(theirs) / step_time,
               ratio_paired_same_malloc=harness.paired_ratio(times, theirs),
               ratio_best_same_malloc=min(theirs) / min(times))
  harness.emit(out)


if __name__ == "__main__":
  main()
