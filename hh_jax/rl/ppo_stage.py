"""The PPO stage: a policy trained against a frozen PM with a KL penalty to where it started.

`python -m hh_jax.main --config=configs/ppo.py:init=POLICY_RUN,pm=PM_RUN --workdir=DIR`

Each iteration is two compiled programs: the rollout (sampling, then the reference's and
PM's forwards: `hh_jax.rl.rollout`) and the update (the policy's and value's forwards,
which its first gradient step shares with one minibatch, rewards, GAE, epochs × minibatches
of clipped PPO: `hh_jax.train.ppo`). The policy is checkpointed at
`state.params` exactly as an LM run stores it, and config.json carries its model, so
`load_lm`, chat, rejection sampling and the next online iteration read a PPO workdir as
they read an LM one. The value params, both optimizer states, the KL controller, the RNG
and the prompt position are in the same checkpoint: a rerun resumes where it stopped and
draws the same samples an uninterrupted run would have.

Prompts are kept whole within the budget the PM reads (its seq_len minus the reply
length: `prompts.PromptFit`). At the end, `ppo_eval.json` compares the initial and final
policies on fresh prompts (none in a training set of the run: `hh_jax.data.fresh`, drawn by
`hh_jax.rl.ppo_eval`), and `hh_jax.eval.kl_reward` fits and draws the paper's plots from
those numbers.
"""
from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hh_jax import checkpoint as ckpt_lib
from hh_jax import files
from hh_jax import metrics as metrics_lib
from hh_jax import preemption
from hh_jax.data import fresh as fresh_lib
from hh_jax.data import tokenizer as tok_lib
from hh_jax.errors import Preempted, UserError
from hh_jax.model import params as params_lib
from hh_jax.model import sampling, transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.data import labelers
from hh_jax.rl import ppo_eval
from hh_jax.rl import prompts as prompts_lib
from hh_jax.rl import reward as reward_lib
from hh_jax.rl import rollout as rollout_lib
from hh_jax.train import optimizer as optim_lib
from hh_jax.train import ppo
from hh_jax.train import runner
from hh_jax.train import state as state_lib

VALUE_KINDS = ("pm", "shared")
# No logp/values: the update computes the old log-probs and values by its own forward.
BATCH_KEYS = ("tokens", "mask", "response", "response_mask", "ref_logp", "scores",
              "sampler_logp")


def _with_heads(cfg, heads) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(cfg))
  c.heads = tuple(heads)
  return c


def _read_bytes(path: str) -> bytes:
  return files.read_bytes(path)


class PM:
  """A PM run as PPO needs it: model config, params, normalization, tokenizer bytes."""

  def __init__(self, workdir: str, mesh, role: str = "pm.workdir"):
    self.workdir = files.abspath(workdir)
    config = ckpt_lib.read_run_config(self.workdir, f"point --config.{role} at a PM run")
    if config.get("stage") not in ("pm", "pmp"):
      raise UserError(f"{self.workdir} is a {config.get('stage')!r} run, not a PM; "
                      f"point --config.{role} at a pm workdir")
    stats_path = files.join(self.workdir, ckpt_lib.REWARD_STATS_FILE)
    if not files.exists(stats_path):
      raise UserError(f"{self.workdir} has no {ckpt_lib.REWARD_STATS_FILE} (written when the "
                      "PM stage finishes); finish that run, or point the config at a finished PM")
    self.stats = files.read_json(stats_path)
    self.cfg = _with_heads(config["model"], ("scalar",))
    self.seq_len = int(config["data"]["seq_len"])
    self.model = transformer.Transformer(self.cfg)
    self.params, missing = params_lib.restore_run_params(self.model, self.workdir, mesh)
    if missing:
      raise UserError(f"{self.workdir} checkpoint lacks {', '.join(missing)}; it is not a PM")
    tok_path = files.join(self.workdir, tok_lib.FILENAME)
    if not files.exists(tok_path):
      raise UserError(f"{self.workdir} has no {tok_lib.FILENAME}; point the config at a PM run")
    self.tokenizer_bytes = _read_bytes(tok_path)

  @property
  def stats_array(self):
    """The normalization as the rollout's argument (`rollout.pm_stats`): float32 [2]."""
    return rollout_lib.pm_stats(float(self.stats["mean"]), float(self.stats["std"]))

  def value_init(self):
    """The PM's params with the normalization folded into the scalar head: the value model's
    start, on the scale of the (normalized) reward."""
    return reward_lib.normalized_head(self.params, float(self.stats["mean"]),
                                      float(self.stats["std"]))


