"""PPO's update by value: each loss and transform against numbers worked out by hand or by
a numpy reference written here, independently of `hh_jax.train.ppo`, with a reference
policy that differs from the policy (identities of the first step, ratio 1 and KL 0,
hold for a wrong loss too when the two are equal)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ppo as ppo_config
from hh_jax.model import sampling, transformer
from hh_jax.rl import rollout as rollout_lib
from hh_jax.train import ppo
from tests.test_ppo import nets  # noqa: F401  (the fixture)


# ---------------------------------------------------------------------------------------
# The losses, on hand-computed numbers (clip 0.2).


def test_policy_loss_takes_the_pessimistic_term():
  # (advantage, ratio) per token; the last token is padding with values that would dominate.
  adv = jnp.asarray([[2.0, 2.0, -1.0, -1.0, 1.0, 100.0]])
  ratio = np.asarray([[1.5, 0.5, 1.5, 0.5, 1.1, 3.0]], np.float32)
  old = jnp.full((1, 6), -2.0)
  logp = old + jnp.log(ratio)
  mask = jnp.asarray([[1, 1, 1, 1, 1, 0]])
  loss, stats = ppo.policy_loss(logp, old, adv, mask, 0.2)
  # Per token max(-A·r, -A·clip(r, 0.8, 1.2)):
  #   A=2, r=1.5: max(-3, -2.4) = -2.4 (clipped)   A=2, r=0.5: max(-1, -1.6) = -1
  #   A=-1, r=1.5: max(1.5, 1.2) = 1.5             A=-1, r=0.5: max(0.5, 0.8) = 0.8 (clipped)
  #   A=1, r=1.1: -1.1 (inside the clip range)
  assert float(loss) == pytest.approx((-2.4 - 1.0 + 1.5 + 0.8 - 1.1) / 5, abs=1e-6)
  assert float(stats["policy/clipfrac_avg"]) == pytest.approx(2 / 5)
  log_r = np.log(ratio[0, :5])
  want_kl = 0.5 * np.mean(log_r ** 2)
  assert float(stats["policy/approxkl_avg"]) == pytest.approx(want_kl, rel=1e-5)
  assert float(stats["policy/ratio_maxdev"]) == pytest.approx(0.5, abs=1e-6)


def test_value_loss_takes_the_pessimistic_clipped_term():
  # (old value, new value, return) per token; V clipped to old ± 0.2.
  old = jnp.asarray([[0.0, 0.0, 0.0, 1.0, 7.0]])
  new = jnp.asarray([[1.0, 1.0, 0.1, 0.0, -9.0]])
  ret = jnp.asarray([[0.0, 2.0, 1.0, -1.0, 9.0]])
  mask = jnp.asarray([[1, 1, 1, 1, 0]])
  loss, stats = ppo.value_loss(new, old, ret, mask, 0.2)
  #   V=1 (clipped 0.2), R=0: max(1, 0.04) = 1        V=1 (0.2), R=2: max(1, 3.24) = 3.24
  #   V=0.1 (inside), R=1: 0.81                        V=0 (clipped 0.8), R=-1: max(1, 3.24)
  assert float(loss) == pytest.approx(0.5 * (1.0 + 3.24 + 0.81 + 3.24) / 4, abs=1e-6)
  assert float(stats["val/clipfrac_avg"]) == pytest.approx(2 / 4)


def test_gae_on_hand_computed_numbers():
  rewards = jnp.asarray([[0.0, 0.0, 1.0], [1.0, -1.0, 9.0]])
  values = jnp.asarray([[0.5, 0.2, 0.4], [0.0, 0.5, 9.0]])
  mask = jnp.asarray([[1, 1, 1], [1, 1, 0]])
  adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.5)
  # Row 0: δ = (0 + 0.2 - 0.5, 0 + 0.4 - 0.2, 1 - 0.4) = (-0.3, 0.2, 0.6);
  #        A = (-0.3 + 0.5·0.5, 0.2 + 0.5·0.6, 0.6) = (-0.05, 0.5, 0.6).
  # Row 1 (2 tokens): δ = (1 + 0.5 - 0, -1 - 0.5) = (1.5, -1.5); A = (1.5 - 0.75, -1.5).
  np.testing.assert_allclose(np.asarray(adv), [[-0.05, 0.5, 0.6], [0.75, -1.5, 0.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(ret), [[0.45, 0.7, 1.0], [0.75, -1.0, 0.0]], atol=1e-6)
  adv, _ = ppo.gae(rewards, values, mask, gamma=0.5, lam=1.0)
  # Row 0: δ = (0 + 0.5·0.2 - 0.5, 0 + 0.5·0.4 - 0.2, 1 - 0.4) = (-0.4, 0, 0.6);
  #        A = (-0.4 + 0.5·0.3, 0 + 0.5·0.6, 0.6) = (-0.25, 0.3, 0.6).
  np.testing.assert_allclose(np.asarray(adv)[0], [-0.25, 0.3, 0.6], atol=1e-6)


def test_whiten_shifts_and_scales_over_valid_tokens():
  x = jnp.asarray([[1.0, 2.0, 3.0, 50.0], [4.0, 5.0, -9.0, -9.0]])
  mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]])
  s = 1 / np.sqrt(2.0)  # valid entries 1..5: mean 3, variance 2
  np.testing.assert_allclose(np.asarray(ppo.whiten(x, mask)),
                             [[-2 * s, -s, 0, 0], [s, 2 * s, 0, 0]], atol=1e-5)
  np.testing.assert_allclose(np.asarray(ppo.whiten(x, mask, shift_mean=False)),
                             [[3 - 2 * s, 3 - s, 3, 0], [3 + s, 3 + 2 * s, 0, 0]], atol=1e-5)


def test_kl_estimates_and_token_rewards_with_a_reference_that_differs():
  logp = jnp.asarray([[-1.0, -2.0, -0.5]])
  ref = jnp.asarray([[-1.5, -1.0, -9.0]])
  mask = jnp.asarray([[1, 1, 0]])
  k1, k3 = ppo.kl_estimates(logp, ref, mask)
  # log ratios (0.5, -1): k1 = -0.5; k3 = Σ e^{-x} - 1 + x = (e^{-0.5} - 0.5) + (e - 2).
  assert float(k1[0]) == pytest.approx(-0.5, abs=1e-6)
  assert float(k3[0]) == pytest.approx(np.exp(-0.5) - 0.5 + np.e - 2.0, abs=1e-5)
  r = ppo.token_rewards(jnp.asarray([2.0]), logp, ref, mask, 0.1)
  np.testing.assert_allclose(np.asarray(r), [[-0.05, 0.1 + 2.0, 0.0]], atol=1e-6)


# ---------------------------------------------------------------------------------------
# What the epochs read: a numpy reference of rewards → GAE → whitening.


def _np_minibatch_reference(scores, logp, ref_logp, values, mask, kl_coef, gamma, lam):
  """Token rewards, GAE and whitened advantages written out in numpy, row by row."""
  b, t = logp.shape
  adv = np.zeros((b, t))
  for i in range(b):
    n = int(mask[i].sum())
    rew = [-kl_coef * (logp[i, j] - ref_logp[i, j]) for j in range(n)]
    if n:
      rew[-1] += scores[i]
    last = 0.0
    for j in reversed(range(n)):
      nxt = values[i, j + 1] if j + 1 < n else 0.0
      last = rew[j] + gamma * nxt - values[i, j] + gamma * lam * last
      adv[i, j] = last
  ret = (adv + values) * mask
  valid = adv[mask > 0]
  white = (adv - valid.mean()) / np.sqrt(valid.var() + 1e-8) * mask
  return white, ret


def _random_batch(seed=0, b=6, t=7):
  rng = np.random.default_rng(seed)
  lengths = np.array([7, 3, 0, 5, 1, 6])[:b]
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  logp = rng.normal(-2, 0.5, (b, t)).astype(np.float32) * mask
  ref = (logp + rng.normal(0.3, 0.4, (b, t)).astype(np.float32)) * mask  # differs from π
  values = rng.normal(0.5, 1.0, (b, t)).astype(np.float32) * mask
  scores = rng.normal(1.0, 1.0, (b,)).astype(np.float32)  # mean 1: the shift matters
  return {"tokens": np.zeros((b, t + 2), np.int32), "mask": np.ones((b, t + 2), np.int32),
          "response": np.zeros((b, t), np.int32), "response_mask": mask, "logp": logp,
          "ref_logp": ref, "values": values, "scores": scores}


def test_minibatch_data_by_value():
  batch = _random_batch()
  data = jax.device_get(ppo.minibatch_data(jax.tree.map(jnp.asarray, batch), jnp.float32(0.2),
                                           gamma=0.9, lam=0.8))
  want_adv, want_ret = _np_minibatch_reference(
      batch["scores"], batch["logp"], batch["ref_logp"], batch["values"],
      batch["response_mask"], 0.2, 0.9, 0.8)
  np.testing.assert_allclose(data["returns"], want_ret, atol=1e-5)
  np.testing.assert_allclose(data["advantages"], want_adv, atol=1e-4)
  # The old log-probs the ratio divides by are the rollout policy's, not the reference's.
  np.testing.assert_array_equal(data["logp"], batch["logp"])
  np.testing.assert_array_equal(data["values"], batch["values"])


# ---------------------------------------------------------------------------------------
# A rollout and one update on `test`-rung models, the reference ≠ the policy.


@pytest.fixture(scope="module")
def two_policies(nets):
  """test_ppo's random `test`-rung policy and value model, plus another policy as reference."""
  cfg, policy, value, params, vparams = nets
  ref = nn.unbox(policy.init(jax.random.PRNGKey(7), jnp.zeros((1, 8), jnp.int32))["params"])
  return cfg, policy, value, params, ref, vparams


