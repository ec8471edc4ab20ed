"""`report.md` of a pipeline run: what a researcher looks at first, from the stages' outputs.

Everything is computed from files the stages wrote (metrics.jsonl, final_eval.json,
rs_results.json, ppo_eval.json and its plots, online_record.json: the online table with its
gold ties and PM accuracies on non-tied pairs with Wilson intervals) plus one fresh
evaluation of every policy on prompts no stage trained on: the gold-judged Elo with
prompt-bootstrap intervals and each policy's paired head-to-head with the one before it
(`elo.json`), helpfulness and harmlessness on benign and harmful requests (the paper's
tension, scored by the synthetic labeler's two halves), every policy's score under every PM
of the run (the train PM and the test PM of the other half of the comparisons, with the KL
where they part through PPO; the online loop's later PMs in a table of their own; the PM →
Elo slope), the paper's figures (`report_plots`: PM learning curve, best-of-n and PPO
against √KL, Elo against online iteration), and two capability probes with the paired
alignment tax (topic knowledge, which the reward pays for; fact recall, which it does not).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from hh_jax import files
from hh_jax import metrics as metrics_lib
from hh_jax.data import fresh
from hh_jax.data import synthetic
from hh_jax.eval import capabilities
from hh_jax.eval import elo as elo_lib
from hh_jax.eval import provenance
from hh_jax.eval import report_real
from hh_jax.eval import report_plots
from hh_jax.data import labelers
from hh_jax.rl import online as online_lib

CURVES = {"lm": "loss", "pmp": "loss", "pm": "loss", "distill": "loss",
          "ppo": "objective/pm_stopped"}


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_curves(workdir: str, path: str) -> None:
  """One panel per stage: its training loss (PPO: PM score) against step."""
  plt = _plt()
  fig, axes = plt.subplots(1, len(CURVES), figsize=(3.0 * len(CURVES), 2.6))
  for ax, (stage, key) in zip(axes, CURVES.items()):
    rows = [r for r in metrics_lib.read_metrics(files.join(workdir, stage)) if key in r]
    by_step = {r["step"]: r[key] for r in rows}
    steps = sorted(by_step)
    ax.plot(steps, [float(by_step[s]) for s in steps], lw=1)  # "nan" is stored as a string
    ax.set_title(f"{stage}: {key}", fontsize=8)
    ax.tick_params(labelsize=7)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)
  plt.close(fig)


def policies(workdir: str, srcs: dict, record: dict) -> dict[str, str]:
  """Every model worth comparing, oldest first: the LM, the initial policy, PPO, online_i."""
  out = {"lm": files.join(workdir, "lm"), "initial": srcs["ppo"]["init"],
         "ppo": files.join(workdir, "ppo")}
  for e in record.get("iterations", []):
    i = e["iteration"]
    out[online_lib.policy_name(i)] = files.join(workdir, "online", f"iter_{i}", "ppo")
  return out


def pms(workdir: str, record: dict) -> dict[str, str]:
  """Every PM of the run, oldest first: the offline train PM, the test PM of the other half
  of its comparisons (when the run has one), then each online iteration's."""
  out = {"pm": files.join(workdir, "pm")}
  if files.exists(files.join(workdir, "pm_test", "reward_stats.json")):
    out["pm_test"] = files.join(workdir, "pm_test")
  for e in record.get("iterations", []):
    i = e["iteration"]
    out[f"online_pm_{i}"] = files.join(workdir, "online", f"iter_{i}", "pm")
  return out


def trained_against(models: dict[str, str], pm_names: list[str]) -> dict[str, str]:
  """Which PM each RL policy was trained against: ppo the offline PM, online_i iteration i's."""
  out = {"ppo": "pm"} if "ppo" in models else {}
  for name in pm_names:
    if name.startswith("online_pm_"):
      policy = online_lib.policy_name(int(name.rsplit("_", 1)[1]))
      if policy in models:
        out[policy] = name
  return out


