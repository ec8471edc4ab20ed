"""Iterated online RLHF (Bai et al. 2022 §4.5): deploy, collect comparisons, retrain the PM,
rerun PPO, and keep score.

Each iteration i, in `WORKDIR/iter_<i>/`:
  1. comparisons.jsonl (+ comparisons_test.jsonl, its held-out split): fresh prompts, two
     responses each, drawn from the current best policy (the last deployed: the previous
     iteration's, or for the first one the last of `online.deploy`, else the initial
     policy) and a mix of rejection-sampled responses (best-of-k by the current PM of the
     initial policy's samples, as the paper's RS models drew from the context-distilled
     LM: `online.rs_policy`) and earlier policies, labeled by the gold labeler with
     Bradley-Terry noise (pairs whose gold scores tie dropped and counted in
     comparisons_labels.json), or on real data by the order of a judge PM's scores
     (`online.judge`, the pipeline's test PM; its ties dropped), or read from a
     human-judgment file in the hh-rlhf format;
  2. pm/: a PM stage trained on the old comparisons (the configured PM data) plus every
     comparisons.jsonl so far, starting from the previous iteration's PM
     (`online.pm_warm_start`, the default: a small laptop budget then still accumulates) or
     afresh from `online.pm_init_workdir` (an LM or PMP run, as the paper retrained);
  3. ppo/: a PPO stage from the initial policy (`init.workdir`) against that PM;
  4. one entry appended to `online_record.json`: comparisons added (and the labels' counts),
     the new PM's accuracy on its own and every earlier test split (non-tied pairs, Wilson
     95% interval), the PPO result, and the Elo of every policy so far (gold or judge PM,
     prompt-bootstrap intervals) on fixed evaluation prompts; `elo.json` adds each policy's
     paired head-to-head with the one deployed before it.
Every prompt set is kept apart from the run's other kind (`hh_jax.data.fresh`): the
collected prompts from every training and evaluation set so far, the Elo prompts from
every training set; prompts are kept whole within the PPO budget (`prompt_fit`).
Sub-stages run through `hh_jax.stages.run`, so each resumes itself; the record is the marker
that an iteration is finished, and files are written whole (write, then rename), so a killed
loop rerun with the same command continues in the stage it was in.
"""
from __future__ import annotations

import copy
import json
import random
import time
from typing import Sequence

import jax
import numpy as np

from hh_jax import files
from hh_jax.data import fresh
from hh_jax.data import hh_rlhf
from hh_jax.data import tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.eval import elo as elo_lib
from hh_jax.eval import intervals
from hh_jax.model import params as params_lib
from hh_jax.model import sampling
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.data import labelers
from hh_jax.data.markers import HUMAN
from hh_jax.data.pairs import Pair
from hh_jax.rl import prompts as prompts_lib
from hh_jax.rl import reward

RECORD = "online_record.json"
INITIAL = "initial"


def policy_name(i: int) -> str:
  return f"online_{i}"


class Record:
  """`online_record.json`: the config's sources and one entry per finished iteration."""

  def __init__(self, workdir: str):
    self.path = files.join(workdir, RECORD)
    self.data = files.read_json(self.path) if files.exists(self.path) else {"iterations": []}

  @property
  def iterations(self) -> list[dict]:
    return self.data["iterations"]

  def append(self, entry: dict) -> None:
    self.data["iterations"].append(entry)
    if jax.process_index() == 0:
      files.write_json(self.path, self.data, indent=2, sort_keys=True)


