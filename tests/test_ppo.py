"""PPO: GAE against a plain loop, KL estimators, the first update's ratio through the real
rollout, sharded vs one-device updates, token-space reward vs the text scorer, and the
stage end to end (load_lm and chat read its workdir; SIGKILL and rerun changes nothing)."""
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental.compilation_cache import compilation_cache
import pytest

from tests import procs, rl_runs

from configs import models
from configs import ppo as ppo_config
from hh_jax import chat, main
from hh_jax.errors import UserError
from hh_jax.model import params as params_lib
from hh_jax.model import sampling, transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.rl import ppo_stage, reward
from hh_jax.rl import rollout as rollout_lib
from hh_jax.train import ppo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gae_loop(rewards, values, mask, gamma, lam):
  """GAE written the slow obvious way, one response at a time."""
  adv = np.zeros_like(rewards)
  for b in range(rewards.shape[0]):
    n = int(mask[b].sum())
    last = 0.0
    for t in reversed(range(n)):
      next_v = values[b, t + 1] if t + 1 < n else 0.0
      delta = rewards[b, t] + gamma * next_v - values[b, t]
      last = delta + gamma * lam * last
      adv[b, t] = last
  return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 1.0), (0.9, 0.5), (1.0, 0.0)])
def test_gae_matches_plain_loop(gamma, lam):
  rng = np.random.default_rng(int(gamma * 100 + lam * 10))
  b, t = 6, 9
  lengths = np.array([9, 1, 0, 5, 8, 3])
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  rewards = rng.normal(size=(b, t)).astype(np.float32)
  values = rng.normal(size=(b, t)).astype(np.float32)
  # Whatever sits in the padding must not leak into a response's advantages.
  rewards_junk = np.where(mask > 0, rewards, 100.0).astype(np.float32)
  values_junk = np.where(mask > 0, values, -100.0).astype(np.float32)
  adv, ret = ppo.gae(rewards_junk, values_junk, mask, gamma=gamma, lam=lam)
  want_adv, want_ret = _gae_loop(rewards * mask, values * mask, mask, gamma, lam)
  np.testing.assert_allclose(np.asarray(adv), want_adv, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ret), want_ret, atol=1e-5)


def test_whiten_uses_valid_tokens_only():
  x = jnp.asarray([[1.0, 2.0, 3.0, 50.0], [4.0, 5.0, -9.0, -9.0]])
  mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]])
  w = np.asarray(ppo.whiten(x, mask))
  valid = w[np.asarray(mask) > 0]
  assert abs(valid.mean()) < 1e-6 and abs(valid.std() - 1.0) < 1e-3
  assert (w[np.asarray(mask) == 0] == 0).all()


def test_kl_estimates_k3_never_negative_k1_exact():
  rng = np.random.default_rng(0)
  for _ in range(20):
    logp = rng.normal(-2, 1, size=(5, 7)).astype(np.float32)
    ref = logp + rng.normal(0, 0.5, size=(5, 7)).astype(np.float32)
    mask = (rng.random((5, 7)) < 0.7).astype(np.float32)
    k1, k3 = ppo.kl_estimates(logp, ref, mask)
    assert (np.asarray(k3) >= 0).all()
    np.testing.assert_allclose(np.asarray(k1), ((logp - ref) * mask).sum(-1), rtol=1e-5,
                               atol=1e-5)
  k1, k3 = ppo.kl_estimates(logp, logp, mask)
  assert float(jnp.abs(k1).max()) == 0 and float(jnp.abs(k3).max()) == 0


