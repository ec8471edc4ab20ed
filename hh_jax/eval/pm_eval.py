"""The pm_eval stage: score held-out comparisons with a trained PM and write eval.json.

Reads any hh-rlhf-format file(s) (`--config.eval.files=PATH[,PATH]`) or fresh synthetic
comparisons, scores both replies with `PMScorer` (the same jitted scorer RL uses), and
writes to the workdir: `eval.json` (accuracy, ECE and its bins, accuracy by turns, score
distribution; on synthetic data also agreement with the noise-free gold labeler and the
Spearman correlation of PM and gold scores), `reliability.png`, `scores.png` and, on
synthetic data, `gold_scatter.png`.
"""
from __future__ import annotations

import numpy as np

from hh_jax import files
from hh_jax.errors import UserError
from hh_jax.eval import plots, preference
from hh_jax.data import labelers
from hh_jax.rl import reward
from hh_jax.train import runner


def load_pairs(ev, seed: int):
  files = [p for p in str(ev.files or "").split(",") if p]
  if files:
    from hh_jax.data import hh_rlhf  # pylint: disable=g-import-not-at-top
    out = []
    for path in files:
      got, report = hh_rlhf.read_file(path)
      print(f"pm_eval: {report.summary()}", flush=True)
      out.extend(got)
    return out, "files"
  if ev.synthetic_pairs:
    from hh_jax.data import synthetic_pairs  # pylint: disable=g-import-not-at-top
    return synthetic_pairs.comparisons(ev.synthetic_pairs, seed, ev.mixture, 0.0), "synthetic"
  raise UserError("nothing to evaluate: pass --config.eval.files=PATH[,PATH] (hh-rlhf "
                  "jsonl[.gz]) or --config.eval.synthetic_pairs=N")


def gold_metrics(pairs, chosen, rejected) -> dict:
  """Agreement with the noise-free gold labeler and Spearman(PM score, gold score)."""
  gold_c = np.array([labelers.gold_score(p.context, p.chosen) for p in pairs])
  gold_r = np.array([labelers.gold_score(p.context, p.rejected) for p in pairs])
  agree = np.sign(chosen - rejected) == np.sign(gold_c - gold_r)
  pm_all, gold_all = np.concatenate([chosen, rejected]), np.concatenate([gold_c, gold_r])
  return {"gold_agreement": float(np.mean(agree)),
          "spearman_gold": preference.spearman(pm_all, gold_all)}, pm_all, gold_all


def run(config, workdir: str):
  stage = runner.open_stage(config, workdir, mesh_fn=None)  # the scorer makes its own mesh
  workdir = stage.workdir
  ev = config.eval
  if not config.pm.workdir:
    raise UserError("pass --config.pm.workdir=DIR, the PM run to evaluate")
  stage.write_config()
  pairs, kind = load_pairs(ev, config.seed)
  if not pairs:
    raise UserError("no comparisons to evaluate in the given files")
  scorer = reward.PMScorer.from_workdir(config.pm.workdir, batch_size=ev.batch_size,
                                        seq_len=ev.seq_len or None)
  contexts = [p.context for p in pairs]
  chosen = scorer.score_raw(contexts, [p.chosen for p in pairs]).astype(np.float64)
  rejected = scorer.score_raw(contexts, [p.rejected for p in pairs]).astype(np.float64)
  out = preference.summary(chosen, rejected, [p.turns for p in pairs], ev.num_bins)
  out.update(pm_workdir=files.abspath(config.pm.workdir), data=kind,
             files=[p for p in str(ev.files or "").split(",") if p])
  plots.reliability_diagram(out["calibration"], out["ece"], files.join(workdir,
                                                                         "reliability.png"))
  plots.score_histogram(chosen, rejected, files.join(workdir, "scores.png"))
  if kind == "synthetic":
    g, pm_all, gold_all = gold_metrics(pairs, chosen, rejected)
    out.update(g)
    plots.gold_scatter(pm_all, gold_all, g["spearman_gold"],
                       files.join(workdir, "gold_scatter.png"))
  stage.save_json("eval.json", out)
  turns = ", ".join(f"{t}: {v['accuracy']:.3f} (n={v['n']})" for t, v in out["by_turns"].items())
  extra = (f", gold agreement {out['gold_agreement']:.4f}, Spearman {out['spearman_gold']:.4f}"
           if kind == "synthetic" else "")
  print(f"pm_eval: {out['num_pairs']} pairs, accuracy {out['accuracy']:.4f}, "
        f"ECE {out['ece']:.4f}{extra}; by turns {{{turns}}}", flush=True)
  stage.close()
  return out