def _np_logp(model, params, tokens, mask, response):
  """log softmax at the positions that predict each response token, in numpy."""
  logits = np.asarray(model.apply({"params": params}, tokens, mask)["logits"], np.float64)
  p, t = tokens.shape[1] - response.shape[1], response.shape[1]
  lg = logits[:, p - 1:p - 1 + t]  # [batch, T, vocab]
  lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
  return np.take_along_axis(lg, np.asarray(response)[..., None], -1)[..., 0] - lse


def test_rollout_old_logp_is_the_policy_and_update_uses_it(two_policies):
  cfg, policy, value, params, ref, vparams = two_policies
  rng = np.random.default_rng(3)
  prompts = [list(rng.integers(6, cfg.vocab_size, size=n)) for n in (5, 8, 3, 8)]
  stops = tuple(range(6, 30))
  scoring = rollout_lib.Scoring(eoc_id=5, stop_ids=stops, no_stop_penalty=-3.0,
                                pm_seq_len=128)
  settings = sampling.Settings(max_new_tokens=6, stop_ids=stops)
  tokens, mask = sampling.left_pad(prompts, 8, 4)
  cache = transformer.init_cache(cfg, 4, 14)
  fn = jax.jit(rollout_lib.make_rollout(rollout_lib.Models(policy, policy, value, value),
                                        scoring, settings))
  out, _ = fn(params, ref, vparams, vparams, rollout_lib.pm_stats(0.0, 1.0), tokens, mask,
              cache, jax.random.PRNGKey(0))
  out = jax.device_get(out)
  # The PM's mean/std are an argument of the program, not constants in it: other statistics
  # reuse the compiled rollout (the online loop's PMs differ in them) and rescale the score.
  again, _ = fn(params, ref, vparams, vparams, rollout_lib.pm_stats(1.0, 2.0), tokens, mask,
                transformer.init_cache(cfg, 4, 14), jax.random.PRNGKey(0))
  assert fn._cache_size() == 1  # pylint: disable=protected-access
  assert 0 < out["stopped"].mean() < 1  # both sides of the reward's rule are exercised
  np.testing.assert_allclose(np.asarray(again["pm_score"]), (out["pm_raw"] - 1.0) / 2.0,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(again["scores"]),
                             np.where(out["stopped"], (out["pm_raw"] - 1.0) / 2.0, -3.0),
                             rtol=1e-5, atol=1e-5)
  m = out["response_mask"].astype(bool)
  want = _np_logp(policy, params, out["tokens"], out["mask"], out["response"])
  want_ref = _np_logp(policy, ref, out["tokens"], out["mask"], out["response"])
  assert np.abs(want - want_ref)[m].mean() > 0.1  # the two policies really differ
  np.testing.assert_allclose(out["logp"][m], want[m], atol=1e-4)
  np.testing.assert_allclose(out["ref_logp"][m], want_ref[m], atol=1e-4)
  # One epoch, one minibatch: the first ratio is π / π_old = 1 exactly when the old
  # log-probs are π's; the KL and the value loss match the numpy reference.
  c = ppo_config.get_config("runlocal=True").ppo
  c.update(epochs=1, num_minibatches=1, gamma=1.0, lam=0.95)
  state = ppo.init_state(params, vparams, optax.sgd(0.0), optax.sgd(0.0), 0.05, 0)
  batch = {k: out[k] for k in ("tokens", "mask", "response", "response_mask", "logp",
                               "ref_logp", "values", "scores")}
  _, metrics = jax.jit(ppo.make_update(policy, value, c))(state, batch)
  assert float(metrics["policy/ratio_maxdev_first"]) < 1e-5
  mf = m.astype(np.float64)
  kl = ((out["logp"] - out["ref_logp"]) * mf).sum(-1)
  assert float(metrics["objective/kl"]) == pytest.approx(kl.mean(), rel=1e-4, abs=1e-5)
  adv, ret = _np_minibatch_reference(out["scores"], out["logp"], out["ref_logp"],
                                     out["values"], mf, 0.05, 1.0, 0.95)
  assert float(metrics["val/returns_avg"]) == pytest.approx(ret[m].mean(), rel=1e-4, abs=1e-5)
  want_vf = 0.5 * np.mean(np.square(out["values"] - ret)[m])
  assert float(metrics["loss/value_avg"]) == pytest.approx(want_vf, rel=1e-4, abs=1e-6)
  # At ratio 1 the surrogate is -mean(whitened advantages) = 0: only if they were mean-shifted.
  assert float(metrics["loss/policy_avg"]) == pytest.approx(-adv[m].mean(), abs=1e-5)
  assert abs(float(metrics["loss/policy_avg"])) < 1e-5