def test_rewards_put_score_on_last_token_and_penalize_kl():
  logp = jnp.asarray([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
  ref = jnp.asarray([[-1.5, -2.0, -1.0], [-2.0, -1.0, 0.0]])
  mask = jnp.asarray([[1, 1, 0], [1, 0, 0]])
  r = np.asarray(ppo.token_rewards(jnp.asarray([2.0, -1.0]), logp, ref, mask, 0.1))
  np.testing.assert_allclose(r, [[-0.05, 2.0, 0.0], [-0.1 - 1.0, 0.0, 0.0]], atol=1e-6)


def test_adaptive_kl_moves_toward_target():
  up = float(ppo.adaptive_kl(jnp.float32(0.1), jnp.float32(10.0), target=1.0, horizon=100,
                             batch=10))
  down = float(ppo.adaptive_kl(jnp.float32(0.1), jnp.float32(0.1), target=1.0, horizon=100,
                               batch=10))
  assert up == pytest.approx(0.1 * (1 + 0.2 * 0.1)) and down < 0.1
  assert float(ppo.adaptive_kl(jnp.float32(0.1), jnp.float32(9.0), target=0.0, horizon=100,
                               batch=10)) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------
# Rollout and update on random `test`-rung models.


def _ppo_cfg(**kw):
  c = ppo_config.get_config("runlocal=True").ppo
  c.update(kw)
  return c


def _nets(size):
  cfg = models.get(size)
  cfg.init_std = 0.2
  vcfg = ml_collections.ConfigDict(dict(cfg))
  vcfg.heads = ("scalar",)
  policy, value = transformer.Transformer(cfg), transformer.Transformer(vcfg)
  x = jnp.zeros((1, 8), jnp.int32)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  p = nn.unbox(policy.init(jax.random.PRNGKey(0), x)["params"])
  v = nn.unbox(value.init(jax.random.PRNGKey(1), x)["params"])
  return cfg, policy, value, p, v


@pytest.fixture(scope="module")
def nets():
  return _nets("test")


def _prompts(batch, lengths, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(6, vocab, size=n)) for n in lengths[:batch]]


def _rollout(nets, prompts, bucket, new_tokens, stops, key=3, params=None):
  cfg, policy, value, p, v = nets
  models_ = rollout_lib.Models(policy, policy, value, value)
  scoring = rollout_lib.Scoring(eoc_id=5, stop_ids=stops, no_stop_penalty=-3.0,
                                pm_seq_len=128)
  settings = sampling.Settings(max_new_tokens=new_tokens, stop_ids=stops)
  tokens, mask = sampling.left_pad(prompts, bucket, len(prompts))
  cache = transformer.init_cache(cfg, len(prompts), bucket + new_tokens)
  fn = jax.jit(rollout_lib.make_rollout(models_, scoring, settings))
  out, _ = fn(params if params is not None else p, p, v, v, rollout_lib.pm_stats(0.0, 1.0),
              tokens, mask, cache, jax.random.PRNGKey(key))
  return out


def _batch(out):
  return {k: out[k] for k in ppo_stage.BATCH_KEYS}


def test_first_update_ratio_is_one_through_real_rollout(nets):
  cfg, policy, value, p, v = nets
  # Ragged prompts left-padded into a bucket; frequent stop ids so rows end at different steps.
  bucket = sampling.bucket_length(13, sampling.DEFAULT_BUCKETS)
  prompts = _prompts(8, [13, 3, 7, 1, 10, 5, 13, 2], cfg.vocab_size)
  stops = tuple(range(6, 40))
  out = _rollout(nets, prompts, bucket, 12, stops)
  lengths = np.asarray(out["lengths"])
  assert len(set(lengths.tolist())) > 1 and np.asarray(out["stopped"]).any()
  # The sampler's own log-probs (KV cache) and the training forward's agree.
  m = np.asarray(out["response_mask"]) > 0
  np.testing.assert_allclose(np.asarray(out["logp"])[m], np.asarray(out["sampler_logp"])[m],
                             atol=1e-4)
  tx = optax.adam(1e-3)
  state = ppo.init_state(p, v, tx, tx, 0.001, 0)
  _, metrics = jax.jit(ppo.make_update(policy, value, _ppo_cfg(epochs=2)))(state, _batch(out))
  # 1 to float32 rounding: the minibatch forward runs at another batch size than the
  # rollout's, which changes GEMM blocking by an ulp (with one minibatch it is exactly 0).
  assert float(metrics["policy/ratio_maxdev_first"]) < 1e-5
  assert float(metrics["policy/approxkl_first"]) < 1e-11
  assert float(metrics["objective/kl"]) == 0.0  # the policy is its own reference here
  assert float(metrics["policy/approxkl_avg"]) > 0  # later minibatches moved


def test_update_improves_the_surrogate(nets):
  cfg, policy, value, p, v = nets
  prompts = _prompts(8, [6] * 8, cfg.vocab_size, seed=1)
  out = _rollout(nets, prompts, 8, 6, ())
  batch = _batch(out)
  # A reward that only likes responses starting with an even token.
  batch["scores"] = jnp.where(batch["response"][:, 0] % 2 == 0, 1.0, -1.0)
  tx = optax.adam(3e-3)
  state = ppo.init_state(p, v, tx, tx, 0.0, 0)
  update = jax.jit(ppo.make_update(policy, value, _ppo_cfg(epochs=4, num_minibatches=1)))
  even = lambda prm: float(jnp.mean(jnp.where(  # noqa: E731
      batch["scores"] > 0, ppo.token_logp(ppo.response_logits(
          policy, prm, batch["tokens"], batch["mask"], 6)[0], batch["response"])[:, 0], 0.0)))
  before = even(state.params)
  state, _ = update(state, batch)
  assert even(state.params) > before


@pytest.mark.parametrize("epochs,num_mb", [(2, 1), (1, 2)])
def test_update_computing_old_logp_equals_the_rollouts(nets, epochs, num_mb):
  """The update on a batch without logp/values (its first step's forward gives them, or a
  forward pass first with several minibatches) moves the params as the update on the
  rollout's own logp/values does, and reports the same metrics."""
  cfg, policy, value, p, v = nets
  out = _rollout(nets, _prompts(8, [9, 4, 6, 9, 2, 7, 9, 5], cfg.vocab_size, seed=4), 16, 8,
                 tuple(range(6, 20)))
  full = {**_batch(out), **{k: out[k] for k in ("logp", "values", "entropy")}}
  full["scores"] = jnp.where(full["response"][:, 0] % 2 == 0, 1.0, -1.0)
  lean = {k: full[k] for k in ppo_stage.BATCH_KEYS}
  assert "logp" not in lean and "values" not in lean
  tx = optax.sgd(0.05)  # plain SGD: Adam's g/√v would magnify ulp-level differences
  update = jax.jit(ppo.make_update(policy, value, _ppo_cfg(epochs=epochs,
                                                           num_minibatches=num_mb)))
  got = [update(ppo.init_state(p, v, tx, tx, 0.05, 0), b) for b in (full, lean)]
  (sa, ma), (sb, mb) = jax.device_get(got)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(sa.params),
                                                         jax.tree.leaves(p)))
  assert moved > 1e-3
  for a, b in ((sa.params, sb.params), (sa.value_params, sb.value_params)):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), a, b)
  for k in ma:
    np.testing.assert_allclose(ma[k], mb[k], atol=1e-4, rtol=1e-4, err_msg=k)
  assert float(mb["rollout/sampler_logp_gap"]) < 1e-4
  if num_mb == 1:  # the old log-probs are the first step's own: its ratio is exactly 1
    assert float(mb["policy/ratio_maxdev_first"]) == 0.0