def consecutive_policies(models: dict[str, str]) -> list[tuple[str, str]]:
  """The head-to-heads of the report: each policy against the one before it (ppo vs
  initial, online_1 vs ppo, online_i vs online_(i−1)); the pretrained LM is not a policy."""
  return elo_lib.consecutive([m for m in models if m != "lm"])


def _accuracy_cell(acc) -> str:
  """A PM accuracy entry of the record: 'acc [lo, hi] (n)' (a bare float from older runs)."""
  if acc is None:
    return "–"
  if not isinstance(acc, dict):
    return f"{acc:.3f}"
  return f"{acc['accuracy']:.3f} [{acc['lo']:.3f}, {acc['hi']:.3f}] ({acc['n']})"


def online_rows(record: dict) -> list[dict]:
  """One row per online iteration for report.md: comparisons, ties dropped (by the gold
  labeler, or the judge PM on real data), the new PM's accuracy on its own and the first test
  split, the policy's gold score and Elo."""
  rows = []
  for e in record["iterations"]:
    mine = {x["name"]: x for x in e["elo"]}.get(online_lib.policy_name(e["iteration"]), {})
    ties = online_lib.ties(e.get("labels", {}))
    rows.append({"iteration": str(e["iteration"]), "comparisons": str(e["comparisons"]),
                 "ties": "–" if ties is None else str(ties),
                 "pm_acc_own": _accuracy_cell(e["pm_accuracy"].get(f"iter_{e['iteration']}")),
                 "pm_acc_first": _accuracy_cell(e["pm_accuracy"].get("iter_1")),
                 "gold_final": math.nan if e["ppo"].get("gold_final") is None
                 else e["ppo"]["gold_final"],  # 0.0 is a score, not a missing one
                 "elo": mine.get("elo", math.nan),
                 "elo_interval": f"[{mine.get('lo', math.nan):.0f}, "
                                 f"{mine.get('hi', math.nan):.0f}]"})
  return rows


def online_judge_name(record: dict) -> str:
  """Who labelled the online comparisons and judged the loop's Elo, from its record."""
  labels = (record["iterations"][0].get("labels") or {}) if record["iterations"] else {}
  if "judge" in labels:
    return f"judge PM `{labels['judge']}`"
  return "people" if labels.get("labels") == "human" else "gold labeler"


