"""Rejection sampling (best-of-k): k samples per prompt, the PM keeps the best.

For each prompt the policy draws k responses (k = 16 by default); a scorer ranks them: the
PM by PPO's reward (`hh_jax.rl.reward.pm_reward`: its normalized score where the reply
stopped, the no-stop penalty where it hit the token limit; the sampler's stop flags travel
with the texts), or on the synthetic task the gold labeler, which judges the text alone.
The best becomes the response (ties: the earliest sample), and (best, worst) becomes a new
comparison written in the hh-rlhf jsonl format, so the next PM can train on it.

Best-of-k moves away from the policy by a known amount: its KL to the policy is at most
log k - (k-1)/k (Stiennon et al. 2020, appendix; exact only when the k samples are
distinct, an upper bound where they repeat: Beirami et al. 2024), recorded with every
result beside the share of prompts whose samples repeat. On the
synthetic task the gold score of the PM's pick is tabulated for k in {1, 2, 4, 8, 16},
each best-of-k averaged over the k-sized groups the K samples split into; that table is
the curve of gold reward vs KL that PPO has to beat.
"""
from __future__ import annotations

import json
import math
from typing import Protocol, Sequence

import jax
import numpy as np

from hh_jax import files
from hh_jax import preemption
from hh_jax.data import hh_rlhf, synthetic
from hh_jax.errors import Preempted, UserError
from hh_jax.model import params as params_lib, sampling
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.data import labelers
from hh_jax.rl import reward
from hh_jax.train import runner

ANALYTIC_KL_NOTE = ("log k - (k-1)/k: exact when a prompt's k samples are distinct, an upper "
                    "bound on best-of-k's KL where they repeat")


class Scorer(Protocol):
  """What rejection sampling needs of a scorer: `hh_jax.rl.reward.PMScorer` is one."""

  def reward(self, contexts: Sequence[str], responses: Sequence[str],
             stopped: Sequence[bool]) -> np.ndarray:
    ...


class TextScorer:
  """A scorer that judges the text alone (the gold labeler): stop flags are not its business."""

  def __init__(self, scorer):
    self.scorer = scorer

  def reward(self, contexts, responses, stopped) -> np.ndarray:
    del stopped
    return np.asarray(self.scorer.score(contexts, responses), np.float32)


def analytic_kl(k: int) -> float:
  """KL(best-of-k || policy) in nats, log k - (k-1)/k: exact when the k samples are
  distinct; where samples repeat it is an upper bound (Beirami et al. 2024)."""
  return math.log(k) - (k - 1) / k


def repeat_share(responses: Sequence[Sequence[str]]) -> float:
  """Share of prompts whose k samples are not all distinct (where `analytic_kl` overstates)."""
  if not responses:
    return 0.0
  return float(np.mean([len(set(rs)) < len(rs) for rs in responses]))


def best_of(scores: np.ndarray, k: int) -> np.ndarray:
  """Index (into the K columns) of the best of each k-sized group: [n, K // k].

  Ties go to the earliest sample of the group (the lowest index)."""
  n, total = scores.shape
  groups = total // k
  s = scores[:, :groups * k].reshape(n, groups, k)  # [n, groups, k]
  return np.argmax(s, axis=-1) + np.arange(groups)[None, :] * k  # argmax: the first maximum


def pick_best(scorer: Scorer, context: str, responses: Sequence[str],
              stopped: Sequence[bool]) -> int:
  """Index of the reply best-of-k keeps: the highest `scorer.reward`, ties to the earliest."""
  rewards = np.asarray(scorer.reward([context] * len(responses), responses, stopped))
  return int(best_of(rewards[None, :], len(responses))[0, 0])