class Policies:
  """Samplers of the policies deployed so far, loaded once each, on one mesh."""

  def __init__(self, mesh, settings_for):
    self.mesh, self.settings_for = mesh, settings_for
    self._loaded = {}

  def get(self, workdir: str):
    if workdir not in self._loaded:
      cfg, params, tok = params_lib.load_lm(workdir, self.mesh)
      self._loaded[workdir] = (sampling.Sampler(cfg, params, self.mesh, batch_size=32), tok)
    return self._loaded[workdir]

  def respond_all(self, models: dict[str, str], contexts, seed: int, cache_dir: str,
                  with_stopped: bool = False):
    """One response per context from each model {name: workdir}, cached in
    `cache_dir/<name>.json` (stop flags in `<name>.stopped.json`), so a rerun (or the next
    iteration) samples only new models. Returns {name: texts} (and {name: stop flags})."""
    out, stops = {}, {}
    for n, (name, wd) in enumerate(models.items()):
      path = files.join(cache_dir, f"{name}.json")
      stop_path = files.join(cache_dir, f"{name}.stopped.json")
      if files.exists(path) and files.exists(stop_path):
        out[name], stops[name] = files.read_json(path), files.read_json(stop_path)
        continue
      texts, flags = self.respond(wd, contexts, jax.random.PRNGKey(seed + n), with_stopped=True)
      out[name], stops[name] = [r[0] for r in texts], [f[0] for f in flags]
      if jax.process_index() == 0:
        files.write_json(stop_path, stops[name])
        files.write_json(path, out[name])
    return (out, stops) if with_stopped else out

  def respond(self, workdir: str, contexts, key, k: int = 1, with_stopped: bool = False):
    """k sampled responses per context: [n][k] texts (and [n][k] stop flags if asked)."""
    sampler, tok = self.get(workdir)
    from hh_jax.rl import rejection_sampling  # pylint: disable=g-import-not-at-top
    return rejection_sampling.sample_k(sampler, tok, contexts, k, key, self.settings_for(tok),
                                       sampler.batch_size, with_stopped=with_stopped)


def rs_policy(o) -> str:
  """`online.rs_policy`, checked: whose samples the best-of-k of response B picks from."""
  if o.rs_policy not in ("initial", "latest"):
    raise UserError(f"online.rs_policy={o.rs_policy!r}; use 'initial' or 'latest'")
  return o.rs_policy


def best_of_k(scorer, contexts: Sequence[str], candidates: Sequence[Sequence[str]],
              stopped: Sequence[Sequence[bool]]) -> list[str]:
  """For each context, the candidate with the highest PPO reward (`scorer.reward`: the
  normalized PM score of a reply that stopped, the no-stop penalty otherwise), in one batched
  scoring call.

  candidates, stopped: [n][k]. Ties: `rejection_sampling.best_of`'s rule (the earliest), as
  the RS stage.
  """
  from hh_jax.rl import rejection_sampling  # pylint: disable=g-import-not-at-top
  k = len(candidates[0]) if candidates else 0
  if any(len(cs) != k for cs in candidates) or any(len(s) != k for s in stopped):
    raise ValueError(f"best_of_k needs k = {k} candidates and stop flags for every context")
  flat_c = [c for c, cs in zip(contexts, candidates) for _ in cs]
  flat_r = [r for cs in candidates for r in cs]
  flat_s = [s for ss in stopped for s in ss]
  rewards = np.asarray(scorer.reward(flat_c, flat_r, flat_s), np.float64)  # [n * k]
  best = rejection_sampling.best_of(rewards.reshape(len(candidates), k), k)[:, 0]  # [n]
  return [cs[int(j)] for cs, j in zip(candidates, best)]


def label_comparisons(contexts: Sequence[str], responses_a: Sequence[str],
                      responses_b: Sequence[str], temperature: float, rng: random.Random,
                      judge: elo_lib.ScoreJudge | None = None) -> tuple[list, dict]:
  """(labelled pairs, what happened to each drawn pair) for the online comparisons.

  A pair with an empty response or the same text twice is skipped; a pair whose scores tie
  is dropped and counted (`labelers.label_pair`): a tie carries no preference, and a
  coin-flip label would cap the PM's attainable accuracy (at ~0.85 with 30% ties).
  Without `judge`, the gold labeler labels by Bradley-Terry at `temperature` (0: the gold
  order; ties counted as `gold_ties`). With `judge` (a PM run on real data, `online.judge`)
  the label is the judge's order, its scores scored in one batched call; ties within
  `labelers.TIE_TOLERANCE` counted as `judge_ties`.
  """
  name = judge.name if judge is not None else "gold"
  pairs, counts = [], {"labels": (f"{name} judge's order" if judge is not None
                                  else f"gold, temperature {temperature:g}"),
                       "pairs_drawn": len(contexts), "skipped_identical": 0,
                       f"{'judge' if judge is not None else 'gold'}_ties": 0,
                       **({"judge": name} if judge is not None else {})}
  kept = []
  for ctx, ra, rb in zip(contexts, responses_a, responses_b):
    if not ra.strip() or not rb.strip() or ra.strip() == rb.strip():
      counts["skipped_identical"] += 1
    else:
      kept.append((ctx, ra, rb))
  if judge is None:
    for ctx, ra, rb in kept:
      pair = labelers.label_pair(ctx, ra, rb, temperature, rng)
      if pair is None:
        counts["gold_ties"] += 1
      else:
        pairs.append(pair)
    return pairs, counts
  ctxs = [k[0] for k in kept]
  sa = judge.scores(ctxs, [k[1] for k in kept])  # [n]
  sb = judge.scores(ctxs, [k[2] for k in kept])  # [n]
  for (ctx, ra, rb), x, y in zip(kept, sa, sb):
    if labelers.is_tie(x, y):
      counts["judge_ties"] += 1
      continue
    chosen, rejected = (ra, rb) if x > y else (rb, ra)
    pairs.append(Pair(ctx, chosen, rejected, ctx.count(HUMAN), f"judge-{name}"))
  return pairs, counts


