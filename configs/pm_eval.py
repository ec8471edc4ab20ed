"""PM evaluation: `--config=configs/pm_eval.py --config.pm.workdir=PM_DIR
--config.eval.files=PATH[,PATH]` (hh-rlhf jsonl[.gz]), or `:data=synthetic` for fresh
synthetic comparisons scored also against the gold labeler. Writes eval.json and plots.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, data="files", runlocal=False)
  # seed 7: synthetic comparisons no train/held-out set uses; the scorer makes its own mesh.
  c = common.header("pm_eval", seed=7, mesh=False)
  common.upstream(c, pm="")  # the PM run to evaluate
  c.eval = ml_collections.ConfigDict()
  c.eval.files = ""
  c.eval.synthetic_pairs = 2000 if a["data"] == "synthetic" else 0
  c.eval.mixture = "mixed"
  c.eval.seq_len = 0  # 0: the PM's training seq_len
  c.eval.batch_size = 32
  c.eval.num_bins = 10
  if a["runlocal"]:
    c.eval.synthetic_pairs = 64 if a["data"] == "synthetic" else 0
    c.eval.batch_size = 8
  return c
