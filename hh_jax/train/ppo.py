"""PPO against a preference model: the objective, the state, and one jitted update.

The reward of a response is the PM's (normalized) score at its EOC token minus a per-token
KL penalty to the frozen initial policy, r_t = -β·(log π(a_t) - log π_ref(a_t)) plus the
score on the last response token (Ziegler et al. 2019; Bai et al. 2022 use β = 0.001).
Advantages come from GAE over the response tokens, whitened over the valid tokens only;
the policy loss is PPO's clipped surrogate and the value loss is clipped around the
rollout's values. Nothing here samples: `hh_jax.rl.rollout` produces the batch, and
`make_update` turns it into new policy and value params in one compiled program, so a
notebook can call `update(state, batch)` on any batch it builds.

Shapes: a batch holds B responses to prompts left-padded to P tokens, T response slots.
  tokens, mask   [B, P + T]  prompt then response (right-padded after the stop token)
  response, response_mask, logp, ref_logp, values   [B, T]
  scores         [B]         PM score (normalized), or the no-stop penalty
The value of response token t is read from the hidden state that predicts it (position
P - 1 + t), as is the policy's log-probability of it.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from hh_jax.train import state as state_lib


@flax.struct.dataclass
class PPOState:
  """Everything an iteration changes; `params` is the policy, stored as an LM run's are.

  value_params is {} when the value head shares the policy trunk (`ppo.value="shared"`).
  kl_coef is the adaptive controller's β (constant when the controller is fixed).
  """
  step: jax.Array  # [] int32, PPO iterations done
  params: Any
  opt_state: Any
  value_params: Any
  value_opt_state: Any
  kl_coef: jax.Array  # [] float32
  rng: jax.Array  # [2] uint32
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)
  value_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)


# ---------------------------------------------------------------------------------------
# Advantages and returns.


def gae(rewards, values, mask, *, gamma: float, lam: float):
  """Generalized advantage estimation over right-padded responses.

  rewards, values, mask: [batch, T]; mask is 1 on response tokens, then 0. Nothing is
  bootstrapped past a response's last token: the value after it counts as 0. Returns
  (advantages, returns), each [batch, T] and 0 on padding.
  """
  rewards, values, mask = (jnp.asarray(x, jnp.float32) for x in (rewards, values, mask))
  next_values = jnp.concatenate([values[:, 1:] * mask[:, 1:], jnp.zeros_like(values[:, :1])], 1)
  next_mask = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], 1)
  deltas = rewards + gamma * next_values - values  # [batch, T]

  def back(carry, x):
    delta, nm = x
    adv = delta + gamma * lam * nm * carry
    return adv, adv

  _, adv = jax.lax.scan(back, jnp.zeros_like(rewards[:, 0]),
                        (deltas.T, next_mask.T), reverse=True)  # [T, batch]
  adv = adv.T * mask
  return adv, (adv + values) * mask


def masked_mean(x, mask, axis=None):
  mask = mask.astype(jnp.float32)
  return jnp.sum(x * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def whiten(x, mask, shift_mean: bool = True):
  """(x - mean) / std over the valid entries only; padding stays 0."""
  mean = masked_mean(x, mask)
  var = masked_mean(jnp.square(x - mean), mask)
  out = (x - mean) * jax.lax.rsqrt(var + 1e-8)
  if not shift_mean:
    out = out + mean
  return out * mask


# ---------------------------------------------------------------------------------------
# KL and rewards.


def kl_estimates(logp, ref_logp, mask):
  """Per-response KL(π ‖ π_ref) estimates, each [batch]: k1 (plain) and k3 (never negative).

  k1 = Σ log π - log π_ref is unbiased but can be negative on a batch; k3 = Σ (ρ - 1) - log ρ
  with ρ = π_ref / π is ≥ 0 token by token (Schulman, "Approximating KL Divergence").
  """
  m = mask.astype(jnp.float32)
  log_ratio = (logp - ref_logp) * m  # [batch, T]
  k3 = (jnp.exp(-log_ratio) - 1.0 + log_ratio) * m
  return jnp.sum(log_ratio, -1), jnp.sum(k3, -1)


def token_rewards(scores, logp, ref_logp, mask, kl_coef):
  """r_t = -β (log π - log π_ref) on every response token, + the score on the last one."""
  m = mask.astype(jnp.float32)
  lengths = jnp.sum(mask, axis=-1).astype(jnp.int32)  # [batch]
  last = jax.nn.one_hot(jnp.maximum(lengths - 1, 0), mask.shape[1]) * (lengths > 0)[:, None]
  return -kl_coef * (logp - ref_logp) * m + scores[:, None] * last  # [batch, T]


def adaptive_kl(kl_coef, kl, *, target: float, horizon: int, batch: int):
  """Ziegler et al.'s controller: β ← β·(1 + clip(KL/target - 1, ±0.2)·batch/horizon)."""
  if target <= 0:
    return kl_coef
  error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return kl_coef * (1.0 + error * batch / horizon)