def validate(config) -> None:
  if not config.init.workdir:
    raise UserError("PPO starts from a policy: pass --config.init.workdir=DIR (an LM, distill "
                    "or PPO run), or configs/ppo.py:init=DIR")
  if not config.pm.workdir:
    raise UserError("PPO needs a preference model: pass --config.pm.workdir=PM_RUN "
                    "(or configs/ppo.py:pm=DIR)")
  p = config.ppo
  if p.value not in VALUE_KINDS:
    raise UserError(f"ppo.value={p.value!r}; use one of {', '.join(VALUE_KINDS)}")
  if p.batch_size % p.num_minibatches:
    raise UserError(f"ppo.batch_size={p.batch_size} does not split into ppo.num_minibatches="
                    f"{p.num_minibatches}; use a divisor")
  if p.epochs < 1 or p.num_minibatches < 1:
    raise UserError("ppo.epochs and ppo.num_minibatches must be at least 1")
  if not 0 < p.clip < 1 or p.value_clip <= 0:
    raise UserError(f"ppo.clip={p.clip} must be in (0, 1) and ppo.value_clip > 0")
  if p.kl_coef < 0:
    raise UserError(f"ppo.kl_coef={p.kl_coef} must be >= 0 (0.001 in the paper)")
  if p.kl_target < 0 or p.kl_horizon <= 0:
    raise UserError("ppo.kl_target must be >= 0 (0: fixed coefficient) and ppo.kl_horizon > 0")
  if config.sampling.max_new_tokens < 1:
    raise UserError("sampling.max_new_tokens must be positive")


def check_same_tokenizer(policy_dir: str, pm: PM) -> None:
  """Token-space rewards need one vocabulary: the two tokenizer files must be identical."""
  mine = _read_bytes(files.join(policy_dir, tok_lib.FILENAME))
  if mine != pm.tokenizer_bytes:
    raise UserError(f"the policy ({policy_dir}) and the PM ({pm.workdir}) use different "
                    "tokenizers; train the PM from the policy's LM (or its tokenizer) so ids match")


def state_shardings(policy_model, value_model, tx, value_tx, example, mesh):
  """(abstract PPOState, its shardings): both models' params and optimizer states sharded
  by the logical-axis rules, the scalars replicated."""
  pol, pol_sh = state_lib.abstract_and_shardings(policy_model, tx, example, mesh)
  if value_model is not None:
    val, val_sh = state_lib.abstract_and_shardings(value_model, value_tx, example, mesh)
    vp, vo, vps, vos = val.params, val.opt_state, val_sh.params, val_sh.opt_state
  else:
    vp, vo, vps, vos = {}, {}, {}, {}
  rep = mesh_lib.replicated(mesh)
  scalar = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=rep)  # noqa: E731
  abstract = ppo.PPOState(step=scalar((), jnp.int32), params=pol.params, opt_state=pol.opt_state,
                          value_params=vp, value_opt_state=vo, kl_coef=scalar((), jnp.float32),
                          rng=scalar((2,), jnp.uint32), tx=tx, value_tx=value_tx)
  shardings = ppo.PPOState(step=rep, params=pol_sh.params, opt_state=pol_sh.opt_state,
                           value_params=vps, value_opt_state=vos, kl_coef=rep, rng=rep, tx=tx,
                           value_tx=value_tx)
  return abstract, shardings


