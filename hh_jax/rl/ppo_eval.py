"""PPO's end-of-run evaluation: sample, score, and hand the numbers to the √KL analyses.

`final_eval` runs the initial and the final policy on fresh prompts (a seed never trained
on) through the stage's own rollout program, so every reward is the PPO reward
(`hh_jax.rl.reward.pm_reward`); it reports the PM score of the replies that stopped and the
stop rate apart, and, on the synthetic task, the gold labeler's scores and best-of-n from the
initial policy (picked by the same reward). `hh_jax.eval.kl_reward.analyze` turns the run's
metrics and these numbers into fits and plots; it never calls back here.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import ml_collections
import numpy as np

from hh_jax import metrics as metrics_lib
from hh_jax.data import fresh
from hh_jax.data import labelers
from hh_jax.eval import kl_reward
from hh_jax.rl import prompts as prompts_lib
from hh_jax.rl import rejection_sampling

ROLLOUT_KEYS = ("scores", "pm_score", "stopped", "logp", "ref_logp", "response_mask")


def rollouts(setup, params, value_params, ids: Sequence[Sequence[int]], key) -> dict:
  """Rollouts of `params` on `ids` in rollout-sized batches: host dict of [n, ...] arrays
  (ROLLOUT_KEYS), plus kl [n] (k1 per reply, from the sampler's log-probs: the stage's
  rollout runs no policy forward) and texts [n]."""
  bs = setup.config.ppo.batch_size
  parts, texts = {k: [] for k in ROLLOUT_KEYS}, []
  for b, lo in enumerate(range(0, len(ids), bs)):
    chunk = list(ids[lo:lo + bs])
    n = len(chunk)
    chunk += [chunk[-1]] * (bs - n)  # fixed shape: one compiled rollout
    out = setup.run_rollout(params, value_params, chunk, jax.random.fold_in(key, b))
    host = jax.device_get({k: out[k] for k in ROLLOUT_KEYS})
    for k in ROLLOUT_KEYS:
      parts[k].append(np.asarray(host[k])[:n])
    texts.extend(setup.texts(out)[:n])
  out = {k: np.concatenate(v) for k, v in parts.items()}
  m = out["response_mask"].astype(np.float64)
  out["kl"] = np.sum((out["logp"] - out["ref_logp"]) * m, -1)
  out["texts"] = texts
  return out


def summary(first: dict, final: dict) -> dict:
  """Initial vs final policy: reward, PM score on stopped replies, stop rate, KL."""
  def pm(r):
    return float(r["pm_score"][r["stopped"]].mean()) if r["stopped"].any() else math.nan

  return {"reward_initial": float(first["scores"].mean()),
          "reward_final": float(final["scores"].mean()),
          "pm_stopped_initial": pm(first), "pm_stopped_final": pm(final),
          "stop_rate_initial": float(first["stopped"].mean()),
          "stop_rate_final": float(final["stopped"].mean()),
          "kl": float(final["kl"].mean()), "kl_initial": float(first["kl"].mean())}


def gold_gain(contexts, first_texts, final_texts) -> dict:
  """Gold of the initial and final policies' replies, the paired gain and its SEM."""
  gold = labelers.GoldScorer()
  g0, g1 = gold.score(contexts, first_texts), gold.score(contexts, final_texts)
  diff = np.asarray(g1, np.float64) - np.asarray(g0, np.float64)
  return {"gold_initial": float(np.mean(g0)), "gold_final": float(np.mean(g1)),
          "gold_sem": float(diff.std(ddof=1) / math.sqrt(len(diff))),
          "gold_gain": float(diff.mean())}


def history(workdir: str) -> list[dict]:
  """The run's per-iteration metrics rows, one per step (a resumed run's repeat: the last)."""
  rows = [r for r in metrics_lib.read_metrics(workdir) if "objective/kl" in r]
  by_step = {r["step"]: r for r in rows}
  return [by_step[s] for s in sorted(by_step)]


def eval_contexts(setup, workdir: str) -> tuple[list[str], list[list[int]], dict]:
  """(contexts, their token ids, {excluded, shortened}): fresh prompts, none in a training
  set of the run (`hh_jax.data.fresh`), each kept whole within the stage's prompt budget."""
  c = setup.config.eval
  source = setup.config.prompts
  if c.get("files"):  # held-out files of their own (the `:hh` pipeline's eval file)
    source = ml_collections.ConfigDict({**source.to_dict(), "files": c.files})
  return prompts_lib.draw_eval(source, int(c.num_prompts), int(c.seed),
                               setup.fit, workdir, fresh.upstream(setup.config), "ppo_eval")


def final_eval(setup, state, workdir: str, is_synthetic: bool) -> dict:
  """Initial vs final policy on fresh prompts, best-of-n, fits and plots → the eval dict."""
  c = setup.config.eval
  contexts, ids, drawn = eval_contexts(setup, workdir)
  key = jax.random.PRNGKey(c.seed)
  init_value = setup.pm.value_init() if setup.config.ppo.value == "pm" else state.value_params
  init_params = setup.ref_params
  if setup.config.ppo.value == "shared":
    init_params = {**setup.ref_params, "scalar_head": state.params["scalar_head"]}
  first = rollouts(setup, init_params, init_value, ids, jax.random.fold_in(key, 1))
  final = rollouts(setup, state.params, state.value_params, ids, jax.random.fold_in(key, 2))
  result = {"num_prompts": len(ids), "eval_seed": int(c.seed), **summary(first, final),
            "no_stop_penalty": float(setup.config.ppo.no_stop_penalty),
            "iterations": int(jax.device_get(state.step)),
            "prompts": {**getattr(setup, "prompt_counts", {}), "eval_excluded": drawn["excluded"],
                        "eval_shortened": drawn["shortened"]}}
  bon_table = None
  if is_synthetic:
    result.update(gold_gain(contexts, first["texts"], final["texts"]))
    if c.bon_n >= 2 and c.bon_prompts:
      m, k = min(int(c.bon_prompts), len(ids)), int(c.bon_n)
      rows = [i for i in range(m) for _ in range(k)]
      bon = rollouts(setup, init_params, init_value, [ids[i] for i in rows],
                     jax.random.fold_in(key, 3))
      gold = labelers.GoldScorer().score([contexts[i] for i in rows], bon["texts"])
      ks = [x for x in (1, 2, 4, 8, 16, 32, 64) if x <= k]
      bon_table = rejection_sampling.gold_table(bon["scores"].reshape(m, k),
                                                np.asarray(gold).reshape(m, k), ks)
      result["best_of_n"] = bon_table
      result["best_of_n_kl"] = rejection_sampling.ANALYTIC_KL_NOTE
  plot_dir = workdir if jax.process_index() == 0 else None
  result.update(kl_reward.analyze(history(workdir), result, bon_table, float(c.part_threshold),
                                  plot_dir))
  return result


__all__ = ["final_eval", "rollouts", "summary", "gold_gain", "history", "eval_contexts"]
