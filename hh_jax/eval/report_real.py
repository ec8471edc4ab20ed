"""The parts of `report.md` that differ on real data (`:hh`): prompts, judge and tables.

On hh-rlhf there is no gold score of a reply, so the report judges with the test PM (the
pipeline's `pm_test`: the PM of the half of the comparisons the train PM never saw, which
no policy was optimised against), as the paper's robustness experiments do. The prompts are
hh-rlhf conversations: the Elo's from the held-out file (`pm.data.eval_files`), the
helpful/harmless table's from the subsets' own files (`report.helpful_files`,
`report.harmless_files`); the alignment tax reads the capability files the user gives
(`report.capability_tasks`) with the real-format readers. Whatever the user did not give is
left out with a sentence saying why (`report.py` prints it).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hh_jax import files
from hh_jax.data import fresh
from hh_jax.eval import capabilities
from hh_jax.eval import elo as elo_lib
from hh_jax.eval import provenance

# The paper (Bai et al. 2022, §4.1 and §4.3): a PM judge is itself a model of the labels it
# was trained on, and its scores stop tracking people's preferences as policies move far
# from the data it saw, so PM-judged Elo is a proxy that flatters the policies.
JUDGE_CAVEAT = (
    "Caveat (as the paper's): a PM is a proxy for the people whose comparisons trained it. "
    "The test PM never saw a comparison of the train PM's half and no policy was optimised "
    "against it, but it learned from the same distribution of conversations, and its "
    "preferences stop tracking people's as policies drift from the data it saw (the "
    "paper's train-PM / test-PM parting); read this Elo as the test PM's opinion, not as "
    "human judgments.")


def file_list(spec) -> list[str]:
  return [p for p in str(spec or "").split(",") if p]


def draw_prompts(workdir: str, paths: Sequence[str], n: int, seed: int, fit, trained: set[str],
                 name: str) -> list[str]:
  """`n` contexts of the hh-rlhf files `paths` in a seeded order, kept whole within the
  prompt budget (`fit`; one whose last Human turn is over it is passed over), none a
  training context of the run; recorded as set `name`."""
  from hh_jax.data import hh_rlhf  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  seen, pool = set(), []
  for path in paths:
    for p in hh_rlhf.read_file(path)[0]:
      if p.context not in seen:
        seen.add(p.context)
        pool.append(p.context)
  order = np.random.default_rng(seed).permutation(len(pool))
  shortened, too_long = fit.shortened, fit.too_long
  texts, _, excluded = prompts_lib.draw_fitted((pool[i] for i in order), n, fit, trained)
  fresh.record(workdir, fresh.EVAL, name, texts, excluded=excluded,
               shortened=fit.shortened - shortened, too_long=fit.too_long - too_long)
  return texts


def judge(workdir: str) -> elo_lib.ScoreJudge:
  """The test PM of the run as the judge (`provenance.JUDGE_PM`)."""
  path = files.join(workdir, provenance.JUDGE_PM)
  return elo_lib.PMJudge(path, name=provenance.JUDGE_PM)


def subset_table(judge_: elo_lib.ScoreJudge, subsets: dict[str, list[str]],
                 responses: dict[str, dict[str, list[str]]]) -> list[dict]:
  """Each model's mean judge score (± its standard error over prompts) on each subset's
  prompts: {subset: contexts}, responses {subset: {model: replies}}."""
  rows = []
  models = list(next(iter(responses.values()))) if responses else []
  for m in models:
    row = {"name": m}
    for subset, contexts in subsets.items():
      s = judge_.scores(contexts, responses[subset][m])  # [n]
      se = float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else math.nan
      row[subset] = f"{float(s.mean()):.3f} ± {se:.3f}"
    rows.append(row)
  return rows


def capability_tasks(spec) -> dict[str, str]:
  """`report.capability_tasks` ("mmlu:PATH,arc_easy:PATH") as {name: path}: the real-format
  readers' files only (the synthetic probes are for the synthetic world)."""
  out = {}
  for item in file_list(spec):
    name, sep, path = item.partition(":")
    if not sep or not name or not path:
      from hh_jax.errors import UserError  # pylint: disable=g-import-not-at-top
      raise UserError(f"report.capability_tasks item {item!r}: give NAME:PATH "
                      "(e.g. mmlu:/data/mmlu_test.jsonl), comma-separated")
    capabilities.task_format(name, path)  # an unknown format is one line now, not later
    out[name] = path
  return out


def pm_vs_bow_md(final_eval: dict) -> list[str]:
  """The PM's held-out accuracy beside the bag-of-words baseline on the same pairs."""
  b = final_eval.get("bow")
  if not b:
    return ["The PM stage wrote no bag-of-words comparison (no held-out pairs).", ""]
  z = b["difference"] / b["difference_se"] if b["difference_se"] > 0 else math.nan
  return [
      f"On the same {b['pairs']} held-out pairs: PM accuracy {b['pm_accuracy']:.3f} ± "
      f"{b['pm_se']:.3f}, bag-of-words baseline (`eval/bow_baseline.py`, fitted on the "
      f"PM's {b['fit_pairs']} training pairs) {b['bow_accuracy']:.3f} ± {b['bow_se']:.3f}; "
      f"difference {b['difference']:+.3f} ± {b['difference_se']:.3f} (standard errors over "
      f"pairs, the difference's paired; {z:+.1f} SE).", ""]


__all__ = ["JUDGE_CAVEAT", "draw_prompts", "judge", "subset_table", "capability_tasks",
           "pm_vs_bow_md", "file_list"]