class Setup:
  """Models, params, compiled programs and prompts of one PPO run (shared by the loop and eval)."""

  def __init__(self, config, mesh):
    self.config = config
    self.mesh = mesh
    div = mesh_lib.batch_size_divisor(self.mesh)
    if config.ppo.batch_size % div or (config.ppo.batch_size // config.ppo.num_minibatches) % div:
      raise UserError(f"ppo.batch_size={config.ppo.batch_size} (and each of its "
                      f"{config.ppo.num_minibatches} minibatches) must divide over the mesh's "
                      f"{div} data shards; use a multiple of {div * config.ppo.num_minibatches}")
    init_dir = files.abspath(config.init.workdir)
    lm_cfg, self.ref_params, self.tok = params_lib.load_lm(init_dir, self.mesh)
    self.pm = PM(config.pm.workdir, self.mesh)
    check_same_tokenizer(init_dir, self.pm)
    self.test_pm = PM(config.pm.test_workdir, self.mesh, "pm.test_workdir") if (
        config.pm.test_workdir) else None
    if self.test_pm is not None:
      check_same_tokenizer(init_dir, self.test_pm)
    # The prompt budget: the PM reads prompt + reply + EOC within its seq_len, so a reply
    # that stopped (at most T - 1 tokens of content) is scored with its whole prompt.
    self.T = int(config.sampling.max_new_tokens)
    self.P = self.pm.seq_len - self.T
    self.fit = prompts_lib.PromptFit(
        self.tok, self.P, f"the PM's data.seq_len {self.pm.seq_len} - sampling.max_new_tokens "
        f"{self.T}", "lower sampling.max_new_tokens or train the PM with a longer data.seq_len",
        skip_too_long=config.prompts.source == "hh_rlhf")
    total = self.P + self.T
    for name, cfg in (("policy", lm_cfg), ("PM", self.pm.cfg)):
      if cfg.pos_embedding == "learned" and total + (name == "PM") > cfg.max_len:
        raise UserError(f"the PM's data.seq_len {total} (the prompt budget + "
                        f"sampling.max_new_tokens) exceeds the {name}'s model.max_len="
                        f"{cfg.max_len}; lower sampling.max_new_tokens or the PM's seq_len")
    shared = config.ppo.value == "shared"
    self.policy_cfg = _with_heads(lm_cfg, ("lm", "scalar") if shared else ("lm",))
    policy = transformer.Transformer(self.policy_cfg)
    value = None if shared else self.pm.model
    self.models = rollout_lib.Models(policy=policy, ref=transformer.Transformer(lm_cfg),
                                     value=value, pm=self.pm.model)
    stops = sampling.stop_ids_for(self.tok)
    self.scoring = rollout_lib.Scoring(
        eoc_id=self.tok.eoc_id, stop_ids=stops,
        no_stop_penalty=float(config.ppo.no_stop_penalty), pm_seq_len=self.pm.seq_len)
    self.settings = sampling.Settings(max_new_tokens=self.T, temperature=1.0, stop_ids=stops,
                                      pad_id=self.tok.pad_id)
    iters = int(config.train.total_steps)
    updates = iters * config.ppo.epochs * config.ppo.num_minibatches
    self.tx = optim_lib.make(config.optim, updates)
    self.value_tx = None if shared else optim_lib.make(config.value_optim, updates)
    example = jnp.zeros((div, 8), jnp.int32)
    self.abstract, self.shardings = state_shardings(policy, value, self.tx, self.value_tx,
                                                    example, self.mesh)
    self.rows = mesh_lib.batch_sharding(self.mesh, 2)
    self._rollouts = {}
    batch_sh = {k: mesh_lib.batch_sharding(self.mesh, 1 if k == "scores" else 2)
                for k in BATCH_KEYS}
    self.update = jax.jit(ppo.make_update(policy, value, config.ppo),
                          in_shardings=(self.shardings, batch_sh),
                          out_shardings=(self.shardings, mesh_lib.replicated(self.mesh)),
                          donate_argnums=(0,))
    self._cache = None

  def init_state(self):
    """Policy = the init run's params (plus a fresh scalar head when shared); value = the PM
    with its normalization folded into the head (`PM.value_init`)."""
    c = self.config
    params = self.ref_params
    if c.ppo.value == "shared":
      fresh = nn.unbox(self.models.policy.init(jax.random.PRNGKey(c.seed),
                                               jnp.zeros((1, 8), jnp.int32))["params"])
      params = {**params, "scalar_head": fresh["scalar_head"]}
    value_params = {} if c.ppo.value == "shared" else self.pm.value_init()
    # The KL start and the seed are arguments, not constants: the next stage (another
    # iteration of the online loop) reuses this program from the persistent cache.
    make = lambda p, v, kl, seed: ppo.init_state(p, v, self.tx, self.value_tx,  # noqa: E731
                                                 kl, seed)
    with mesh_lib.activate(self.mesh):
      # Copies, not aliases: the update donates the state, the reference and PM stay.
      return jax.jit(make, out_shardings=self.shardings)(
          jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, value_params),
          jnp.float32(c.ppo.kl_coef), jnp.int32(c.seed))

  def rollout_fn(self, with_test_pm: bool = False):
    key = bool(with_test_pm)
    if key not in self._rollouts:
      layout = sampling.decode_layout_for(self.mesh, self.ref_params)
      fn = rollout_lib.make_rollout(self.models, self.scoring, self.settings, cpu_layout=layout,
                                    policy_forwards=False)
      self._rollouts[key] = jax.jit(fn, donate_argnums=(7,))
    return self._rollouts[key]

  def run_rollout(self, params, value_params, prompt_ids, key):
    """Rollout of the policy `params` on token-id prompts; numpy-free device outputs."""
    c = self.config
    tokens, mask = sampling.left_pad(prompt_ids, self.P, len(prompt_ids), self.tok.pad_id)
    with mesh_lib.activate(self.mesh):
      if self._cache is None:
        self._cache = transformer.init_cache(self.models.sample.cfg, len(prompt_ids),
                                             self.P + self.T)
      out, self._cache = self.rollout_fn()(
          params, self.ref_params, value_params, self.pm.params, self.pm.stats_array,
          jax.device_put(tokens, self.rows), jax.device_put(mask, self.rows), self._cache, key)
      if self.test_pm is not None:
        out["test_scores"] = self.test_score(out)
    del c
    return out

  def test_score(self, out):
    if not hasattr(self, "_test_fn"):
      scoring = rollout_lib.Scoring(**{**self.scoring.__dict__,
                                       "pm_seq_len": self.test_pm.seq_len})
      model = self.test_pm.model

      def fn(params, stats, tokens, mask, response_mask):
        prompt, response = tokens[:, :self.P], tokens[:, self.P:]
        return rollout_lib.pm_scores(model, params, stats, prompt, mask[:, :self.P], response,
                                     response_mask, scoring)[2]  # the normalized PM score

      self._test_fn = jax.jit(fn)
    return self._test_fn(self.test_pm.params, self.test_pm.stats_array, out["tokens"],
                         out["mask"], out["response_mask"])

  def texts(self, out) -> list[str]:
    host = jax.device_get({"tokens": out["response"], "lengths": out["lengths"]})
    return sampling.decode_samples(self.tok, host)


