"""One PPO iteration at the 13m rung: rollout + scoring + one policy and one value update.

  python bench/ppo_step.py [--size 13m --vocab 8192 --batch 8 --prompt_len 64 --new_tokens 128]

Policy, reference, value and PM are each the rung's model, randomly initialized, f32; no
stop token, so every row makes `new_tokens` tokens. One iteration is what the PPO stage
runs per iteration: the rollout program (KV-cache sampling, then the reference and PM
forwards: `hh_jax.rl.rollout`) and the update program (`hh_jax.train.ppo`, 1 epoch, 1
minibatch: the policy's and value's forwards, whose outputs are also the old log-probs and
values, and their backwards). Prints one JSON object:
  iteration_s   the two programs back to back, median over rounds
  rollout_s     the sampler alone (prefill + decode loop), median
  score_s       the rollout's forwards (reference, PM) alone on the sampled responses
  update_s      the update alone, and its MFU against a matmul peak measured in this run
  tunix         Google Tunix's PPOLearner at the same shape (bench/peers/tunix_peer.py),
                its iterations alternating with ours one by one; `speedup_vs_tunix`.
"""
import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import models  # noqa: E402
from configs import ppo as ppo_config  # noqa: E402
from hh_jax.model import flops, sampling, transformer  # noqa: E402
from hh_jax.parallel import mesh as mesh_lib  # noqa: E402
from hh_jax.rl import rollout as rollout_lib  # noqa: E402
from hh_jax.rl import ppo_stage  # noqa: E402
from hh_jax.train import ppo  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--size", default="13m")
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--reward", default="model", choices=("model", "python"),
                 help="Tunix's reward: a reward model like our PM, or a Python function")
  p.add_argument("--no_peer", action="store_true")
  args = p.parse_args()

  cfg = models.get(args.size)
  cfg.vocab_size = args.vocab
  scfg = ml_collections.ConfigDict(dict(cfg))
  scfg.heads = ("scalar",)
  policy, scalar = transformer.Transformer(cfg), transformer.Transformer(scfg)
  x = jnp.zeros((1, 8), jnp.int32)
  init = lambda m, k: jax.jit(lambda k: nn.unbox(m.init(k, x)["params"]))(k)  # noqa: E731
  params, ref = init(policy, jax.random.PRNGKey(0)), init(policy, jax.random.PRNGKey(0))
  value, pm = init(scalar, jax.random.PRNGKey(1)), init(scalar, jax.random.PRNGKey(2))

  b, plen, t = args.batch, args.prompt_len, args.new_tokens
  prompts = np.random.default_rng(0).integers(3, args.vocab, size=(b, plen)).astype(np.int32)
  mask = np.ones_like(prompts)
  nets = rollout_lib.Models(policy=policy, ref=policy, value=scalar, pm=scalar)
  scoring = rollout_lib.Scoring(eoc_id=2, stop_ids=(), no_stop_penalty=0.0,
                                pm_seq_len=plen + t + 1)
  stats = rollout_lib.pm_stats(0.0, 1.0)
  settings = sampling.Settings(max_new_tokens=t, temperature=1.0)
  pcfg = ppo_config.get_config(f"size={args.size}").ppo
  pcfg.epochs, pcfg.num_minibatches = 1, 1
  tx, vtx = optax.adamw(1e-6), optax.adamw(1e-6)

  cpu_layout = sampling.decode_layout_for(mesh_lib.one_device_mesh(), params)
  rollout = jax.jit(rollout_lib.make_rollout(nets, scoring, settings, cpu_layout=cpu_layout,
                                             policy_forwards=False), donate_argnums=(7,))
  sample = jax.jit(functools.partial(sampling.sample, policy, settings=settings,
                                     cpu_layout=cpu_layout), donate_argnums=(3,))
  evaluate = jax.jit(functools.partial(rollout_lib.evaluate, policy_model=policy,
                                       ref_model=policy, value_model=scalar, pm_model=scalar,
                                       scoring=scoring, policy_forwards=False))
  update = jax.jit(ppo.make_update(policy, scalar, pcfg), donate_argnums=(0,))
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (the update donates its state)
  state = {"s": ppo.init_state(copy(params), copy(value), tx, vtx, 0.001, 0),
           "cache": transformer.init_cache(cfg, b, plen + t)}
  key = jax.random.PRNGKey(3)

  def iteration():
    out, state["cache"] = rollout(state["s"].params, ref, state["s"].value_params, pm, stats,
                                  prompts, mask, state["cache"], key)
    state["s"], metrics = update(state["s"], {k: out[k] for k in ppo_stage.BATCH_KEYS})
    return metrics["loss/policy_avg"]

  iteration()  # compile both programs
  ours, theirs, info = harness.against_peers(
      iteration, "ppo", rounds=args.rounds, warmup=1, use_peer=not args.no_peer, peer="tunix",
      n_layer=cfg.n_layers, d_model=cfg.d_model, n_head=cfg.n_heads, vocab=args.vocab,
      batch=b, prompt_len=plen, new_tokens=t, reward=args.reward)

  # The phases one at a time, on the same inputs.
  cache = {"c": transformer.init_cache(cfg, b, plen + t)}

  def sample_only():
    out, cache["c"] = sample(params, prompts, mask, cache["c"], key)
    return out["tokens"]

  resp = jax.device_get(sample_only())  # [batch, new_tokens]
  rmask = np.ones((b, t), np.int32)
  run_forwards = functools.partial(evaluate, params=params, ref_params=ref, value_params=value,
                                   pm_params=pm, pm_stats=stats, prompt=prompts, prompt_mask=mask,
                                   response=resp, response_mask=rmask)
  score_fn = lambda: run_forwards()["scores"]  # noqa: E731
  batch = {k: v for k, v in jax.device_get(run_forwards()).items() if k in ppo_stage.BATCH_KEYS}
  batch["sampler_logp"] = np.zeros((b, t), np.float32)  # what the rollout's batch holds

  def update_only():
    state["s"], m = update(state["s"], batch)
    return m["loss/policy_avg"]

  rollout_t = harness.time_fn(sample_only, warmup=1, iters=args.rounds)
  score_t = harness.time_fn(score_fn, warmup=1, iters=args.rounds)
  update_t = harness.time_fn(update_only, warmup=1, iters=args.rounds)
  peak = harness.measure_matmul_peak()
  seq = plen + t
  # Policy and value each run forward and backward over the whole batch (the value model
  # has no LM head); attention at the full sequence length.
  value_flops = flops.train_flops_per_token(cfg, seq) - 6 * args.vocab * cfg.d_model
  update_flops = (flops.train_flops_per_token(cfg, seq) + value_flops) * b * seq
  result = {
      "bench": "ppo_step", "size": args.size, "vocab": args.vocab, "batch": b,
      "prompt_len": plen, "new_tokens": t, "dtype": cfg.dtype, "device": jax.devices()[0].device_kind,
      "jax": jax.__version__, "iteration_s": harness.median(ours), "iteration_times_s": ours,
      "rollout_s": harness.median(rollout_t), "score_s": harness.median(score_t),
      "update_s": harness.median(update_t),
      "update_tflops_per_s": update_flops / harness.median(update_t) / 1e12,
      "matmul_peak_tflops_per_s": peak / 1e12,
      "update_mfu": update_flops / harness.median(update_t) / peak,
      "non_embedding_params": flops.param_count_non_embedding(cfg),
  }
  if "tunix" in theirs:
    tt = theirs["tunix"]
    result["tunix"] = {"iteration_s": harness.median(tt), "iteration_times_s": tt,
                       "reward": args.reward,
                       **{k: v for k, v in harness.reply_medians(info["tunix"]["replies"]).items()
                          if k.endswith("_s")},
                       **{k: info["tunix"][k] for k in ("tunix", "jax") if k in info["tunix"]}}
    result["speedup_vs_tunix"] = harness.median(tt) / harness.median(ours)
    result["speedup_vs_tunix_paired"] = harness.paired_ratio(ours, tt)
  harness.emit(result)


if __name__ == "__main__":
  main()