def test_nonfinite_minibatch_updates_are_skipped_and_counted(nets):
  # One NaN score makes that row's advantages (after whitening, every row's) NaN: every
  # minibatch update is skipped, params and Adam state unchanged, and counted.
  cfg, policy, value, p, v = nets
  out = _rollout(nets, _prompts(8, [6] * 8, cfg.vocab_size, seed=1), 8, 6, ())
  batch = _batch(out)
  batch["scores"] = batch["scores"].at[3].set(jnp.nan)
  tx = optax.adam(3e-3)
  state = ppo.init_state(p, v, tx, tx, 0.0, 0)
  update = jax.jit(ppo.make_update(policy, value, _ppo_cfg(epochs=2, num_minibatches=2)))
  new, metrics = update(state, batch)
  assert float(metrics["nonfinite_steps"]) == 4.0  # 2 epochs × 2 minibatches
  for a, b in ((state.params, new.params), (state.opt_state, new.opt_state),
               (state.value_params, new.value_params),
               (state.value_opt_state, new.value_opt_state)):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  assert int(new.step) == 1
  batch["scores"] = jnp.zeros_like(batch["scores"]).at[0].set(1.0)  # finite again: it learns
  new, metrics = update(new, batch)
  assert float(metrics["nonfinite_steps"]) == 0.0
  assert not np.array_equal(np.asarray(jax.tree.leaves(new.params)[0]),
                            np.asarray(jax.tree.leaves(state.params)[0]))


@pytest.mark.parametrize("shape,value_kind,size", [
    ((2, 2, 2), "pm", "test"), ((1, 2, 4), "pm", "test"), ((2, 2, 2), "shared", "test"),
    ((1, 2, 4), "shared", "test"), ((1, 2, 4), "pm", "llama-test")])