# ---------------------------------------------------------------------------------------
# Forward passes the loss and the rollout share.


def response_logits(model, params, tokens, mask, num_response: int):
  """The model's outputs at the positions that predict each response token.

  Returns (logits [batch, T, vocab] or None, scalar [batch, T] or None).
  """
  p, s = tokens.shape[1] - num_response, tokens.shape[1]
  out = model.apply({"params": params}, tokens, mask, head_span=(p - 1, s - 1))
  return out.get("logits"), out.get("scalar")


def token_logp(logits, tokens):
  """log softmax(logits) at `tokens`: [batch, T, vocab], [batch, T] -> [batch, T] (f32)."""
  logits = logits.astype(jnp.float32)
  picked = jnp.sum(logits * jax.nn.one_hot(tokens, logits.shape[-1], dtype=logits.dtype), -1)
  return picked - jax.nn.logsumexp(logits, axis=-1)


def entropy(logits):
  """Entropy of softmax(logits) per position, [batch, T]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


# ---------------------------------------------------------------------------------------
# Losses.


def policy_loss(logp, old_logp, advantages, mask, clip: float):
  """PPO's clipped surrogate, its approx-KL and clip fraction (masked means)."""
  log_ratio = logp - old_logp
  ratio = jnp.exp(log_ratio)
  pg1 = -advantages * ratio
  pg2 = -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
  loss = masked_mean(jnp.maximum(pg1, pg2), mask)
  stats = {"policy/approxkl_avg": 0.5 * masked_mean(jnp.square(log_ratio), mask),
           "policy/clipfrac_avg": masked_mean((pg2 > pg1).astype(jnp.float32), mask),
           "policy/ratio_avg": masked_mean(ratio, mask),
           "policy/ratio_maxdev": jnp.max(jnp.abs(ratio - 1.0) * mask)}
  return loss, stats


def value_loss(values, old_values, returns, mask, clip: float):
  """0.5·max((V - R)², (V_clipped - R)²), V clipped to old ± clip (masked mean)."""
  clipped = old_values + jnp.clip(values - old_values, -clip, clip)
  l1, l2 = jnp.square(values - returns), jnp.square(clipped - returns)
  loss = 0.5 * masked_mean(jnp.maximum(l1, l2), mask)
  return loss, {"val/clipfrac_avg": masked_mean((l2 > l1).astype(jnp.float32), mask)}


# ---------------------------------------------------------------------------------------
# The update.


def minibatch_data(batch, kl_coef, *, gamma: float, lam: float) -> dict:
  """What the epochs read, computed once from a rollout batch before any update.

  Token rewards (score at the last token, -β·(log π_old - log π_ref) on each), GAE over them
  and the rollout's values, and the advantages whitened (mean-shifted and scaled) over the
  valid tokens. The old log-probs are the rollout policy's (`batch["logp"]`), never the
  reference's: the ratio of the first minibatch is 1. Leaves [batch, ...].
  """
  mask = batch["response_mask"]
  rewards = token_rewards(batch["scores"], batch["logp"], batch["ref_logp"], mask, kl_coef)
  adv, returns = gae(rewards, batch["values"], mask, gamma=gamma, lam=lam)
  data = {k: batch[k] for k in ("tokens", "mask", "response", "response_mask", "logp",
                                "values")}
  data.update(advantages=whiten(adv, mask), returns=returns)
  return data