def _prompt_se(per_prompt: np.ndarray) -> float:
  """Standard error of a mean over prompts (the sampled unit), NaN for one prompt."""
  n = len(per_prompt)
  return float(per_prompt.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def gold_table(selector: np.ndarray, gold: np.ndarray, ks: Sequence[int]) -> list[dict]:
  """Mean gold score of best-of-k picked by `selector`, and of the gold oracle's own pick;
  `gold_se` / `selector_se`: standard errors over prompts (each prompt's mean over its
  groups of k)."""
  rows = []
  for k in ks:
    pick = best_of(selector, k)  # [n, groups]
    oracle = best_of(gold, k)
    picked_gold = np.take_along_axis(gold, pick, axis=1)       # [n, groups]
    picked_sel = np.take_along_axis(selector, pick, axis=1)    # [n, groups]
    rows.append({"k": int(k), "analytic_kl": analytic_kl(k),
                 "gold": float(picked_gold.mean()),
                 "gold_se": _prompt_se(picked_gold.mean(axis=1)),
                 "selector_score": float(picked_sel.mean()),
                 "selector_se": _prompt_se(picked_sel.mean(axis=1)),
                 "gold_oracle": float(np.take_along_axis(gold, oracle, axis=1).mean())})
  return rows


def sample_k(sampler: sampling.Sampler, tok, contexts: Sequence[str], k: int, key,
             settings: sampling.Settings, batch_size: int, with_stopped: bool = False):
  """k responses per context, [n][k]; rows of one context are k consecutive batch rows.

  with_stopped: also return whether each reply ended with a stop token, [n][k] bools
  (`reward.stopped_flags` of the sampler's ids), for `PMScorer.reward`.
  """
  ids = [tok.encode(c) for c in contexts]
  rows = [i for i in range(len(ids)) for _ in range(k)]
  texts: list[str] = []
  stopped: list[bool] = []
  for b, lo in enumerate(range(0, len(rows), batch_size)):
    chunk = rows[lo:lo + batch_size]
    out = sampler([ids[i] for i in chunk], jax.random.fold_in(key, b), settings)
    texts.extend(sampling.decode_samples(tok, out))
    stopped.extend(np.asarray(reward.stopped_flags(out["tokens"], out["lengths"],
                                                   settings.stop_ids)).tolist())
  per = [texts[i * k:(i + 1) * k] for i in range(len(ids))]
  if not with_stopped:
    return per
  return per, [stopped[i * k:(i + 1) * k] for i in range(len(ids))]


PARTS_FILE = "rs_parts.jsonl"


def _done_parts(path: str) -> dict[int, dict]:
  """The parts an earlier (killed) run finished: one JSON line each; a torn last line is not."""
  if not files.exists(path):
    return {}
  done = {}
  for line in files.read_text(path).splitlines(keepends=True):
    try:
      rec = json.loads(line)
    except ValueError:
      continue
    if line.endswith("\n") and isinstance(rec, dict) and "part" in rec:
      done[int(rec["part"])] = rec
  return done


def sample_and_score(sampler, scorer, tok, contexts, k: int, config, settings, parts_path):
  """k samples and scores per context, one part (a sampler batch of prompts) at a time.

  Each finished part is appended to `parts_path` (process 0) before the next starts, so a
  killed run loses at most one part, and a rerun skips the parts already there. A part's
  samples depend only on (seed, part), so a rerun's output equals an uninterrupted run's.
  Returns (responses [n][k], scores [n, k], stopped [n, k]).
  """
  per = max(1, int(config.rs.batch_size) // k)
  done = _done_parts(parts_path)
  key = jax.random.PRNGKey(config.seed)
  responses, scores, stopped = [], [], []
  for part, lo in enumerate(range(0, len(contexts), per)):
    ctx = contexts[lo:lo + per]
    rec = done.get(part)
    if rec is not None and (rec.get("contexts") != ctx or "stopped" not in rec):
      raise UserError(f"{parts_path} part {part} holds other prompts than this config's (or "
                      "no stop flags); rerun with the config that wrote it, or delete the file")
    if rec is None:
      rs_, st = sample_k(sampler, tok, ctx, k, jax.random.fold_in(key, part), settings,
                         config.rs.batch_size, with_stopped=True)
      flat_c = [c for c in ctx for _ in range(k)]
      sc = np.asarray(scorer.reward(flat_c, [r for rr in rs_ for r in rr],
                                    [s for ss in st for s in ss]), np.float32)
      rec = {"part": part, "contexts": ctx, "responses": rs_, "stopped": st,
             "scores": sc.reshape(len(ctx), k).tolist()}
      if jax.process_index() == 0:
        files.append_text(parts_path, json.dumps(rec) + "\n")
      if preemption.should_stop(part, force_sync=True):
        raise Preempted(f"SIGTERM after part {part + 1} of {-(-len(contexts) // per)}; "
                        f"{parts_path} holds it; rerun the same command to continue")
    responses.extend(rec["responses"])
    scores.extend(rec["scores"])
    stopped.extend(rec["stopped"])
  return (responses, np.asarray(scores, np.float32).reshape(len(contexts), k),
          np.asarray(stopped, bool).reshape(len(contexts), k))


def write_pairs(path: str, contexts, responses, scores) -> int:
  """(best, worst) of each prompt as an hh-rlhf line; prompts whose k samples tie are skipped."""
  lines = []
  for c, rs, s in zip(contexts, responses, scores):
    hi, lo = int(np.argmax(s)), int(np.argmin(s))
    if s[hi] == s[lo] or rs[hi].strip() == rs[lo].strip() or not rs[lo].strip():
      continue
    lines.append(json.dumps({"chosen": c + rs[hi], "rejected": c + rs[lo]}) + "\n")
  if jax.process_index() == 0:
    files.write_text(path, "".join(lines))
  return len(lines)


def load_contexts(config) -> tuple[list[str], bool]:
  """(contexts, synthetic?) from config.data."""
  d = config.data
  if d.source == "synthetic":
    return [p.context for p in synthetic.prompts(d.num_prompts, d.seed, d.mixture)], True
  if d.source == "hh_rlhf":
    pairs, _ = hh_rlhf.read_file(d.hh_file)
    return [p.context for p in pairs[:d.num_prompts]], False
  raise UserError(f"data.source={d.source!r}; use 'synthetic' or 'hh_rlhf'")


def keep_whole(config, contexts, tok, model_cfg, scorer, workdir) -> tuple[list[str], dict]:
  """The prompts kept whole within the budget the scorer reads (a PM's seq_len, else the
  policy's max_len, minus the reply length), none in an evaluation set of the run;
  recorded as this stage's training set (`data/fresh.py`). Returns (texts, counts)."""
  from hh_jax.data import fresh  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  new = int(config.sampling.max_new_tokens)
  seq, what = (int(scorer.seq_len), "the PM's data.seq_len") if hasattr(scorer, "seq_len") else (
      int(model_cfg.max_len), "the policy's model.max_len")
  fit = prompts_lib.PromptFit(tok, seq - new, f"{what} {seq} - sampling.max_new_tokens {new}",
                              "lower sampling.max_new_tokens",
                              skip_too_long=config.data.source == "hh_rlhf")
  avoid = fresh.recorded(fresh.run_dirs(workdir, fresh.upstream(config)), fresh.EVAL,
                         own=workdir)
  texts, _, excluded = prompts_lib.draw_fitted(contexts, None, fit, avoid)
  counts = {"shortened": fit.shortened, "excluded": excluded, "too_long": fit.too_long}
  fresh.record(workdir, fresh.TRAIN, "rs_prompts", texts, **counts)
  print(f"rs: {len(texts)} prompts, budget {fit.budget} tokens; {fit.shortened} lost their "
        f"earliest turns, {excluded} passed over as evaluation contexts", flush=True)
  return texts, counts


def make_scorer(config, mesh) -> tuple[Scorer, str]:
  if config.rs.scorer == "gold":
    if config.data.source != "synthetic":
      raise UserError("rs.scorer='gold' exists only on the synthetic task; "
                      "set --config.pm.workdir and rs.scorer=pm")
    return TextScorer(labelers.GoldScorer()), "gold"
  if config.rs.scorer == "pm":
    if not config.pm.workdir:
      raise UserError("rs.scorer='pm' needs --config.pm.workdir=PM_WORKDIR")
    return reward.PMScorer.from_workdir(config.pm.workdir, mesh), "pm"
  raise UserError(f"rs.scorer={config.rs.scorer!r}; use 'pm' or 'gold'")


def make_mesh(config):
  """The sampler's mesh; `rs.batch_size` (rows per sampler call) must split over its data shards."""
  mesh = mesh_lib.make_mesh(config.mesh)
  div = mesh_lib.batch_size_divisor(mesh)
  if config.rs.batch_size % div:
    raise UserError(f"rs.batch_size={config.rs.batch_size} is not divisible by the mesh's {div} "
                    f"data shards; use a multiple of {div}")
  return mesh


def run(config, workdir: str):
  """Best-of-k over the configured prompts; writes pairs, best responses and the table."""
  if not config.init.workdir:
    raise UserError("rejection sampling needs a policy: pass --config.init.workdir=DIR "
                    "(an LM or distilled run)")
  k = int(config.rs.k)
  ks = [x for x in (1, 2, 4, 8, 16, 32, 64) if x <= k]
  if k < 2:
    raise UserError(f"rs.k={k}; best-of-k needs at least 2 samples per prompt")
  stage = runner.open_stage(config, workdir, make_mesh)
  workdir, mesh = stage.workdir, stage.mesh
  stage.write_config()
  model_cfg, params, tok = params_lib.load_lm(config.init.workdir, mesh)
  scorer, scorer_name = make_scorer(config, mesh)
  contexts, is_synthetic = load_contexts(config)
  contexts, kept = keep_whole(config, contexts, tok, model_cfg, scorer, workdir)

  settings = sampling.Settings(max_new_tokens=config.sampling.max_new_tokens,
                               temperature=config.sampling.temperature,
                               top_k=config.sampling.top_k, top_p=config.sampling.top_p,
                               stop_ids=sampling.stop_ids_for(tok))
  sampler = sampling.Sampler(model_cfg, params, mesh, batch_size=config.rs.batch_size)
  responses, scores, stopped = sample_and_score(sampler, scorer, tok, contexts, k, config,
                                                settings, files.join(workdir, PARTS_FILE))
  flat_c = [c for c in contexts for _ in range(k)]
  flat_r = [r for rs in responses for r in rs]

  pairs = write_pairs(files.join(workdir, "rs_pairs.jsonl"), contexts, responses, scores)
  best = best_of(scores, k)[:, 0]
  if jax.process_index() == 0:
    files.write_text(files.join(workdir, "rs_best.jsonl"), "".join(
        json.dumps({"context": c, "response": rs[b], "score": float(s[b]),
                    "stopped": bool(st[b]), "k": k, "analytic_kl": analytic_kl(k)}) + "\n"
        for c, rs, s, st, b in zip(contexts, responses, scores, stopped, best)))
  result = {"k": k, "analytic_kl": analytic_kl(k), "analytic_kl_note": ANALYTIC_KL_NOTE,
            "repeat_share": repeat_share(responses), "scorer": scorer_name,
            "prompts": len(contexts), "pairs_written": pairs,
            "mean_best_score": float(scores.max(axis=1).mean()),
            "mean_score": float(scores.mean()), "stop_rate": float(stopped.mean()),
            "prompts_kept_whole": kept}
  if is_synthetic:
    gold = labelers.GoldScorer().score(flat_c, flat_r).reshape(len(contexts), k)
    result["gold_vs_k"] = gold_table(scores, gold, ks)
  stage.save_json("rs_results.json", result)
  print(json.dumps(result), flush=True)
  stage.close()
  return result
