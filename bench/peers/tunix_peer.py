"""The Google Tunix peer: Tunix's sampler and PPOLearner timed at hh_jax's benchmark shapes.

hh_jax's PyTorch peer (gpt2_peer.py) says how we compare with what a PyTorch user would
run; this one says how hh_jax's design compares with another JAX framework's on the same
JAX, jaxlib and XLA:CPU backend, so what differs is the program, not the compiler. Every
model is a Tunix `Llama3` (tunix.models.llama3) at the 13m rung's depth and width, random
init (N(0, 0.02), norms 1), float32, nothing downloaded:

  generate  one call of tunix.generate.Sampler (prefill + a compiled while_loop over its
            KV cache), [batch, prompt_len] prompts, new_tokens new tokens per row,
            temperature 1, no top-k/top-p, no stop token (the eos id lies outside the
            vocabulary), so every call makes batch * new_tokens tokens.
  ppo       one PPOLearner iteration through its own `train` loop: rollout on the vanilla
            engine (that Sampler), scoring (reference and old-policy log-probs, critic
            values, reward), GAE, then one policy and one value update on the whole batch
            (1 epoch, 1 minibatch). Reward: a Tunix Llama3 with a scalar head
            (`--reward model`, default: the same work as hh_jax's PM) or a Python function
            of the completion text (`--reward python`).

It runs with bench/peers/.venv-tunix's python (`make bench-peers-tunix`), never hh_jax's
venv, and prints JSON on stdout only; warnings and progress go to stderr. `--serve` follows
gpt2_peer.py's protocol: build and warm up, one JSON metadata line, then one JSON line per
`step` line read on stdin, until EOF.

Example (the 13m rung):
  bench/peers/.venv-tunix/bin/python bench/peers/tunix_peer.py --task generate
  printf 'step\\nstep\\nstep\\n' | bench/peers/.venv-tunix/bin/python \\
      bench/peers/tunix_peer.py --task ppo --serve
"""

import argparse
import importlib.metadata
import json
import logging
import os
import statistics
import sys
import time
import warnings