def ties(counts: dict) -> int | None:
  """The pairs dropped as ties by whichever labeler made the labels (None: not counted)."""
  return counts.get("gold_ties", counts.get("judge_ties"))


def judge_of(o) -> elo_lib.ScoreJudge:
  """The loop's labeler and Elo judge: `online.judge`'s PM (on real data, the pipeline's test
  PM: a PM of comparisons no policy of the run was trained against) or the synthetic world's
  gold labeler."""
  if o.get("judge"):
    path = files.abspath(o.judge)
    if not files.exists(files.join(path, "reward_stats.json")):
      raise UserError(f"online.judge={o.judge} is not a finished PM run (no reward_stats.json); "
                      "point it at a PM workdir")
    return elo_lib.PMJudge(path, name=path.rstrip("/").rsplit("/", 1)[-1])
  return elo_lib.GoldJudge()


def labels_path(comparisons_path: str) -> str:
  """Where `collect` writes its counts: beside comparisons.jsonl, as comparisons_labels.json."""
  return comparisons_path.rsplit(".jsonl", 1)[0] + "_labels.json"


def collect(c, policies: Policies, deployed: dict, pm_dir: str, iteration: int,
            out: str, out_test: str) -> dict:
  """Writes this iteration's comparisons (and their held-out split); returns counts."""
  o = c.online
  prompt_cfg = copy.deepcopy(c.ppo_stage.prompts)
  # Fresh and whole: none in a training or evaluation set of the run (its train split trains
  # the next PMs, its test split scores them), each within the PPO prompt budget.
  here = out.rsplit("/", 1)[0]
  upstream = [deployed[INITIAL], pm_dir]
  dirs = fresh.run_dirs(here, upstream)  # a rerun after a kill draws what it drew before
  avoid = fresh.recorded(dirs, fresh.TRAIN, own=here) | fresh.recorded(dirs, fresh.EVAL, own=here)
  if o.human_files:  # the people's file holds the contexts: nothing is drawn
    paths = [p for p in str(o.human_files).split(",") if p]
    if iteration > len(paths):
      raise UserError(f"online.human_files names {len(paths)} files but iteration {iteration} "
                      "needs one; add a file of human judgments per iteration")
    new, _ = hh_rlhf.read_file(paths[iteration - 1])
    labels = {"labels": "human", "pairs_drawn": len(new), "skipped_identical": 0,
              "gold_ties": 0}
    excluded, shortened = 0, 0
  else:
    fit = prompt_fit(c, deployed[INITIAL])
    contexts, _, excluded = prompts_lib.draw_fitted(
        prompts_lib.candidates(prompt_cfg, seed=o.seed + 1000 * iteration),
        int(o.prompts_per_iteration), fit, avoid)
    shortened = fit.shortened
    key = jax.random.PRNGKey(o.seed + iteration)
    names = list(deployed)
    latest = deployed[names[-1]]
    a = [r[0] for r in policies.respond(latest, contexts, jax.random.fold_in(key, 0))]
    rng = random.Random(f"online/{o.seed}/{iteration}")
    # B: best-of-k by the current PM of `online.rs_policy`'s samples, or an earlier policy.
    rs_from = deployed[INITIAL] if rs_policy(o) == "initial" else latest
    use_rs = [rng.random() < o.rs_share for _ in contexts]
    b = [""] * len(contexts)
    rs_rows = [j for j, u in enumerate(use_rs) if u]
    if rs_rows:
      cands, stops = policies.respond(rs_from, [contexts[j] for j in rs_rows],
                                      jax.random.fold_in(key, 1), k=o.rs_k, with_stopped=True)
      scorer = reward.PMScorer.from_workdir(
          pm_dir, policies.mesh, no_stop_penalty=c.ppo_stage.ppo.no_stop_penalty)
      for j, best in zip(rs_rows, best_of_k(scorer, [contexts[j] for j in rs_rows], cands,
                                            stops)):
        b[j] = best
    others = [j for j, u in enumerate(use_rs) if not u]
    by_policy: dict[str, list[int]] = {}
    for j in others:
      by_policy.setdefault(deployed[rng.choice(names)], []).append(j)
    for n, (wd, rows) in enumerate(sorted(by_policy.items())):
      for j, r in zip(rows, policies.respond(wd, [contexts[j] for j in rows],
                                             jax.random.fold_in(key, 2 + n))):
        b[j] = r[0]
    new, labels = label_comparisons(contexts, a, b, o.label_temperature, rng,
                                    judge_of(o) if o.get("judge") else None)
  held, train = hh_rlhf.hold_out_contexts(new, round(o.test_fraction * len(new)),
                                          f"online/{iteration}")
  counts = {**labels, "comparisons": len(train), "test_comparisons": len(held)}
  tag = f"online_{iteration}"  # excluded and shortened: of the whole collection
  fresh.record(here, fresh.TRAIN, f"{tag}_comparisons", [p.context for p in train])
  fresh.record(here, fresh.EVAL, f"{tag}_test", [p.context for p in held], excluded=excluded,
               shortened=shortened)
  print(f"online: iteration {iteration} prompts: {shortened} lost their earliest turns, "
        f"{excluded} passed over as another set's", flush=True)
  if jax.process_index() == 0:
    files.write_json(labels_path(out), counts)
    hh_rlhf.write_file(out_test, held)
    hh_rlhf.write_file(out, train)  # last: its presence marks the collection done
  return counts