# ---------------------------------------------------------------------------------------
# The value model copied from the PM starts on the reward's scale.


def _first_value_loss(two_policies, pm_params, stats, value_params):
  """loss/value_avg of the first update (learning rate 0) and the rollout's rewards."""
  cfg, policy, value, params, ref, _ = two_policies
  rng = np.random.default_rng(5)
  prompts = [list(rng.integers(6, cfg.vocab_size, size=n)) for n in (5, 8, 3, 8, 6, 2, 7, 4)]
  stops = tuple(range(6, 60))
  scoring = rollout_lib.Scoring(eoc_id=5, stop_ids=stops, no_stop_penalty=-3.0,
                                pm_seq_len=128)
  settings = sampling.Settings(max_new_tokens=8, stop_ids=stops)
  tokens, mask = sampling.left_pad(prompts, 8, len(prompts))
  cache = transformer.init_cache(cfg, len(prompts), 16)
  fn = jax.jit(rollout_lib.make_rollout(rollout_lib.Models(policy, policy, value, value),
                                        scoring, settings))
  out, _ = fn(params, ref, value_params, pm_params, stats, tokens, mask, cache,
              jax.random.PRNGKey(1))
  c = ppo_config.get_config("runlocal=True").ppo
  c.update(epochs=1, num_minibatches=1)
  state = ppo.init_state(params, value_params, optax.sgd(0.0), optax.sgd(0.0), 0.001, 0)
  batch = {k: out[k] for k in ("tokens", "mask", "response", "response_mask", "logp",
                               "ref_logp", "values", "scores")}
  _, metrics = jax.jit(ppo.make_update(policy, value, c))(state, batch)
  return float(metrics["loss/value_avg"]), jax.device_get(out)