def test_sharded_update_equals_one_device(nets, shape, value_kind, size):
  # Compiled fresh: loaded back from JAX's persistent cache after other programs have run,
  # an 8-device update's second call can deadlock XLA:CPU's in-process collectives (a
  # rendezvous timeout, then abort): seen 3 times on 2026-12-03 with jax 0.10 for llama-test,
  # once for ((1, 2, 4), shared, test) in a fresh-clone CI run; never with the cache off.
  enabled = jax.config.jax_enable_compilation_cache
  compilation_cache.reset_cache()
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    _sharded_update_equals_one_device(nets if size == "test" else _nets(size), shape,
                                      value_kind)
  finally:
    jax.config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()


def _sharded_update_equals_one_device(nets, shape, value_kind):
  cfg, policy, value, p, v = nets
  prompts = _prompts(8, [9, 4, 6, 9, 2, 7, 9, 5], cfg.vocab_size, seed=2)
  out = _rollout(nets, prompts, 16, 8, tuple(range(6, 20)))
  batch = jax.device_get(_batch(out))
  pcfg = _ppo_cfg(epochs=2, num_minibatches=2, value=value_kind)
  if value_kind == "shared":
    scfg = ml_collections.ConfigDict(dict(cfg))
    scfg.heads = ("lm", "scalar")
    pol = transformer.Transformer(scfg)
    val = None
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    fresh = nn.unbox(pol.init(jax.random.PRNGKey(5), jnp.zeros((1, 8), jnp.int32))["params"])
    params, vparams = {**p, "scalar_head": fresh["scalar_head"]}, {}
  else:
    pol, val, params, vparams = policy, value, p, v
  # Plain SGD: Adam's g/√v would magnify reduction-order rounding of near-zero gradients.
  tx = optax.sgd(0.05)
  vtx = None if val is None else optax.sgd(0.05)
  results = []
  for mesh in (mesh_lib.make_mesh(ml_collections.ConfigDict(
      {"data": shape[0], "fsdp": shape[1], "tensor": shape[2]})), mesh_lib.one_device_mesh()):
    abstract, sh = ppo_stage.state_shardings(pol, val, tx, vtx, jnp.zeros((8, 8), jnp.int32),
                                             mesh)
    bsh = {k: mesh_lib.batch_sharding(mesh, np.ndim(x)) for k, x in batch.items()}
    with mesh_lib.activate(mesh):
      state = jax.jit(lambda a, b: ppo.init_state(a, b, tx, vtx, 0.001, 0), out_shardings=sh)(
          params, vparams)
      if mesh.size > 1:  # the state really is split over the devices
        emb = state.params["embedding"]
        assert emb.sharding.shard_shape(emb.shape) != emb.shape
      update = jax.jit(ppo.make_update(pol, val, pcfg), in_shardings=(sh, bsh),
                       out_shardings=(sh, mesh_lib.replicated(mesh)))
      state, metrics = update(state, jax.device_put(batch, bsh))
      state, metrics = update(state, jax.device_put(batch, bsh))
    results.append(jax.device_get((state.params, state.value_params, metrics)))
  (pa, va, ma), (pb, vb, mb) = results
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(pa), jax.tree.leaves(p)))
  assert moved > 1e-3  # the updates did something worth comparing
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), pa, pb)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), va, vb)
  for k in ma:
    np.testing.assert_allclose(ma[k], mb[k], atol=1e-4, rtol=1e-4, err_msg=k)