def _minibatches(batch, key, num: int):
  """The batch's rows in a random order, split into `num` minibatches: leaves [num, b/num, ...]."""
  n = jax.tree.leaves(batch)[0].shape[0]
  order = jax.random.permutation(key, n) if num > 1 else jnp.arange(n)
  return jax.tree.map(lambda x: x[order].reshape(num, n // num, *x.shape[1:]), batch)


def make_update(policy_model, value_model, ppo_cfg):
  """`update(state, batch) -> (state, metrics)`: rewards, GAE, and epochs × minibatches.

  policy_model / value_model: the Transformers of the policy (LM head; + scalar head when
  the value shares the trunk) and of the value model (scalar head; None when shared).
  ppo_cfg: gamma, lam, clip, value_clip, vf_coef, epochs, num_minibatches, entropy_coef,
  kl_target, kl_horizon (see configs/ppo.py).

  The old log-probs and values are the batch's `logp` / `values` when it has them (a
  rollout that ran the policy's and value's forwards). Without them the update computes
  them at the state's params: with one minibatch, the first gradient step's own forward
  gives them (stop-gradient), so each network runs forward once per iteration, not twice,
  and the first ratio is exactly 1; with several, one forward pass over the batch first.
  A batch with `sampler_logp` also gets `rollout/sampler_logp_gap` (max |π_old − sampler|).
  """
  shared = value_model is None
  clip, vclip = float(ppo_cfg.clip), float(ppo_cfg.value_clip)
  epochs, num_mb = int(ppo_cfg.epochs), int(ppo_cfg.num_minibatches)
  ent_coef, vf_coef = float(ppo_cfg.entropy_coef), float(ppo_cfg.vf_coef)

  def forwards(params, value_params, b):
    """(logits [batch, T, vocab], logp [batch, T], values [batch, T]) of the response."""
    t = b["response"].shape[1]
    logits, scalar = response_logits(policy_model, params, b["tokens"], b["mask"], t)
    if not shared:
      _, scalar = response_logits(value_model, value_params, b["tokens"], b["mask"], t)
    return logits, token_logp(logits, b["response"]), scalar

  def objective(logits, logp, values, mb):
    """(total loss, (policy loss, value loss, stats)); the value term is in the total
    whether the value shares the trunk or not (its own params then get its gradient)."""
    pg, stats = policy_loss(logp, mb["logp"], mb["advantages"], mb["response_mask"], clip)
    vf, vstats = value_loss(values, mb["values"], mb["returns"], mb["response_mask"], vclip)
    loss = pg
    if ent_coef:
      loss = loss - ent_coef * masked_mean(entropy(logits), mb["response_mask"])
    return loss + vf_coef * vf, (pg, vf, {**stats, **vstats})

  def losses(params, value_params, mb):
    return objective(*forwards(params, value_params, mb), mb)

  def step(state, loss_fn):
    """One optimizer step on loss_fn(params, value_params) -> (loss, (pg, vf, stats, *extra))."""
    if shared:
      grads, aux = jax.grad(lambda p: loss_fn(p, None), has_aux=True)(state.params)
      vgrads = None
    else:
      (grads, vgrads), aux = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
          state.params, state.value_params)
    pg, vf, stats = aux[:3]
    old = state
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    state = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    if not shared:
      vupdates, vopt = state.value_tx.update(vgrads, state.value_opt_state, state.value_params)
      state = state.replace(value_params=optax.apply_updates(state.value_params, vupdates),
                            value_opt_state=vopt)
    # A minibatch whose loss or gradients are not finite leaves every param and moment as
    # they were (see TrainState.apply_gradients_if_finite); `nonfinite_steps` counts it.
    ok = state_lib.finite(pg + vf, (grads, vgrads))
    keys = ("params", "opt_state", "value_params", "value_opt_state")
    kept = state_lib.select(ok, [getattr(state, k) for k in keys], [getattr(old, k) for k in keys])
    state = state.replace(**dict(zip(keys, kept)))
    stats = {**stats, "loss/policy_avg": pg, "loss/value_avg": vf,
             "policy/grad_norm": optax.global_norm(grads),
             "nonfinite_steps": 1.0 - ok.astype(jnp.float32)}
    return state, stats, aux[3:]

  def mb_step(state, mb):
    state, stats, _ = step(state, lambda p, v: losses(p, v, mb))
    return state, stats

  def old_of(logits, logp, values, mask):
    """The rollout-side quantities of a forward at the state's params, gradient-free."""
    m = mask.astype(jnp.float32)
    sg = jax.lax.stop_gradient
    return {"logp": sg(logp) * m, "values": sg(values) * m, "entropy": sg(entropy(logits)) * m}

  def first_losses(params, value_params, batch, kl_coef):
    """The first step of a one-minibatch update: its forward also gives the old log-probs
    and values the advantages are computed from (constants to the gradient)."""
    logits, logp, values = forwards(params, value_params, batch)
    old = old_of(logits, logp, values, batch["response_mask"])
    data = minibatch_data({**batch, **old}, kl_coef, gamma=ppo_cfg.gamma, lam=ppo_cfg.lam)
    loss, (pg, vf, stats) = objective(logits, logp, values, data)
    return loss, (pg, vf, stats, data, old)

  def epochs_from(state, data, key, first: int):
    def epoch(state, e):
      mbs = _minibatches(data, jax.random.fold_in(key, e), num_mb)
      return jax.lax.scan(mb_step, state, mbs)
    return jax.lax.scan(epoch, state, jnp.arange(first, epochs))  # leaves [epochs - first, mb]

  def update(state, batch):
    mask = batch["response_mask"]
    key = jax.random.fold_in(state.rng, state.step)
    if "logp" in batch:
      old = {k: batch[k] for k in ("logp", "values", "entropy") if k in batch}
    elif num_mb == 1:
      state_in = state
      state, stats0, (data, old) = step(
          state, lambda p, v: first_losses(p, v, batch, state_in.kl_coef))
      stats0 = jax.tree.map(lambda x: x[None, None], stats0)  # [1, 1]
      if epochs > 1:
        state, rest = epochs_from(state, data, key, 1)
        stats0 = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), stats0, rest)
      return finish(state_in, state, batch, old, data, stats0)
    else:
      old = old_of(*forwards(state.params, state.value_params, batch), mask)
    data = minibatch_data({**batch, **old}, state.kl_coef, gamma=ppo_cfg.gamma, lam=ppo_cfg.lam)
    new_state, stats = epochs_from(state, data, key, 0)
    return finish(state, new_state, batch, old, data, stats)

  def finish(state, new_state, batch, old, data, stats):
    """The new state's step and KL coefficient, and the iteration's metrics."""
    mask = batch["response_mask"]
    kl_k1, kl_k3 = kl_estimates(old["logp"], batch["ref_logp"], mask)  # [batch]
    first = jax.tree.map(lambda x: x[0, 0], stats)  # the first minibatch of the first epoch
    skipped = jnp.sum(stats["nonfinite_steps"])  # minibatch updates skipped, a count
    stats = {**jax.tree.map(jnp.mean, stats), "nonfinite_steps": skipped}
    kl = jnp.mean(kl_k1)
    new_coef = adaptive_kl(state.kl_coef, kl, target=ppo_cfg.kl_target,
                           horizon=ppo_cfg.kl_horizon, batch=mask.shape[0])
    new_state = new_state.replace(step=state.step + 1, kl_coef=new_coef)
    metrics = {
        **stats,
        "objective/kl": kl, "objective/kl_k3": jnp.mean(kl_k3),
        "objective/scores": jnp.mean(batch["scores"]),
        "objective/rlhf_reward": jnp.mean(batch["scores"] - state.kl_coef * kl_k1),
        "objective/kl_coef": state.kl_coef,
        "policy/approxkl_first": first["policy/approxkl_avg"],
        "policy/ratio_maxdev_first": first["policy/ratio_maxdev"],
        "val/returns_avg": masked_mean(data["returns"], mask),
        "val/values_avg": masked_mean(old["values"], mask),
        "response_length": jnp.mean(jnp.sum(mask, -1).astype(jnp.float32)),
    }
    if "entropy" in old:
      metrics["objective/entropy"] = jnp.mean(jnp.sum(old["entropy"] * mask, -1))
    if "sampler_logp" in batch:
      gap = jnp.abs(old["logp"] - batch["sampler_logp"]) * mask.astype(jnp.float32)
      metrics["rollout/sampler_logp_gap"] = jnp.max(gap)
    return new_state, metrics

  return update


def init_state(params, value_params, tx, value_tx, kl_coef: float, seed: int) -> PPOState:
  """A fresh PPO state around restored params (jit this with out_shardings to place it)."""
  return PPOState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                  value_params=value_params,
                  value_opt_state=value_tx.init(value_params) if value_tx else {},
                  kl_coef=jnp.asarray(kl_coef, jnp.float32), rng=jax.random.PRNGKey(seed),
                  tx=tx, value_tx=value_tx)


__all__ = ["PPOState", "gae", "whiten", "kl_estimates", "token_rewards", "adaptive_kl",
           "policy_loss", "value_loss", "minibatch_data", "make_update", "init_state",
           "response_logits", "token_logp", "entropy"]