def fewshot_prompts(setup, pool: list[str], num: int, seed: int) -> list[str]:
  """`num` extra contexts written by the initial LM from few-shot prefixes of pool prompts.

  The paper grew its RL prompt set this way: the LM, shown a few Human turns, writes
  another. Each prefix holds `prompts.fewshot_k` random pool requests; the first Human
  turn the LM writes after them becomes a context (unusable continuations are dropped).
  """
  c = setup.config.prompts
  rng = np.random.default_rng([seed, 7])
  sampler = sampling.Sampler(setup.models.ref.cfg, setup.ref_params, setup.mesh,
                             batch_size=setup.config.ppo.batch_size)
  settings = sampling.Settings(max_new_tokens=int(c.fewshot_tokens), temperature=1.0,
                               stop_ids=(setup.tok.assistant_id, setup.tok.eos_id,
                                         setup.tok.eoc_id), pad_id=setup.tok.pad_id)
  out: list[str] = []
  for attempt in range(4 * max(num, 1) // setup.config.ppo.batch_size + 1):
    if len(out) >= num:
      break
    prefixes = [prompts_lib.fewshot_prefix(rng.choice(pool, int(c.fewshot_k), replace=False))
                for _ in range(setup.config.ppo.batch_size)]
    samples = sampler([setup.tok.encode(p) for p in prefixes],
                      jax.random.PRNGKey(seed + attempt), settings)
    for text in sampling.decode_samples(setup.tok, samples, strip_stop=False):
      ctx = prompts_lib.parse_fewshot(text)
      if ctx is not None and len(out) < num:
        out.append(ctx)
  return out


def build_prompts(config, setup, workdir: str | None = None
                  ) -> tuple[list[str], list[list[int]]]:
  """The prompt pool (texts kept whole within the prompt budget, and their token ids), plus
  few-shot LM-written prompts if asked. With `workdir`: the pool avoids every evaluation
  set recorded in the run and is recorded as its training set (`hh_jax.data.fresh`)."""
  avoid = set()
  if workdir:
    avoid = fresh_lib.recorded(fresh_lib.run_dirs(workdir, fresh_lib.upstream(config)),
                               fresh_lib.EVAL, own=workdir)
  num = int(config.prompts.num) or (None if config.prompts.source == "hh_rlhf" else 0)
  texts, ids, excluded = prompts_lib.draw_fitted(prompts_lib.candidates(config.prompts), num,
                                                 setup.fit, avoid)
  shortened = setup.fit.shortened
  if config.prompts.fewshot_extra:
    extra = fewshot_prompts(setup, texts, int(config.prompts.fewshot_extra), config.prompts.seed)
    print(f"ppo: {len(extra)} few-shot prompts written by the LM added to {len(texts)}",
          flush=True)
    extra_texts, extra_ids, _ = prompts_lib.draw_fitted(extra, None, setup.fit, avoid)
    texts, ids = texts + extra_texts, ids + extra_ids
  setup.prompt_counts = {"budget": setup.P, "pool": len(texts), "pool_shortened": shortened,
                         "pool_excluded": excluded}
  print(f"ppo: prompt pool {len(texts)}, budget {setup.P} tokens; {shortened} lost their "
        f"earliest turns, {excluded} passed over as evaluation contexts", flush=True)
  if workdir:
    fresh_lib.record(workdir, fresh_lib.TRAIN, "ppo_prompts", texts, shortened=shortened,
                     excluded=excluded)
  return texts, ids


def write_samples(workdir, writer, step, contexts, responses, scores, gold, n):
  """A table of sample responses: appended to samples.jsonl and shown in TensorBoard."""
  if jax.process_index() != 0:
    return
  rows = []
  for i in range(min(n, len(responses))):
    row = {"step": int(step), "context": contexts[i][-300:], "response": responses[i],
           "score": float(scores[i])}
    if gold is not None:
      row["gold"] = float(gold[i])
    rows.append(row)
  files.append_text(files.join(workdir, "samples.jsonl"),
                    "".join(json.dumps(r) + "\n" for r in rows))
  if writer._tb is not None:  # pylint: disable=protected-access
    md = "| score | gold | context (end) | response |\n|---|---|---|---|\n" + "\n".join(
        f"| {r['score']:.3f} | {r.get('gold', float('nan')):.3f} | "
        f"{r['context'][-80:]!r} | {r['response'][:200]!r} |" for r in rows)
    writer._tb.add_text("samples", md, int(step))  # pylint: disable=protected-access


def mean_where(x, keep) -> float:
  """Mean of x over the rows `keep` marks; NaN when it marks none."""
  x, keep = np.asarray(x, np.float64), np.asarray(keep, bool)
  return float(x[keep].mean()) if keep.any() else float("nan")


def iteration_metrics(out, contexts, setup, is_synthetic) -> dict:
  """Host-side metrics of one rollout: the PM score of the replies that stopped and the stop
  rate apart (`objective/scores`, the reward, mixes the two), gold on the synthetic task,
  the sampler's logp gap comes with the update's metrics."""
  host = jax.device_get({k: out[k] for k in ("stopped", "pm_raw", "pm_score")})
  row = {"objective/stop_rate": float(np.mean(host["stopped"])),
         "objective/pm_stopped": mean_where(host["pm_score"], host["stopped"]),
         "objective/pm_raw": float(np.mean(host["pm_raw"]))}
  texts = setup.texts(out)
  gold = labelers.GoldScorer().score(contexts, texts) if is_synthetic else None
  if gold is not None:
    row["objective/gold"] = float(np.mean(gold))
  if "test_scores" in out:
    row["objective/test_pm_stopped"] = mean_where(jax.device_get(out["test_scores"]),
                                                  host["stopped"])
  return row, texts, gold


def run(config, workdir: str):
  """The PPO stage; returns (final state, eval dict). Rerun on the same workdir to resume."""
  validate(config)
  stage = runner.open_stage(config, workdir, mesh_fn=lambda c: mesh_lib.make_mesh(c.mesh))
  setup = Setup(config, stage.mesh)
  with config.unlocked():
    config.model = setup.policy_cfg  # the policy's model: what load_lm reads back
  stage.write_config()
  stage.save_tokenizer(setup.tok)

  is_synthetic = config.prompts.source == "synthetic"
  contexts, ids = build_prompts(config, setup, stage.workdir)
  batches = prompts_lib.PromptBatches(ids, config.ppo.batch_size, config.prompts.seed)
  if stage.resuming:
    state, data_state = stage.restore(setup.abstract)
    batches.set_state(data_state)
  else:
    state = setup.init_state()
  total = int(config.train.total_steps)
  stop_at = int(config.train.get("stop_at_step", 0))
  start = int(jax.device_get(state.step))
  last = min(total, stop_at) if stop_at else total
  progress = metrics_lib.Progress(start, total, "ppo")
  num_updates = int(config.ppo.epochs) * int(config.ppo.num_minibatches)
  guard = runner._NonfiniteGuard(config.train.get("max_nonfinite", 10),  # pylint: disable=protected-access
                                 stage.checkpointer)
  try:
    for it in range(start + 1, last + 1):
      t0 = time.perf_counter()
      rows, prompt_ids = next(batches)
      key = jax.random.fold_in(jax.random.fold_in(state.rng, it), 0)
      out = setup.run_rollout(state.params, state.value_params, prompt_ids, key)
      jax.block_until_ready(out["scores"])
      t1 = time.perf_counter()
      batch = {k: out[k] for k in BATCH_KEYS}
      with mesh_lib.activate(setup.mesh):
        state, metrics = setup.update(state, batch)
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      t2 = time.perf_counter()
      ctx = [contexts[i] for i in rows]
      host_row, texts, gold = iteration_metrics(out, ctx, setup, is_synthetic)
      row = {**metrics, **host_row, "time/rollout_s": t1 - t0, "time/update_s": t2 - t1}
      stage.writer.write(it, row)
      progress.update(1, score=row["objective/scores"], kl=row["objective/kl"])
      if config.train.sample_every and (it % config.train.sample_every == 0 or it == 1):
        write_samples(stage.workdir, stage.writer, it, ctx, texts, jax.device_get(out["scores"]),
                      gold, config.train.num_samples_shown)
      # An iteration whose every minibatch update was non-finite changed nothing; too many
      # in a row stop the run (the metrics are already on the host: no extra sync).
      guard.check(it, [{"nonfinite_steps": float(metrics["nonfinite_steps"] >= num_updates)}])
      # An iteration is a rollout and an update: agreeing on SIGTERM each one costs nothing.
      stop = preemption.should_stop(it, force_sync=True)
      if stop or stage.checkpointer.should_save(it, last):
        stage.checkpointer.save(it, state, batches.get_state())
        guard.saved(it)
      if stop:
        progress.close()
        stage.close()
        raise Preempted(f"SIGTERM after iteration {it} of {total}; checkpoint "
                        f"{stage.checkpointer.directory}/{it} saved; rerun the same command to "
                        "continue")
  finally:
    progress.close()  # before any error line, so the bar never redraws after it
  stage.checkpointer.wait()
  result = None
  if int(jax.device_get(state.step)) >= total:
    result = ppo_eval.final_eval(setup, state, stage.workdir, is_synthetic)
    stage.save_json("ppo_eval.json", result)
    print(json.dumps(result), flush=True)
  stage.close()
  return state, result


__all__ = ["run", "Setup", "PM", "state_shardings", "check_same_tokenizer"]