def pm_table(contexts, responses: dict[str, list[str]], pm_dirs: dict[str, str],
             stopped: dict[str, list[bool]]
             ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
  """({model: {pm: mean raw score of its replies that stopped}}, {pm: its reward std}).

  The PM part of PPO's reward (`reward.pm_reward`), apart from the stop rate (`stop_rates`):
  a reply that hit the token limit gets the no-stop penalty there, not the PM's opinion, so
  it is left out here. Raw: the PM's own units, as the paper's Elo per PM unit reads them.
  Against the PM it trained on an RL policy is scored in-sample; the others are its test PMs.
  """
  from hh_jax.rl import reward  # pylint: disable=g-import-not-at-top
  out, stds = {m: {} for m in responses}, {}
  for name, wd in pm_dirs.items():
    scorer = reward.PMScorer.from_workdir(wd)
    stds[name] = float(scorer.stats["std"])
    for m, rs in responses.items():
      keep = np.asarray(stopped[m], bool)
      raw = scorer.score_raw([c for c, k in zip(contexts, keep) if k],
                             [r for r, k in zip(rs, keep) if k])
      out[m][name] = float(np.mean(raw)) if keep.any() else math.nan
  return out, stds


def stop_rates(stopped: dict[str, list[bool]]) -> dict[str, float]:
  """Share of each model's replies that ended with a stop token."""
  return {m: float(np.mean(np.asarray(s, bool))) for m, s in stopped.items()}


def pm_table_md(table: dict[str, dict[str, float]], stds: dict[str, float],
                against: dict[str, str], stops: dict[str, float] | None = None) -> str:
  """The train-PM / test-PM table: each model's gain over the initial policy under each PM,
  in that PM's reward std (PMs differ in scale); the PM a policy was trained against in
  bold. The initial row gives the raw means the gains start from."""
  names = list(stds)
  base = table[online_lib.INITIAL]
  extra = " stop rate |" if stops is not None else ""
  lines = ["| model | " + " | ".join(names) + " |" + extra,
           "| --- |" + " --- |" * (len(names) + bool(extra))]
  for m, row in table.items():
    if m == online_lib.INITIAL:
      cells = [f"0 (raw {base[n]:.3f})" for n in names]
    else:
      cells = [f"{(row[n] - base[n]) / stds[n]:+.3f}" for n in names]
      cells = [f"**{c}**" if against.get(m) == n else c for c, n in zip(cells, names)]
    stop = f" {stops[m]:.3f} |" if stops is not None else ""
    lines.append(f"| {m} | " + " | ".join(cells) + " |" + stop)
  return "\n".join(lines)


def hh_table(prompts, responses: dict[str, list[str]]) -> list[dict]:
  """Mean helpfulness and harmlessness per model, on benign and on harmful requests."""
  rows = []
  for m, rs in responses.items():
    row = {"name": m}
    for kind, want in (("benign", False), ("harmful", True)):
      idx = [i for i, p in enumerate(prompts) if p.harmful == want]
      row[f"helpful_{kind}"] = float(np.mean([labelers.helpfulness(prompts[i].context, rs[i])
                                              for i in idx])) if idx else math.nan
      row[f"harmless_{kind}"] = float(np.mean([labelers.harmlessness(prompts[i].context, rs[i])
                                               for i in idx])) if idx else math.nan
    row["gold"] = float(np.mean([labelers.gold_score(p.context, r) for p, r in zip(prompts, rs)]))
    rows.append(row)
  return rows


def prompt_fit(config, workdir: str):
  """Prompts kept whole within the PPO prompt budget, as the policies were trained."""
  from hh_jax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  seq, new = int(config.pm.data.seq_len), int(config.ppo.sampling.max_new_tokens)
  tok = tok_lib.Tokenizer.load(files.join(workdir, "lm", tok_lib.FILENAME))
  return prompts_lib.PromptFit(tok, seq - new, f"pm.data.seq_len {seq} - "
                               f"ppo.sampling.max_new_tokens {new}",
                               "lower ppo.sampling.max_new_tokens or raise pm.data.seq_len",
                               skip_too_long=provenance.is_real(config))


def elo_prompts(config, workdir: str, trained: set[str]) -> list[synthetic.Prompt]:
  """The report's Elo prompts: `report.elo_prompts` synthetic contexts kept whole within the
  PPO prompt budget (as the policies were trained), none in a training set of the run;
  recorded in WORKDIR/eval_contexts.json with the number passed over."""
  fit = prompt_fit(config, workdir)
  stream = ((p, fit(p.context)[0]) for p in synthetic.prompt_stream(int(config.report.elo_seed)))
  kept, excluded = fresh.draw(stream, int(config.report.elo_prompts), trained,
                              text=lambda x: x[1])
  out = [dataclasses.replace(p, context=text, harmful=synthetic.parse_request(text).harmful)
         for p, text in kept]
  fresh.record(workdir, fresh.EVAL, "report_elo", [p.context for p in out], excluded=excluded,
               shortened=sum(p.context != text for p, text in kept))
  return out


def eval_sets_md(workdir: str) -> str:
  """A table of every evaluation set recorded in the run: where, size, excluded, shortened,
  and its overlap with the run's training contexts (0 when the draws did their job)."""
  trained = fresh.recorded([workdir], fresh.TRAIN)
  rows = []
  for key, e in sorted(fresh.read_sets([workdir], fresh.EVAL).items()):
    path, name = key.rsplit(":", 1)
    where = path.rsplit("/", 1)[0][len(workdir):].lstrip("/") or "."
    rows.append({"set": name, "in": where, "size": str(e["size"]),
                 "excluded": str(e.get("excluded", "n/a")),
                 "shortened": str(e.get("shortened", "n/a")),
                 "in_training": str(len(trained & set(e["digests"])))})
  return _md_table(rows, ["set", "in", "size", "excluded", "shortened", "in_training"])


def _md_table(rows: list[dict], cols: list[str], fmt: str = "{:.3f}") -> str:
  lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
  for r in rows:
    cells = [r[c] if isinstance(r[c], str) else fmt.format(r[c]) for c in cols]
    lines.append("| " + " | ".join(str(x) for x in cells) + " |")
  return "\n".join(lines)


def write_report(config, workdir: str, srcs: dict) -> dict:
  """Evaluates every policy, writes elo.json, elo.png, curves.png and report.md; returns
  the numbers behind them."""
  from hh_jax.model import sampling  # pylint: disable=g-import-not-at-top
  from hh_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  r = config.report
  rec_path = files.join(workdir, "online", online_lib.RECORD)
  record = files.read_json(rec_path) if files.exists(rec_path) else {"iterations": []}
  models = policies(workdir, srcs, record)
  t = config.ppo.sampling

  def settings_for(tok):
    return sampling.Settings(max_new_tokens=t.max_new_tokens, temperature=1.0,
                             stop_ids=sampling.stop_ids_for(tok), pad_id=tok.pad_id)

  pol = online_lib.Policies(mesh_lib.one_device_mesh(), settings_for)
  trained = fresh.recorded([workdir], fresh.TRAIN)  # every training context of the run
  real = provenance.is_real(config)  # hh-rlhf prompts, the test PM judges (`report_real`)
  if real:
    contexts = report_real.draw_prompts(
        workdir, report_real.file_list(config.pm.data.eval_files), int(r.elo_prompts),
        int(r.elo_seed), prompt_fit(config, workdir), trained, "report_elo")
    judge = report_real.judge(workdir)
  else:
    prompts = elo_prompts(config, workdir, trained)
    contexts = [p.context for p in prompts]
    judge = elo_lib.GoldJudge()
  responses, stopped = pol.respond_all(models, contexts, int(r.elo_seed),
                                       files.join(workdir, "report_responses"),
                                       with_stopped=True)
  games = elo_lib.play(contexts, responses, judge)
  pm_dirs = pms(workdir, record)
  scores, stds = pm_table(contexts, responses, pm_dirs, stopped)
  stops = stop_rates(stopped)
  against = trained_against(models, list(pm_dirs))
  slope_pm = list(pm_dirs)[-1]  # the latest PM: the best judge the run has
  rep = elo_lib.report(games, reference="initial", judge=judge.name, seed=int(r.elo_seed),
                       pm_means={m: row[slope_pm] for m, row in scores.items()
                                 if math.isfinite(row[slope_pm])})  # NaN: no reply stopped
  rep["pm_slope_pm"] = slope_pm
  judged = {m: judge.scores(contexts, rs) for m, rs in responses.items()}  # [n] each
  rep["head_to_head"] = elo_lib.head_to_heads(judged, consecutive_policies(models), contexts,
                                              seed=int(r.elo_seed))
  elo_lib.write(files.join(workdir, "elo.json"), rep)
  elo_lib.plot(rep, files.join(workdir, "elo.png"), f"{judge.name}-judged Elo")
  if real:
    hh = real_subsets(config, workdir, trained, models, pol, judge)
    tasks = report_real.capability_tasks(r.get("capability_tasks", ""))
    caps = {m: capabilities.evaluate(wd, tasks) for m, wd in models.items()} if tasks else {}
  else:
    hh = hh_table(prompts, responses)
    caps = synthetic_capabilities(r, workdir, trained, models)
  plot_curves(workdir, files.join(workdir, "curves.png"))
  figs = report_plots.write_all(workdir, rep, record, float(config.ppo.eval.part_threshold))

  pm_eval = files.read_json(files.join(workdir, "pm", "final_eval.json")) if files.exists(
      files.join(workdir, "pm", "final_eval.json")) else {}
  rs = files.read_json(files.join(workdir, "rs", "rs_results.json")) if files.exists(
      files.join(workdir, "rs", "rs_results.json")) else {}
  ppo = files.read_json(files.join(workdir, "ppo", "ppo_eval.json"))
  timings = files.read_json(files.join(workdir, "timings.json")) if files.exists(
      files.join(workdir, "timings.json")) else {}

  md = [f"# hh_jax pipeline report ({config.preset})", "", *provenance.report_note(config),
        f"Workdir `{workdir}`. Stage wall times (s): " +
        ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) +
        f"; total {sum(timings.values()):.0f} s.", "",
        "## Loss curves", "", "![curves](curves.png)", "",
        "## Preference model", "",
        f"Held-out accuracy {pm_eval.get('eval_accuracy', math.nan):.3f} "
        f"(pref. loss {pm_eval.get('eval_pref_loss', math.nan):.3f}); reward mean/std "
        f"{pm_eval.get('reward', {}).get('mean', math.nan):.3f} / "
        f"{pm_eval.get('reward', {}).get('std', math.nan):.3f}.", "",
        *report_real.pm_vs_bow_md(pm_eval)]
  md += report_plots.learning_curve_md(figs)
  if rs.get("gold_vs_k"):
    md += ["## Best-of-k (rejection sampling, PM picks)", "",
           "The PM picks by PPO's reward (a reply that never stopped gets the no-stop "
           "penalty; ties go to the earliest sample). `analytic_kl` = log k − (k−1)/k is exact "
           "for distinct samples and an upper bound where they repeat: "
           f"{rs.get('repeat_share', math.nan):.0%} of prompts drew a repeat.", "",
           _md_table([{**x, "k": str(x["k"])} for x in rs["gold_vs_k"]],
                     ["k", "analytic_kl", "gold", "gold_oracle", "selector_score"]), ""]
  gold_md = ("" if real else
             f"Gold {ppo.get('gold_initial', math.nan):.3f} → "
             f"{ppo.get('gold_final', math.nan):.3f} (SEM of the difference "
             f"{ppo.get('gold_sem', math.nan):.3f}); ")
  md += ["## PPO", "",
         f"{gold_md}PM score on replies "
         f"that stopped {ppo['pm_stopped_initial']:.3f} → {ppo['pm_stopped_final']:.3f}; stop "
         f"rate {ppo['stop_rate_initial']:.3f} → {ppo['stop_rate_final']:.3f}; reward (that PM "
         f"score, {ppo['no_stop_penalty']:g} for a reply that never stopped) "
         f"{ppo['reward_initial']:.3f} → {ppo['reward_final']:.3f}; KL {ppo['kl']:.2f} nats; "
         f"PM score (stopped replies) vs √KL R² {ppo['sqrt_kl_r2']:.2f}.", "",
         ("" if real else "![gold vs sqrt KL](ppo/gold_vs_sqrt_kl.png) ") +
         "![PM vs sqrt KL](ppo/pm_vs_sqrt_kl.png)", ""]
  if real:  # the figure's left half is gold, its right half the PM score above
    md += ["Best-of-n and PPO against √KL in gold is left out: there is no gold score of a "
           "real reply.", ""]
  else:
    md += report_plots.bon_ppo_md(figs)
  halves = [n for n in ("pm", "pm_test") if n in stds]
  md += report_plots.train_vs_test_md(
      figs, pm_table_md(scores, {n: stds[n] for n in halves}, against, stops))
  if record["iterations"]:
    labeler = online_judge_name(record)
    md += ["## Online iterations", "",
           f"Ties (pairs whose two responses the {labeler} scores equally) are dropped "
           "from the comparisons, so PM accuracy is on non-tied held-out pairs and 1 is "
           "attainable; in brackets its Wilson 95% interval, then the number of pairs. Elo: "
           f"the loop's own, judged by the {labeler} on its own prompts.", ""]
    md += [_md_table(online_rows(record), ["iteration", "comparisons", "ties",
                                           "pm_acc_own", "pm_acc_first"]
                     + ([] if real else ["gold_final"]) + ["elo", "elo_interval"]), ""]
  md += [f"## Elo ({judge.name} judge, fresh prompts)", "",
         f"{rep['bootstrap_units']} prompts"
         + (" of the held-out hh-rlhf file" if real else "") +
         ", every pair of models on each; the intervals resample prompts, each with all its "
         "games.", "", *([report_real.JUDGE_CAVEAT, ""] if real else []),
         elo_lib.table(rep), "", "![elo](elo.png)", ""]
  if record["iterations"]:
    md += report_plots.elo_by_iteration_md(figs)
  md += ["### Head-to-head: each policy against the one before it", "",
         "The same prompts, one response each; A wins when the "
         f"{judge.name} score of its response is higher. Win rate counts a tie half; intervals and two-sided p-values are from "
         f"{rep['head_to_head'][0]['bootstrap_samples'] if rep['head_to_head'] else 0} "
         "prompt resamples (p: twice the share of resampled statistics on the far side of "
         "the null, 0.5 or 0).", "",
         elo_lib.head_to_head_table(rep["head_to_head"]), ""]
  if rep["pm_slope"] is not None:
    md += [f"The fit regresses each model's Elo on its mean raw score under `{slope_pm}`; the "
           "paper's ≈ 174 is 400 / ln 10, a PM whose score differences are calibrated log-odds "
           "read as Elo.", ""]
  md += ["## Evaluation sets", "",
         "Every set of prompts an evaluation of this run scored, drawn apart from every "
         "training context the run recorded (`train_contexts.json` of each stage: the PM "
         "comparisons, the PPO, online and rejection-sampling prompts), compared by "
         "normalised text; *excluded*: candidates passed over because a training set held "
         "them; *shortened*: prompts that lost their earliest turns to the prompt budget.", "",
         eval_sets_md(workdir), ""]
  online_pms = [n for n in stds if n.startswith("online_pm_")]
  if online_pms:
    md += ["## The online loop's later PMs", "",
           "Each online iteration trains a new PM on more data: replayed offline comparisons "
           "plus every online comparison collected up to it. Each model's mean score under "
           "each of them, on its replies that stopped, minus the initial policy's, in units of "
           "that PM's reward std; in bold the PM the policy was trained against (an in-sample "
           "gain); the share of replies that stopped apart. The prompts of the Elo above.", "",
           pm_table_md(scores, {n: stds[n] for n in online_pms}, against, stops), ""]
  md += helpful_harmless_md(hh, real, judge.name) + capabilities_md(caps, real)
  files.write_text(files.join(workdir, "report.md"), "\n".join(md))
  return {"elo": rep, "helpful_harmless": hh, "capabilities": caps, "timings": timings,
          "pm_scores": scores, "stop_rates": stops, "trained_against": against,
          "figures": figs["figures"], "parting": figs.get("parting"),
          "tax": capabilities.paired_tax(caps, "lm") if caps else {}}