def test_value_head_folds_the_pm_normalization(two_policies):
  from hh_jax.rl import reward  # pylint: disable=g-import-not-at-top
  *_, vparams = two_policies
  # A PM whose raw scores sit far from 0 (a mean offset of 40), as a trained PM's may.
  head = vparams["scalar_head"]
  pm = {**vparams, "scalar_head": {**head, "bias": head["bias"] + 40.0}}
  _, probe = _first_value_loss(two_policies, pm, rollout_lib.pm_stats(0.0, 1.0), pm)
  raw = probe["pm_raw"][probe["stopped"]]
  mean, std = float(raw.mean()), float(raw.std()) + 1e-3  # the PM's reference statistics
  stats = rollout_lib.pm_stats(mean, std)
  folded = reward.normalized_head(pm, mean, std)
  x = jnp.zeros((2, 6), jnp.int32)
  out_raw = two_policies[2].apply({"params": pm}, x)["scalar"]
  out_folded = two_policies[2].apply({"params": folded}, x)["scalar"]
  np.testing.assert_allclose(np.asarray(out_folded), (np.asarray(out_raw) - mean) / std,
                             rtol=1e-4, atol=1e-4)
  # A random PM reads its inner positions no better than noise, so the folded loss is not
  # tiny (test_ppo.py checks a trained PM's against the score variance); unfolded, V is
  # ~40 from every return.
  loss, out = _first_value_loss(two_policies, pm, stats, folded)
  var = float(np.var(out["scores"]))
  assert out["stopped"].mean() > 0.5 and var > 0.1
  unfolded, _ = _first_value_loss(two_policies, pm, stats, pm)  # V on the PM's raw scale
  assert unfolded > 50 * loss and unfolded > 100 * var, (unfolded, loss, var)
