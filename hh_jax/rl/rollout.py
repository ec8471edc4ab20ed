"""PPO rollouts: sample, then every forward pass the update needs, in one compiled program.

A rollout takes a batch of left-padded prompts and returns what `hh_jax.train.ppo`'s
update consumes: the sampled responses, the policy's and the reference's log-probs of
them, the value model's values, and the PM's score, all computed from token ids. The PM
reads `[prompt | response | EOC]` built from the rollout's own ids (the stop token that
ended a reply is where EOC goes, as the text scorer's `context + reply + EOC` has it), so
there is no decode/re-encode round trip; that needs the PM and the policy to share one
tokenizer, which the stage checks. The reward is `hh_jax.rl.reward.pm_reward`, the one
definition the text scorer applies too: the normalized PM score of a reply that stopped, a
fixed penalty for one that never did (the "EOS trick": otherwise rambling to the length
limit is safe). The PM's mean/std are an argument of the program (`pm_stats`), not
constants in it, so a run against another PM reuses the compiled rollout.

The old log-probs are recomputed by the same forward the loss uses, at temperature 1 with
no filter: the distribution actually sampled, so the first ratio of an update is 1. The
sampler's own log-probs come back too (`sampler_logp`); their gap to the recomputed ones
is a check that sampling and training agree. With `policy_forwards=False` (the PPO stage's
choice) the rollout leaves the policy's and value's forwards to the update, whose first
gradient step runs them anyway (`ppo.make_update` on a batch without `logp`/`values`):
then `logp` is the sampler's (what the evaluation's KL reads) and the update reports the gap.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from hh_jax.model import sampling, transformer
from hh_jax.rl import reward as reward_lib
from hh_jax.train import ppo


@dataclasses.dataclass(frozen=True)
class Scoring:
  """How the PM reads a reply and what a reply that never stopped gets (hashable: part of
  the compiled program; the PM's mean/std are not: `pm_stats`)."""
  eoc_id: int
  stop_ids: tuple[int, ...]
  no_stop_penalty: float
  pm_seq_len: int  # the PM reads at most this many tokens (its training length), ending at EOC


def pm_inputs(prompt, prompt_mask, response, response_mask, scoring: Scoring):
  """Tokens/mask [batch, P + T + 1], eoc_pos [batch] and stopped [batch] for the PM.

  The reply's content is its tokens less the stop token that ended it; EOC follows the
  content. When prompt + content + EOC exceed `pm_seq_len`, the earliest tokens are masked
  out (positions come from the mask, so that is the same as dropping them, which is what
  the text scorer's truncation does).
  """
  b, p = prompt.shape
  t = response.shape[1]
  lengths = jnp.sum(response_mask, -1).astype(jnp.int32)  # [batch]
  stopped = reward_lib.stopped_flags(response, lengths, scoring.stop_ids)
  content = lengths - stopped.astype(jnp.int32)  # [batch]
  pad = jnp.zeros((b, 1), jnp.int32)
  tokens = jnp.concatenate([prompt, response, pad], 1)  # [batch, P + T + 1]
  slot = jnp.arange(t + 1)[None, :]  # [1, T + 1]
  eoc_pos = p + content  # [batch]
  pos = jnp.arange(p + t + 1)[None, :]
  tokens = jnp.where(pos == eoc_pos[:, None], scoring.eoc_id, tokens)
  mask = jnp.concatenate([prompt_mask.astype(jnp.int32),
                          (slot <= content[:, None]).astype(jnp.int32)], 1)
  excess = jnp.maximum(jnp.sum(mask, -1) - scoring.pm_seq_len, 0)  # [batch]
  rank = jnp.cumsum(mask, -1)  # 1-based rank of each real token
  mask = mask * (rank > excess[:, None])
  return tokens, mask, eoc_pos, stopped


def pm_stats(mean: float, std: float):
  """The PM's reference mean and std as the rollout's argument: float32 [2]."""
  return jnp.asarray([mean, std], jnp.float32)


def pm_scores(pm_model, pm_params, stats, prompt, prompt_mask, response, response_mask,
              scoring: Scoring):
  """(reward [batch], raw PM score [batch], normalized PM score [batch], stopped [batch]).

  stats: `pm_stats(mean, std)`. The reward is `reward.pm_reward` of the normalized score.
  """
  tokens, mask, eoc_pos, stopped = pm_inputs(prompt, prompt_mask, response, response_mask,
                                             scoring)
  scalar = pm_model.apply({"params": pm_params}, tokens, mask)["scalar"]  # [batch, P + T + 1]
  raw = jnp.take_along_axis(scalar, eoc_pos[:, None], 1)[:, 0]
  norm = reward_lib.normalize(raw, stats[0], stats[1])
  return reward_lib.pm_reward(norm, stopped, scoring.no_stop_penalty), raw, norm, stopped


def lm_params(params):
  """The params the LM head reads: a shared-trunk policy's scalar head left out."""
  return {k: v for k, v in params.items() if k != "scalar_head"}


def evaluate(*, policy_model, ref_model, value_model, pm_model, scoring: Scoring, params,
             ref_params, value_params, pm_params, pm_stats, prompt, prompt_mask, response,
             response_mask, policy_forwards: bool = True):
  """Every forward of a rollout on given responses (what `rollout` runs after sampling).

  policy_forwards=False: the reference and the PM only (no logp, values, entropy): the
  update computes the policy's and value's forwards itself.
  """
  t = response.shape[1]
  tokens = jnp.concatenate([prompt, response], 1)  # [batch, P + T]
  mask = jnp.concatenate([prompt_mask, response_mask], 1).astype(jnp.int32)
  m = response_mask.astype(jnp.float32)
  out = {}
  if policy_forwards:
    logits, shared_values = ppo.response_logits(policy_model, params, tokens, mask, t)
    logp = ppo.token_logp(logits, response)  # [batch, T]
    if value_model is None:
      values = shared_values
    else:
      _, values = ppo.response_logits(value_model, value_params, tokens, mask, t)
    out = {"logp": logp * m, "values": values * m, "entropy": ppo.entropy(logits) * m}
  ref_logits, _ = ppo.response_logits(ref_model, ref_params, tokens, mask, t)
  ref_logp = ppo.token_logp(ref_logits, response)
  scores, raw, norm, stopped = pm_scores(pm_model, pm_params, pm_stats, prompt, prompt_mask,
                                         response, response_mask, scoring)
  return {**out, "tokens": tokens, "mask": mask, "response": response,
          "response_mask": response_mask.astype(jnp.int32),
          "ref_logp": ref_logp * m, "scores": scores, "pm_raw": raw,
          "pm_score": norm, "stopped": stopped}


def rollout(params, ref_params, value_params, pm_params, pm_stats, prompt, prompt_mask, cache,
            key, *, sample_model, settings: sampling.Settings, cpu_layout: bool = False,
            policy_forwards: bool = True, **models):
  """Sample responses [batch, T] to left-padded prompts [batch, P], then `evaluate` them.

  pm_stats: `pm_stats(mean, std)` of the PM, float32 [2].
  cache: an empty KV cache for P + T tokens (donated; it comes back for the next call).
  cpu_layout: `sampling.sample`'s (`sampling.decode_layout_for(mesh, params)`).
  policy_forwards: `evaluate`'s; without them `logp` is the sampler's log-probs.
  Returns (batch for `ppo.make_update`'s update, plus sampler_logp, lengths; cache).
  """
  samples, cache = sampling.sample(sample_model, lm_params(params), prompt, prompt_mask, cache,
                                   key, settings, cpu_layout=cpu_layout)
  out = evaluate(params=params, ref_params=ref_params, value_params=value_params,
                 pm_params=pm_params, pm_stats=pm_stats, prompt=prompt, prompt_mask=prompt_mask,
                 response=samples["tokens"], response_mask=samples["mask"],
                 policy_forwards=policy_forwards, **models)
  out["sampler_logp"] = samples["logprobs"]
  if not policy_forwards:  # what the evaluation's KL reads: the sampled distribution's
    out["logp"] = samples["logprobs"] * samples["mask"].astype(jnp.float32)
  out["lengths"] = samples["lengths"]
  return out, cache


@dataclasses.dataclass
class Models:
  """The four networks of PPO; value None when the value head shares the policy trunk."""
  policy: Any
  ref: Any
  value: Any
  pm: Any

  @property
  def sample(self):
    cfg = self.policy.cfg
    if tuple(cfg.heads) == ("lm",):
      return self.policy
    return transformer.Transformer(_with_heads(cfg, ("lm",)))


def _with_heads(cfg, heads):
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict(dict(cfg))
  c.heads = heads
  return c


def make_rollout(models: Models, scoring: Scoring, settings: sampling.Settings, *,
                 cpu_layout: bool = False, policy_forwards: bool = True):
  """The rollout as a function of (params, ref_params, value_params, pm_params, pm_stats,
  prompt, prompt_mask, cache, key), for jit (donate the cache: argument 7)."""
  return functools.partial(rollout, sample_model=models.sample, settings=settings,
                           cpu_layout=cpu_layout, policy_forwards=policy_forwards,
                           policy_model=models.policy, ref_model=models.ref,
                           value_model=models.value, pm_model=models.pm, scoring=scoring)


__all__ = ["Scoring", "Models", "pm_inputs", "pm_stats", "pm_scores", "evaluate", "rollout",
           "make_rollout", "lm_params"]