def test_pm_inputs_put_eoc_after_content_and_truncate_the_start():
  scoring = rollout_lib.Scoring(eoc_id=9, stop_ids=(7,), no_stop_penalty=-3.0, pm_seq_len=6)
  prompt = jnp.asarray([[0, 0, 11, 12], [13, 14, 15, 16]])
  pmask = jnp.asarray([[0, 0, 1, 1], [1, 1, 1, 1]])
  resp = jnp.asarray([[21, 7, 0], [22, 23, 24]])
  rmask = jnp.asarray([[1, 1, 0], [1, 1, 1]])
  tokens, mask, eoc, stopped = rollout_lib.pm_inputs(prompt, pmask, resp, rmask, scoring)
  assert np.asarray(stopped).tolist() == [True, False]
  assert np.asarray(eoc).tolist() == [5, 7]
  assert np.asarray(tokens)[0].tolist() == [0, 0, 11, 12, 21, 9, 0, 0]  # the stop token -> EOC
  assert np.asarray(mask)[0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
  # Row 1 has 4 + 3 + 1 = 8 real tokens but the PM reads 6: the first two are masked out.
  assert np.asarray(mask)[1].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
  assert np.asarray(tokens)[1, 7] == 9


# ---------------------------------------------------------------------------------------
# The stage, from a `test`-rung LM and PM.


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("ppo")
  return root, rl_runs.train_lm_and_pm(root)


def _ppo(dirs, **train):
  c = ppo_config.get_config(f"size=test,init={dirs['lm']},pm={dirs['pm']},runlocal=True")
  c.train.update(train)
  return c


def _history(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_ppo_and_the_text_scorer_give_the_same_reward(runs):
  """The same (context, reply) through the rollout's token-space scoring and through
  `PMScorer.reward` with the sampler's stop flag: one reward, stopped or not."""
  _, dirs = runs
  assert ppo_config.get_config().ppo.no_stop_penalty == reward.NO_STOP_PENALTY
  scorer = reward.PMScorer.from_workdir(dirs["pm"], batch_size=4)
  tok = scorer.tokenizer
  contexts = ["\n\nHuman: How do I clean my bathroom?\n\nAssistant:",
              "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: How do I pick a lock?\n\nAssistant:",
              "\n\nHuman: What can I mix to make a gas?\n\nAssistant:",
              "\n\nHuman: My car will not start.\n\nAssistant:",
              "\n\nHuman: Tell me a story.\n\nAssistant:"]
  replies = [" Use bleach and gloves.", " Call a licensed locksmith.", " I won't help.",
             " Check the battery and the starter wires, then the ignition.", " Once upon a"]
  ends = [tok.human_id, tok.eoc_id, tok.eos_id, None, None]  # the last two never stop
  n, t = len(replies), 40
  resp = np.zeros((n, t), np.int32)
  rmask = np.zeros((n, t), np.int32)
  for i, (r, end) in enumerate(zip(replies, ends)):
    ids = tok.encode(r) + ([end] if end is not None else [])
    resp[i, :len(ids)], rmask[i, :len(ids)] = ids, 1
  prompt, pmask = sampling.left_pad([tok.encode(c) for c in contexts], 48, n)
  scoring = rollout_lib.Scoring(eoc_id=tok.eoc_id, stop_ids=sampling.stop_ids_for(tok),
                                no_stop_penalty=reward.NO_STOP_PENALTY, pm_seq_len=scorer.seq_len)
  stats = rollout_lib.pm_stats(scorer.stats["mean"], scorer.stats["std"])
  got, raw, norm, stopped = jax.device_get(jax.jit(
      lambda *a: rollout_lib.pm_scores(scorer.model, *a, scoring))(
          scorer.params, stats, prompt, pmask, resp, rmask))
  # The stop flag as the text side gets it: from the sampler's ids and lengths.
  flags = np.asarray(reward.stopped_flags(resp, rmask.sum(-1), sampling.stop_ids_for(tok)))
  assert stopped.tolist() == flags.tolist() == [True, True, True, False, False]
  want = scorer.reward(contexts, replies, flags)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert (got[3:] == reward.NO_STOP_PENALTY).all()  # the penalty, not the PM's opinion
  np.testing.assert_allclose(norm, scorer.score(contexts, replies), atol=1e-5)
  np.testing.assert_allclose(raw, scorer.score_raw(contexts, replies), atol=1e-4)


def test_value_starts_on_the_reward_scale(runs):
  """The value model copied from the PM starts on the reward's scale: the PM's normalization
  is folded into its head. The normalized score has variance 1 on the PM's reference set;
  the first iteration's value loss stays below it, and V's mean sits within one reward std
  of the returns'. Unfolded, both fail: the test PM's own mean is 2.5 of its std above 0,
  and a PM whose raw scores sit 40 higher (same rewards) puts V ~400 std off."""
  _, dirs = runs
  c = _ppo(dirs, total_steps=1)
  c.ppo.num_minibatches = 1  # loss/value_avg is then the first minibatch's
  setup = ppo_stage.Setup(c, mesh_lib.make_mesh(c.mesh))
  _, ids = ppo_stage.build_prompts(c, setup)
  ids = ids[:c.ppo.batch_size]
  pm_params, pm_stats = setup.pm.params, dict(setup.pm.stats)

  def first_iteration(offset: float, fold: bool = True):
    head = pm_params["scalar_head"]
    setup.pm.params = {**pm_params, "scalar_head": {**head, "bias": head["bias"] + offset}}
    setup.pm.stats = {**pm_stats, "mean": pm_stats["mean"] + offset}
    state = setup.init_state()
    if not fold:
      state = state.replace(value_params=jax.tree.map(jnp.copy, setup.pm.params))
    out = setup.run_rollout(state.params, state.value_params, ids, jax.random.PRNGKey(4))
    with mesh_lib.activate(setup.mesh):
      _, metrics = setup.update(state, {k: out[k] for k in ppo_stage.BATCH_KEYS})
    offset_v = abs(float(metrics["val/values_avg"]) - float(metrics["val/returns_avg"]))
    return (float(metrics["loss/value_avg"]), offset_v,
            float(np.std(jax.device_get(out["scores"]))))

  loss, off, std = first_iteration(0.0)
  # Measured: loss 0.235-0.92, |mean V - mean R| 0.14-1.09, reward std 0.40-0.71 (the batch's
  # reward variance can sit below the loss: this barely trained PM reads the inner positions
  # V uses as noise; 1.09 since the LM corpus took its fact dialogues). The loss stays within
  # the normalized score's unit variance, V's mean within 1.5 of its units; unfolded (below)
  # they are 3 and 2.4, and hundreds with the raw scores shifted.
  assert 0 < loss <= 1.0 and off <= 1.5, (loss, off, std)
  loss40, off40, std40 = first_iteration(40.0)
  assert (loss40, off40, std40) == pytest.approx((loss, off, std), rel=1e-3)
  raw_loss, raw_off, _ = first_iteration(0.0, fold=False)  # 3.0 and 2.4
  assert raw_loss > 1.0 and raw_off > 3 * std, (raw_loss, raw_off, std)
  raw_loss40, raw_off40, _ = first_iteration(40.0, fold=False)  # 668 and 36
  assert raw_loss40 > 100 and raw_off40 > 50 * std, (raw_loss40, raw_off40, std)


def test_stage_runs_and_policy_loads_like_an_lm(runs):
  root, dirs = runs
  work = str(root / "ppo")
  state, result = main.run(_ppo(dirs), work)
  rows = _history(work)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  names = {"objective/kl", "objective/kl_k3", "objective/entropy", "objective/scores",
           "objective/rlhf_reward", "policy/approxkl_avg", "policy/clipfrac_avg",
           "val/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "objective/gold"}
  assert names <= set(rows[0])
  assert rows[0]["policy/ratio_maxdev_first"] < 1e-5
  assert all(r["objective/kl_k3"] >= 0 for r in rows)
  for k in ("gold_initial", "gold_final", "gold_sem", "pm_stopped_initial", "pm_stopped_final",
            "stop_rate_initial", "stop_rate_final", "reward_initial", "reward_final", "kl",
            "sqrt_kl_r2"):
    assert k in result, k
  assert "objective/pm_stopped" in rows[0] and "objective/stop_rate" in rows[0]
  # The evaluation's KL reads the sampler's log-probs (the stage's rollout leaves the policy
  # forward to the update): the initial policy is its reference to float32 rounding.
  assert result["num_prompts"] == 16 and abs(result["kl_initial"]) < 1e-5
  # Prompts kept whole within the PM's seq_len (96) minus the reply (8); turns lost, counted.
  assert result["prompts"]["budget"] == 88 and result["prompts"]["pool"] == 64
  assert result["prompts"]["pool_shortened"] > 0
  with open(os.path.join(work, "ppo_eval.json")) as f:
    assert json.load(f)["gold_final"] == result["gold_final"]
  for png in ("pm_vs_sqrt_kl.png", "gold_vs_sqrt_kl.png"):
    assert os.path.getsize(os.path.join(work, png)) > 1000
  assert os.path.exists(os.path.join(work, "samples.jsonl"))
  # The policy reads back through load_lm, equal to the state's params, and chats.
  cfg, params, tok = params_lib.load_lm(work)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               params, jax.device_get(state.params))
  sampler = sampling.Sampler(cfg, params)
  out = io.StringIO()
  settings = sampling.Settings(max_new_tokens=4, stop_ids=sampling.stop_ids_for(tok))
  chat.session(sampler, tok, iter(["How do I clean my bathroom?"]), settings, 0, out)
  assert "Assistant:" in out.getvalue()


def test_user_errors(runs, tmp_path):
  _, dirs = runs
  c = _ppo(dirs)
  c.pm.workdir = dirs["lm"]  # an LM, not a PM
  with pytest.raises(UserError, match="not a PM"):
    main.run(c, str(tmp_path / "a"))
  c = _ppo(dirs)
  os.rename(os.path.join(dirs["pm"], "reward_stats.json"), str(tmp_path / "stats"))
  try:
    with pytest.raises(UserError, match="reward_stats.json"):
      main.run(c, str(tmp_path / "b"))
  finally:
    os.rename(str(tmp_path / "stats"), os.path.join(dirs["pm"], "reward_stats.json"))
  other = tmp_path / "other_pm"
  subprocess.run(["cp", "-r", dirs["pm"], str(other)], check=True, timeout=120)
  with open(other / "tokenizer.model", "ab") as f:
    f.write(b"\0")
  c = _ppo(dirs)
  c.pm.workdir = str(other)
  with pytest.raises(UserError, match="different tokenizers"):
    main.run(c, str(tmp_path / "c"))
  c = _ppo(dirs)
  c.ppo.value = "both"
  with pytest.raises(UserError, match="ppo.value"):
    main.run(c, str(tmp_path / "d"))
  c = _ppo(dirs)
  c.sampling.max_new_tokens = 90  # a prompt budget of 96 - 90 = 6 tokens: no request fits
  with pytest.raises(UserError, match=r"last Human turn alone is \d+ tokens, over the prompt "
                     r"budget of 6 \(the PM's data.seq_len 96 - sampling.max_new_tokens 90\)"):
    main.run(c, str(tmp_path / "e"))


def _cli_args(dirs, work, steps):
  return [sys.executable, "-m", "hh_jax.main",
          f"--config=configs/ppo.py:size=test,init={dirs['lm']},pm={dirs['pm']},runlocal=True",
          f"--config.train.total_steps={steps}", "--config.train.ckpt_every=1",
          "--config.train.async_checkpointing=False", "--config.eval.num_prompts=8",
          "--config.eval.bon_n=2", "--config.eval.bon_prompts=2", f"--workdir={work}"]


def test_sigkill_and_rerun_match_uninterrupted(runs, tmp_path):
  _, dirs = runs
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  steps = 6
  ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
  subprocess.run(_cli_args(dirs, ref, steps), cwd=REPO, env=env, check=True,
                 capture_output=True, timeout=900)
  with procs.running(_cli_args(dirs, cut, steps), cwd=REPO, env=env,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
    kill_after = int(np.random.default_rng(7).integers(2, 5))  # a seeded random iteration
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      path = os.path.join(cut, "metrics.jsonl")
      if os.path.exists(path) and len(_history(cut)) >= kill_after:
        break
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  written = len(_history(cut))
  assert written < steps  # it really was cut short
  subprocess.run(_cli_args(dirs, cut, steps), cwd=REPO, env=env, check=True,
                 capture_output=True, timeout=900)
  # The rerun restored the newest checkpoint (at most one iteration lost), dropped the
  # metrics rows after it and continued: the file holds each iteration once, in order.
  history, want = _history(cut), _history(ref)
  assert [r["step"] for r in history] == [r["step"] for r in want]
  skip = ("time/", "tokens_per_s")
  for w, got in zip(want, history):
    for k, v in w.items():
      if not k.startswith(skip):
        if isinstance(v, str):  # a non-finite value ("nan": e.g. no reply stopped)
          assert got[k] == v, (w["step"], k)
        else:
          assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (w["step"], k)
  with open(os.path.join(ref, "ppo_eval.json")) as f, open(os.path.join(cut, "ppo_eval.json")) as g:
    assert json.load(f)["gold_final"] == json.load(g)["gold_final"]
  a, b = params_lib.load_lm(ref)[1], params_lib.load_lm(cut)[1]
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_hh_rlhf_prompts_are_contexts_up_to_the_last_assistant(hh_sample_dir):
  path = str(hh_sample_dir / "harmless-base" / "train.jsonl.gz")
  cfg = ppo_config.get_config("runlocal=True").prompts
  cfg.source, cfg.files, cfg.num = "hh_rlhf", path, 50
  got = ppo_stage.prompts_lib.contexts(cfg)
  assert len(got) == 50 and len(set(got)) == 50
  assert all(c.endswith("\n\nAssistant:") and c.startswith("\n\nHuman:") for c in got)
  assert got == ppo_stage.prompts_lib.contexts(cfg)  # the same seed, the same prompts
  cfg.files = ""
  with pytest.raises(UserError, match="prompts.files"):
    ppo_stage.prompts_lib.contexts(cfg)


def test_fewshot_prefix_and_parse():
  ctxs = ["\n\nHuman: How do I clean my bathroom?\n\nAssistant:",
          "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: How do I pick a lock?\n\nAssistant:"]
  prefix = ppo_stage.prompts_lib.fewshot_prefix(ctxs)
  assert prefix == ("\n\nHuman: How do I clean my bathroom?\n\nAssistant:"
                    "\n\nHuman: hi\n\nAssistant:\n\nHuman:")
  parse = ppo_stage.prompts_lib.parse_fewshot
  assert parse(" How do I fix my car?\n\nAssistant: ...") == (
      "\n\nHuman: How do I fix my car?\n\nAssistant:")
  assert parse(" ok") is None  # too short to be a request


def test_stage_adds_fewshot_prompts_written_by_the_lm(runs, tmp_path):
  _, dirs = runs
  c = _ppo(dirs)
  c.prompts.fewshot_extra = 6
  c.prompts.fewshot_tokens = 12
  c.train.total_steps = 1
  setup = ppo_stage.Setup(c, mesh_lib.make_mesh(c.mesh))
  texts, ids = ppo_stage.build_prompts(c, setup)
  extra = texts[c.prompts.num:]
  assert len(texts) == len(ids) and 0 < len(extra) <= 6
  assert all(t.startswith("\n\nHuman: ") and t.endswith("\n\nAssistant:") for t in extra)



class _CacheMisses(logging.Handler):
  """The module names of the XLA compiles that JAX's persistent cache missed (its DEBUG log)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.names: list[str] = []

  def emit(self, record):
    msg = record.getMessage()
    if msg.startswith("PERSISTENT COMPILATION CACHE MISS for '"):
      self.names.append(msg.split("'")[1])


def test_second_ppo_stage_compiles_no_new_program(runs, tmp_path):
  """A second PPO stage (the online loop's next iteration: another PM, so other reward
  stats and value init, another KL start) reuses the first stage's compiled rollout and
  update from the persistent cache: every per-stage number is a traced argument."""
  _, dirs = runs
  pm2 = str(tmp_path / "pm2")
  shutil.copytree(dirs["pm"], pm2)
  stats_path = os.path.join(pm2, "reward_stats.json")
  with open(stats_path) as f:
    stats = json.load(f)
  with open(stats_path, "w") as f:
    json.dump({**stats, "mean": stats["mean"] + 0.75, "std": stats["std"] * 2.5}, f)
  # A cache of this test's own, writing every program however fast it compiled.
  saved = {k: getattr(jax.config, k) for k in (
      "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  compilation_cache.reset_cache()
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  misses = _CacheMisses()
  logger = logging.getLogger("jax._src.compiler")
  level = logger.level
  logger.setLevel(logging.DEBUG)
  logger.addHandler(misses)
  try:
    main.run(_ppo(dirs, total_steps=2), str(tmp_path / "first"))
    first = list(misses.names)
    misses.names.clear()
    c = _ppo(dirs, total_steps=2)
    c.pm.workdir = pm2
    c.ppo.kl_coef = 0.25
    main.run(c, str(tmp_path / "second"))
  finally:
    logger.removeHandler(misses)
    logger.setLevel(level)
    compilation_cache.reset_cache()
    for k, v in saved.items():
      jax.config.update(k, v)
  assert {"jit_rollout", "jit_update"} <= set(first), first  # the log names what compiled
  assert misses.names == [], misses.names  # nothing at all: rollout, update, state init, eval