def prompt_fit(c, policy_dir: str) -> prompts_lib.PromptFit:
  """The online PPO stages' prompt budget (their PM's seq_len minus the reply length), in the
  policy's tokens: collected and Elo prompts are kept whole within it, as PPO's are."""
  seq, new = int(c.pm_stage.data.seq_len), int(c.ppo_stage.sampling.max_new_tokens)
  tok = tok_lib.Tokenizer.load(files.join(policy_dir, tok_lib.FILENAME))
  return prompts_lib.PromptFit(
      tok, seq - new, f"pm_stage.data.seq_len {seq} - ppo_stage.sampling.max_new_tokens {new}",
      "lower ppo_stage.sampling.max_new_tokens or raise pm_stage.data.seq_len",
      skip_too_long=c.ppo_stage.prompts.source == "hh_rlhf")  # as the PPO stage's own draw


def pair_accuracy(chosen_scores, rejected_scores, confidence: float = 0.95) -> dict | None:
  """A PM's accuracy on labelled pairs: the share it orders like the label, a PM tie (equal
  scores) counting half, with the Wilson interval at `confidence` over the n pairs.

  The pairs are non-tied by construction (`label_comparisons` drops gold ties), so 1 is
  attainable. None without pairs.
  """
  sc = np.asarray(chosen_scores, np.float64)    # [n]
  sr = np.asarray(rejected_scores, np.float64)  # [n]
  if not len(sc):
    return None
  right = float(np.sum(sc > sr) + 0.5 * np.sum(sc == sr))
  lo, hi = intervals.wilson(right, len(sc), confidence)
  return {"accuracy": right / len(sc), "lo": lo, "hi": hi, "n": int(len(sc)),
          "pm_ties": int(np.sum(sc == sr)), "confidence": confidence}


def pm_accuracy(pm_dir: str, path: str, mesh) -> dict | None:
  """`pair_accuracy` of a PM on a comparisons file (non-tied pairs, raw scores); None if empty."""
  pairs, _ = hh_rlhf.read_file(path)
  if not pairs:
    return None
  scorer = reward.PMScorer.from_workdir(pm_dir, mesh)
  sc = scorer.score_raw([p.context for p in pairs], [p.chosen for p in pairs])
  sr = scorer.score_raw([p.context for p in pairs], [p.rejected for p in pairs])
  return pair_accuracy(sc, sr)