def synthetic_capabilities(r, workdir: str, trained: set[str], models: dict[str, str]) -> dict:
  """The two synthetic probes (topic, recall) for every model, their items recorded."""
  items, passed = capabilities.synthetic_probe(int(r.capability_items), avoid=trained)
  fresh.record(workdir, fresh.EVAL, "report_capability_items",
               [capabilities.item_prompt(it) for it in items], excluded=passed)
  recall, recall_passed = capabilities.recall_probe(int(r.recall_items), avoid=trained)
  fresh.record(workdir, fresh.EVAL, "report_recall_items",
               [capabilities.item_prompt(it) for it in recall], excluded=recall_passed)
  return {m: capabilities.evaluate(wd, {"synthetic": "synthetic", "recall": "synthetic"},
                                   synthetic_n=int(r.capability_items), synthetic_avoid=trained,
                                   recall_n=int(r.recall_items))
          for m, wd in models.items()}


def real_subsets(config, workdir: str, trained: set[str], models: dict[str, str], pol,
                 judge) -> list[dict] | None:
  """The helpful/harmless table on real data: each model's mean test-PM score on the
  prompts of `report.helpful_files` and of `report.harmless_files` (None without both)."""
  r = config.report
  paths = {s: report_real.file_list(r.get(f"{s}_files", "")) for s in ("helpful", "harmless")}
  if not all(paths.values()):
    return None
  fit = prompt_fit(config, workdir)
  subsets = {s: report_real.draw_prompts(workdir, p, int(r.elo_prompts), int(r.elo_seed) + 1,
                                         fit, trained, f"report_{s}")
             for s, p in paths.items()}
  responses = {s: pol.respond_all(models, ctx, int(r.elo_seed) + 1,
                                  files.join(workdir, "report_responses", s))
               for s, ctx in subsets.items()}
  return report_real.subset_table(judge, subsets, responses)