def parse_args(argv=None):
  """Flag names match gpt2_peer.py's, so bench/harness.py passes one shape to either peer."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--task", choices=("generate", "ppo"), required=True)
  p.add_argument("--n_layer", type=int, default=4)
  p.add_argument("--d_model", type=int, default=512)
  p.add_argument("--n_head", type=int, default=8)
  p.add_argument("--n_kv_head", type=int, default=None, help="default: n_head (no GQA)")
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--mlp_dim", type=int, default=1365,
                 help="SwiGLU width; 3 * 512 * 1365 matches the rung's 2 * 512 * 2048 GELU MLP")
  p.add_argument("--batch", type=int, default=8, help="prompts per call / per PPO batch")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--steps", type=int, default=5, help="timed steps (without --serve)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
  p.add_argument("--reward", choices=("model", "python"), default="model")
  p.add_argument("--lr", type=float, default=1e-5)
  p.add_argument("--beta", type=float, default=0.001, help="KL coefficient (the paper's 0.001)")
  p.add_argument("--dtype", choices=("float32",), default="float32")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--serve", action="store_true",
                 help="after the warm-up, print one JSON line of metadata, then time one "
                      "step per 'step' line read on stdin (one JSON line each) until EOF")
  return p.parse_args(argv)


# Imported after the flags so that --help works without the Tunix env. Tunix and absl log
# at INFO to stderr; keep stderr short (the harness keeps only its tail for errors).
def _imports():
  global jax, jnp, np, nnx, optax, llama3, tunix_sampler
  warnings.filterwarnings("ignore")
  logging.getLogger().setLevel(logging.WARNING)
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from absl import logging as absl_logging
  from flax import nnx
  from tunix.generate import sampler as tunix_sampler
  from tunix.models.llama3 import model as llama3
  absl_logging.set_verbosity(absl_logging.WARNING)


class IdTokenizer:
  """Token ids written as decimal text: Tunix's string API carries exact ids through.

  Tunix's sampler and rollout take prompts as strings; a real tokenizer would add host
  work hh_jax's sampler (which takes ids) does not do, so encode/decode here are a split
  and a join. pad 0, no BOS (a falsy bos_id is never prepended), and an eos id equal to
  the vocabulary size: no sampled token can be it, so every row runs to new_tokens.
  """

  def __init__(self, vocab):
    self.vocab = vocab

  def encode(self, text, **kwargs):
    return [int(t) for t in text.split()]

  def decode(self, ids, **kwargs):
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self):
    return 0

  def eos_id(self):
    return self.vocab

  def pad_id(self):
    return 0


def model_config(args, *, tied):
  """Llama3 at the rung's depth and width: RMSNorm, SwiGLU, rotary, no biases.

  The policy and reference tie the LM head to the embedding as hh_jax's Transformer does;
  the critic and the reward model are untied so Tunix's `create_critic_model` can swap the
  LM head for a [d_model, 1] scalar head.
  """
  return llama3.ModelConfig(
      num_layers=args.n_layer, vocab_size=args.vocab, embed_dim=args.d_model,
      hidden_dim=args.mlp_dim, num_heads=args.n_head, head_dim=args.d_model // args.n_head,
      num_kv_heads=args.n_kv_head or args.n_head, rope_theta=10_000, norm_eps=1e-5,
      weight_tying=tied)


def random_init(model, seed):
  """N(0, 0.02) for every weight matrix and norms left at 1, as hh_jax's init_std.

  Tunix's Llama3 zero-initializes its MLP (it expects checkpoint weights); zeros would not
  change the timing, but a random model is what both sides claim to run.
  """
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = []
  for (path, leaf), key in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    if "norm" in name:
      new.append(leaf)
    else:
      new.append(0.02 * jax.random.normal(key, leaf.shape, leaf.dtype))
  nnx.update(model, jax.tree_util.tree_unflatten(treedef, new))
  return model


def build_lm(args, seed, *, tied=True):
  return random_init(llama3.Llama3(model_config(args, tied=tied), rngs=nnx.Rngs(seed)), seed)


def build_scalar(args, seed):
  """A Llama3 trunk with a scalar head: Tunix's own critic construction (rl.utils).

  Tunix 0.1.7's `compute_score` (critic values, reward-model scores) always passes
  `segment_ids`, which `Llama3.__call__` does not take (its log-prob path checks the
  signature first; this one does not), so PPO with a Llama3 critic fails as shipped. The
  subclass takes the argument and drops it: it is only the non-pad mask, which the
  attention mask passed beside it already applies.
  """
  from tunix.rl import utils as rl_utils

  class ScoredLlama3(llama3.Llama3):
    def __call__(self, input_tokens, positions, cache, attention_mask, segment_ids=None):
      return super().__call__(input_tokens, positions, cache, attention_mask)

  trunk = random_init(ScoredLlama3(model_config(args, tied=False), rngs=nnx.Rngs(seed)), seed)
  return rl_utils.create_critic_model(trunk, seed=seed)


def param_counts(model):
  """(total, embedding, non-embedding) parameter counts of an nnx model."""
  total, embed = 0, 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
    total += leaf.size
    if "input_embedding" in jax.tree_util.keystr(path):
      embed += leaf.size
  return {"params": int(total), "embedding_params": int(embed),
          "non_embedding_params": int(total - embed)}


def prompts_text(args, rng):
  """[batch] prompts of prompt_len random ids in [3, vocab), as text (see IdTokenizer)."""
  ids = rng.integers(3, args.vocab, size=(args.batch, args.prompt_len))
  return [" ".join(map(str, row)) for row in ids]


# --- generate -------------------------------------------------------------------------

def generate_task(args):
  """Returns (step, info): one Sampler call, prompts fixed, a fresh seed per call."""
  model = build_lm(args, args.seed)
  cache = tunix_sampler.CacheConfig(
      cache_size=args.prompt_len + args.new_tokens, num_layers=args.n_layer,
      num_kv_heads=args.n_kv_head or args.n_head, head_dim=args.d_model // args.n_head)
  sampler = tunix_sampler.Sampler(model, IdTokenizer(args.vocab), cache)
  prompts = prompts_text(args, np.random.default_rng(args.seed))
  calls = [0]

  def step():
    calls[0] += 1
    out = sampler(prompts, max_generation_steps=args.new_tokens,
                  max_prompt_length=args.prompt_len, echo=False, temperature=1.0,
                  top_p=1.0, top_k=None, seed=calls[0])
    assert all(len(t) == args.new_tokens for t in out.tokens), [len(t) for t in out.tokens]
    return {}

  info = {"models": {"policy": param_counts(model)}}
  return step, info


# --- ppo ------------------------------------------------------------------------------

class Phases:
  """Wall-clock per phase of one iteration, from timers around RLCluster's own methods.

  Each wrapped call blocks on what it returns before its clock stops, so device work is
  charged to the phase that issued it (Tunix reads most of these results back to the host
  right after anyway). `other` is the rest of the iteration: GAE, metric buffering, the
  learner's queue and bookkeeping.
  """

  NAMES = {"generate": "rollout", "get_ref_per_token_logps": "score",
           "get_old_per_token_logps": "score", "get_values": "score",
           "get_rewards": "score", "update_actor": "update", "update_critic": "update"}

  def __init__(self, cluster, learner, sync):
    self.times = {}
    for method, phase in self.NAMES.items():
      setattr(cluster, method, self._timed(getattr(cluster, method), phase, sync))
    # A Python reward runs inside the learner, not the cluster.
    learner._compute_rewards = self._timed(learner._compute_rewards, "score", sync)

  def _timed(self, fn, phase, sync):
    def wrapper(*a, **kw):
      t0 = time.perf_counter()
      out = fn(*a, **kw)
      _block(out)
      if phase == "update":
        sync()
      self.times[phase] = self.times.get(phase, 0.0) + time.perf_counter() - t0
      return out
    return wrapper

  def reset(self):
    self.times = {}


def _block(out):
  try:
    jax.block_until_ready(out)
  except Exception:  # a host object (RolloutOutput, numpy): nothing pending on device
    pass


class Iterations:
  """PPOLearner.train's dataset: one batch per iteration; the clock runs between pulls.

  The learner pulls a batch at the start of each iteration (rollout first), so the time
  from one pull to the next is one whole iteration as Tunix runs it. Before the clock
  stops, the actor's and critic's parameters are blocked on, so an update still in flight
  is not left to land in the next step. `request()` says whether to run another timed
  iteration (in --serve mode: a `step` line on stdin); False ends train().
  """

  def __init__(self, batch, warmup, sync, phases, on_ready, request, on_step):
    self.batch, self.warmup, self.sync, self.phases = batch, warmup, sync, phases
    self.on_ready, self.request, self.on_step = on_ready, request, on_step
    self.t0 = None
    self.timed = False

  def __iter__(self):
    return self

  def __next__(self):
    if self.t0 is not None:
      self.sync()
      dt = time.perf_counter() - self.t0
      if self.timed:
        self.on_step(dt, dict(self.phases.times))
    if self.warmup > 0:
      self.warmup -= 1
    else:
      if not self.timed:
        self.timed = True
        self.on_ready()
      if not self.request():
        raise StopIteration
    self.phases.reset()
    self.t0 = time.perf_counter()
    return self.batch


def completion_reward(prompts, completions, **kwargs):
  """The Python reward: distinct ids over length, a cheap function of the completion text."""
  out = []
  for text in completions:
    ids = text.split()
    out.append(len(set(ids)) / max(len(ids), 1))
  return out


def ppo_learner(args):
  """Policy, reference, critic (and reward model) on a 1-device mesh, as Tunix's examples
  and tests build them (RLCluster + ClusterConfig + RolloutConfig + PPOLearner)."""
  from tunix.rl import rl_cluster as rl_cluster_lib
  from tunix.rl.ppo import ppo_learner as ppo_lib
  from tunix.rl.rollout import base_rollout

  policy = build_lm(args, args.seed)
  reference = build_lm(args, args.seed)  # the frozen initial policy: same weights
  critic = build_scalar(args, args.seed + 1)
  reward = build_scalar(args, args.seed + 2) if args.reward == "model" else None
  counts = {"policy": param_counts(policy), "reference": param_counts(reference),
            "critic": param_counts(critic)}
  if reward is not None:
    counts["reward"] = param_counts(reward)

  # One CPU device, Tunix's axis names; Auto axes (jax.make_mesh's default is now Explicit,
  # which Tunix's Llama3 gathers do not support).
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)
  roles = rl_cluster_lib.Role
  # hh_jax's PPO optimizer: AdamW with the global grad norm clipped at 1.
  opt = lambda: optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(args.lr, weight_decay=0.0))
  cluster_config = rl_cluster_lib.ClusterConfig(
      role_to_mesh={r: mesh for r in (roles.ACTOR, roles.CRITIC, roles.REFERENCE,
                                      roles.ROLLOUT, roles.REWARD)},
      rollout_engine="vanilla",
      offload_to_cpu=False,
      training_config=rl_cluster_lib.RLTrainingConfig(
          actor_optimizer=opt(), critic_optimizer=opt(),
          eval_every_n_steps=10**9, max_steps=10**9,
          mini_batch_size=args.batch),  # 1 minibatch: the whole batch
      rollout_config=base_rollout.RolloutConfig(
          max_tokens_to_generate=args.new_tokens, max_prompt_length=args.prompt_len,
          kv_cache_size=args.prompt_len + args.new_tokens, temperature=1.0, top_p=1.0,
          top_k=None),
  )
  cluster = rl_cluster_lib.RLCluster(
      actor=policy, critic=critic, reference=reference, reward=reward,
      tokenizer=IdTokenizer(args.vocab), cluster_config=cluster_config)
  ppo_config = ppo_lib.PPOConfig(num_iterations=1, beta=args.beta, kl_method="kl",
                                 entropy_coef=None)
  learner = ppo_lib.PPOLearner(
      rl_cluster=cluster, ppo_config=ppo_config,
      reward_fns=[completion_reward] if args.reward == "python" else None)
  return cluster, learner, counts


def run_ppo(args, describe_extra):
  """Runs PPOLearner.train over `Iterations`; emits as the --serve protocol asks."""
  cluster, learner, counts = ppo_learner(args)
  tokens_per_step = args.batch * args.new_tokens

  def sync():
    jax.block_until_ready(nnx.state(cluster.actor_trainer.model))
    jax.block_until_ready(nnx.state(cluster.critic_trainer.model))

  phases = Phases(cluster, learner, sync)
  info = dict(describe_extra, models=counts, reward=args.reward,
              reward_fn="completion_reward" if args.reward == "python" else None)
  results = []

  def on_ready():
    if args.serve:
      emit_line(describe(args, tokens_per_step, info))

  def request():
    if args.serve:
      line = sys.stdin.readline()
      return line.strip() == "step"
    return len(results) < args.steps

  def on_step(dt, times):
    step = {"step_time_s": dt, **{f"{k}_s": v for k, v in sorted(times.items())}}
    step["other_s"] = dt - sum(times.values())
    results.append(step)
    if args.serve:
      emit_line(step)

  # An array of strings, as a grain batch hands PPOLearner its prompts (a list would be
  # taken apart leaf by leaf when the learner repeats each prompt).
  prompts = np.array(prompts_text(args, np.random.default_rng(args.seed)))
  ds = Iterations({"prompts": prompts},
                  args.warmup, sync, phases, on_ready, request, on_step)
  learner.train(ds)
  if not args.serve:
    times = [r["step_time_s"] for r in results]
    result = describe(args, tokens_per_step, info)
    result.update(step_time_s=statistics.median(times), step_times_s=times,
                  tokens_per_s=tokens_per_step / statistics.median(times),
                  **{k: statistics.median(r[k] for r in results)
                     for k in results[0] if k != "step_time_s"})
    emit_line(result)


# --- shared ---------------------------------------------------------------------------

def usable_cores():
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def emit_line(obj):
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


def describe(args, tokens_per_step, info):
  """What was run: task, shape, versions and parameter counts, without timings."""
  shape = {"n_layer": args.n_layer, "d_model": args.d_model, "n_head": args.n_head,
           "n_kv_head": args.n_kv_head or args.n_head, "head_dim": args.d_model // args.n_head,
           "mlp_dim": args.mlp_dim, "vocab": args.vocab, "batch": args.batch,
           "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "dtype": args.dtype}
  versions = {name: importlib.metadata.version(dist) for name, dist in
              (("jax", "jax"), ("jaxlib", "jaxlib"), ("flax", "flax"),
               ("optax", "optax"), ("tunix", "google-tunix"))}
  policy = info["models"]["policy"]
  return {"task": args.task, "shape": shape, "tokens_per_step": tokens_per_step,
          "params": policy["params"], "non_embedding_params": policy["non_embedding_params"],
          **info, **versions, "device": jax.devices()[0].device_kind,
          "threads": usable_cores()}


def run_generate(args):
  """Warm-up calls, then one timed Sampler call per step (per `step` line with --serve)."""
  step, info = generate_task(args)
  tokens_per_step = args.batch * args.new_tokens
  for _ in range(args.warmup):
    step()
  meta = describe(args, tokens_per_step, info)
  requests = (line.strip() == "step" for line in sys.stdin) if args.serve else (
      True for _ in range(args.steps))
  if args.serve:
    emit_line(meta)
  times = []
  for go in requests:
    if not go:
      break
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
    if args.serve:
      emit_line({"step_time_s": times[-1]})
  if not args.serve:
    median = statistics.median(times)
    emit_line(dict(meta, step_time_s=median, step_times_s=times,
                   tokens_per_s=tokens_per_step / median))


def main(argv=None):
  args = parse_args(argv)
  _imports()
  if args.task == "ppo":
    run_ppo(args, {})
  else:
    run_generate(args)


if __name__ == "__main__":
  main()