def elo_table(c, policies: Policies, deployed: dict, workdir: str) -> dict:
  """Elo of every deployed policy by the loop's judge (`judge_of`: gold, or `online.judge`'s
  PM) on fixed prompts (responses cached), prompt-bootstrap intervals, and each policy's
  paired head-to-head with the one before."""
  o = c.online
  prompt_cfg = copy.deepcopy(c.ppo_stage.prompts)
  # Drawn once, fresh (no training context of the run) and whole, then kept: later
  # iterations score new policies on the same prompts (their responses are cached) and
  # collect around them.
  path = files.join(workdir, "elo_contexts.json")
  if files.exists(path):
    contexts = files.read_json(path)
  else:
    contexts, _, _ = prompts_lib.draw_eval(prompt_cfg, int(o.elo_prompts), int(o.elo_seed),
                                           prompt_fit(c, deployed[INITIAL]), workdir,
                                           list(deployed.values()), "online_elo")
    if jax.process_index() == 0:
      files.write_json(path, contexts)
  responses = policies.respond_all(deployed, contexts, o.elo_seed,
                                   files.join(workdir, "responses"))
  judge = judge_of(o)
  games = elo_lib.play(contexts, responses, judge)
  judged = {m: judge.scores(contexts, rs) for m, rs in responses.items()}  # [n] each
  rep = elo_lib.report(games, reference=INITIAL, judge=judge.name, seed=o.seed)
  for row in rep["models"]:  # the mean score under the judge ("gold" for the gold labeler)
    row[judge.name] = float(np.mean(judged[row["name"]]))
  rep["head_to_head"] = elo_lib.head_to_heads(judged, elo_lib.consecutive(list(responses)),
                                              contexts, seed=o.seed)
  return rep


def deployed_before(deploy: str) -> dict[str, str]:
  """{name: workdir} of `online.deploy`'s policies, each named by its directory."""
  out = {}
  for wd in [w for w in str(deploy).split(",") if w]:
    wd = files.abspath(wd)
    name = wd.rstrip("/").rsplit("/", 1)[-1]
    if name in out or name == INITIAL or name.startswith("online_"):
      raise UserError(f"online.deploy names two policies {name!r} (or one the loop uses "
                      f"itself); give each deployed workdir its own directory name")
    if not files.exists(files.join(wd, "config.json")):
      raise UserError(f"online.deploy: {wd} holds no run (no config.json); pass the workdir "
                      "of an LM, distill or PPO run")
    out[name] = wd
  return out


def _stage_done(workdir: str, marker: str) -> bool:
  return files.exists(files.join(workdir, marker))


def run_stage(cfg, workdir: str, marker: str, label: str) -> float:
  """Runs (or resumes) one sub-stage unless its `marker` file says it finished; seconds."""
  from hh_jax import stages  # pylint: disable=g-import-not-at-top
  if _stage_done(workdir, marker):
    return 0.0
  t0 = time.perf_counter()
  stages.run(cfg, workdir)
  dt = time.perf_counter() - t0
  print(f"online: {label} done in {dt:.0f} s", flush=True)
  return dt