def helpful_harmless_md(hh, real: bool, judge_name: str) -> list[str]:
  md = ["## Helpfulness vs harmlessness", ""]
  if not real:
    return md + ["Means of the synthetic labeler's two halves on benign and harmful requests "
                 "(harmlessness is 0 on benign requests by construction).", "",
                 _md_table(hh, ["name", "helpful_benign", "helpful_harmful",
                                "harmless_harmful", "gold"]), ""]
  if hh is None:
    return md + ["Left out: it needs the prompts of an hh-rlhf helpful subset and a harmless "
                 "one (pass --config.report.helpful_files=PATH and "
                 "--config.report.harmless_files=PATH, e.g. helpful-base/test.jsonl.gz and "
                 "harmless-base/test.jsonl.gz), and there is no gold labeler of real replies.",
                 ""]
  return md + [f"Each model's mean `{judge_name}` score (± its standard error over prompts) on "
               "prompts of the helpful and of the harmless hh-rlhf files, none a training "
               "context of the run. " + report_real.JUDGE_CAVEAT, "",
               _md_table(hh, ["name", "helpful", "harmless"]), ""]


def capabilities_md(caps: dict, real: bool) -> list[str]:
  md = ["## Alignment tax (capability probes)", ""]
  if real and not caps:
    return md + ["Left out: the synthetic probes test the synthetic world's knowledge, which a "
                 "model trained on hh-rlhf never saw; pass --config.report.capability_tasks="
                 "mmlu:PATH,arc_easy:PATH,... (local files in the real formats, "
                 "`hh_jax/eval/capabilities.py`).", ""]
  if real:
    return md + ["Accuracy ± its binomial standard error on each task, and in brackets each "
                 "model's change from the LM with the 95% interval of the paired per-item "
                 "difference (the same items for every model): negative is a tax.", "",
                 capabilities.tax_table(caps, "lm"), ""]
  return md + [
      "Accuracy ± its binomial standard error on each probe, and in brackets each model's "
      "change from the LM with the 95% interval of the paired per-item difference (the "
      "same items for every model): negative is a tax. *synthetic*: topic → on-topic "
      "detail word, the knowledge the gold labeler's helpfulness pays for. *recall*: "
      "closed-book recall of the facts the LM corpus taught (20 people's pets' names, "
      "home towns, colours and numbers; every fact asked equally often), a skill that the "
      "gold labeler neither rewards nor punishes and that no RL prompt or comparison holds, "
      "so RLHF is not paid to keep it. Chance is 0.25 on "
      "both; the items share no prompt with any training set of the run (Evaluation "
      "sets).", "",
      capabilities.tax_table(caps, "lm"), ""]


__all__ = ["write_report", "hh_table", "pm_table", "pm_table_md", "stop_rates", "pms",
           "trained_against", "plot_curves", "policies", "consecutive_policies", "online_rows"]