def run(config, workdir: str):
  """The online stage; returns the record. Rerun with the same command to resume."""
  o = config.online
  if not config.init.workdir:
    raise UserError("the online loop starts from a policy: pass --config.init.workdir=DIR "
                    "(an LM, distill or PPO run)")
  if not o.pm_warm_start and not o.pm_init_workdir:
    raise UserError("each online PM starts from an LM or PMP run: pass "
                    "--config.online.pm_init_workdir=DIR")
  if not config.pm.workdir:
    raise UserError("the first iteration's rejection sampling needs a PM: pass "
                    "--config.pm.workdir=PM_RUN")
  rs_policy(o)
  workdir = files.abspath(workdir)
  files.makedirs(workdir)
  if fresh.run_dirs(workdir)[0] == workdir:  # a run of its own: its stages' sets are one run's
    fresh.mark_run(workdir)
  mesh = mesh_lib.one_device_mesh()
  record = Record(workdir)
  t = config.ppo_stage.sampling

  def settings_for(tok):
    return sampling.Settings(max_new_tokens=t.max_new_tokens, temperature=1.0,
                             stop_ids=sampling.stop_ids_for(tok), pad_id=tok.pad_id)

  policies = Policies(mesh, settings_for)
  deployed = {INITIAL: files.abspath(config.init.workdir), **deployed_before(o.deploy)}
  pm_dir = files.abspath(config.pm.workdir)
  comparison_files, test_files = [], []
  for i in range(1, int(o.iterations) + 1):
    it = files.join(workdir, f"iter_{i}")
    comp, test = files.join(it, "comparisons.jsonl"), files.join(it, "comparisons_test.jsonl")
    done = i <= len(record.iterations)
    t0 = time.perf_counter()
    source = list(deployed)[-1]  # the policy `collect` deploys this iteration
    if not done and not files.exists(comp):
      counts = collect(config, policies, deployed, pm_dir, i, comp, test)
      print(f"online: iteration {i} comparisons {counts}", flush=True)
      if not counts["comparisons"]:
        print(f"online: iteration {i} kept no comparisons (of {counts['pairs_drawn']} pairs "
              f"drawn, {ties(counts)} ties, {counts['skipped_identical']} empty or "
              "identical); its PM trains on the earlier data only", flush=True)
    comparison_files.append(comp)
    test_files.append(test)
    pm_cfg = copy.deepcopy(config.pm_stage)
    with pm_cfg.unlocked():
      pm_cfg.init.workdir = pm_dir if o.pm_warm_start else files.abspath(o.pm_init_workdir)
      pm_cfg.data.source = ",".join(dict.fromkeys(
          [s for s in str(pm_cfg.data.source).split(",") if s and s != "hh_rlhf"] + ["hh_rlhf"]))
      pm_cfg.data.train_files = ",".join([f for f in str(pm_cfg.data.train_files).split(",")
                                          if f] + comparison_files)
      pm_cfg.data.eval_fraction = 0.0  # the online test splits are held out already
    new_pm = files.join(it, "pm")
    if not done:
      run_stage(pm_cfg, new_pm, "reward_stats.json", f"iteration {i} PM")
    ppo_cfg = copy.deepcopy(config.ppo_stage)
    with ppo_cfg.unlocked():
      ppo_cfg.init.workdir = deployed[INITIAL]
      ppo_cfg.pm.workdir = new_pm
    new_policy = files.join(it, "ppo")
    if not done:
      run_stage(ppo_cfg, new_policy, "ppo_eval.json", f"iteration {i} PPO")
    deployed[policy_name(i)] = new_policy
    pm_dir = new_pm
    if done:
      continue
    counts = {"comparisons": len(hh_rlhf.read_file(comp)[0]),
              "test_comparisons": len(hh_rlhf.read_file(test)[0])}
    if files.exists(labels_path(comp)):  # pairs drawn, skipped, gold ties dropped
      counts["labels"] = files.read_json(labels_path(comp))
    accuracy = {f"iter_{j + 1}": pm_accuracy(new_pm, f, mesh) for j, f in enumerate(test_files)}
    ppo_eval = files.read_json(files.join(new_policy, "ppo_eval.json"))
    rep = elo_table(config, policies, deployed, workdir)
    entry = {"iteration": i, **counts, "collected_from": source,
             "pm_accuracy": accuracy,
             "ppo": {k: ppo_eval.get(k) for k in ("gold_initial", "gold_final", "gold_sem",
                                                 "pm_stopped_initial", "pm_stopped_final",
                                                 "stop_rate_initial", "stop_rate_final", "kl",
                                                 "sqrt_kl_r2")},
             "elo": rep["models"], "seconds": time.perf_counter() - t0}
    record.append(entry)
    elo_lib.write(files.join(workdir, "elo.json"), rep)
    print(f"online: iteration {i} recorded: " + json.dumps(
        {"pm_accuracy": {k: v and round(v["accuracy"], 3) for k, v in accuracy.items()},
         "elo": {r["name"]: round(r["elo"]) for r in rep["models"]}}),
        flush=True)
  return record.data


__all__ = ["run", "Record", "collect", "label_comparisons", "judge_of", "ties", "best_of_k", "pair_accuracy",
           "pm_accuracy", "elo_table"]
