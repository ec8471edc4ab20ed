"""PM scaling at laptop scale: `--config=configs/sweeps/pm_scaling.py[:runlocal=True]`.

Trains one LM per ladder rung (or reuses `sweep.lm_workdirs`), then one PM per (rung,
number of synthetic train pairs), and plots held-out accuracy against both - the
paper's PM-scaling figure in miniature. Each run lives in `<workdir>/<name>` and is
skipped when finished, so a rerun resumes the sweep.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False)
  c = ml_collections.ConfigDict()
  c.stage = "pm_scaling"
  c.seed = 0
  c.sweep = ml_collections.ConfigDict()
  c.sweep.sizes = "test,tiny"  # ladder rungs, comma-separated (13m works, slowly)
  c.sweep.num_train = "250,1000,4000"  # synthetic train comparisons per PM
  c.sweep.lm_workdirs = ""  # reuse LMs: "tiny=/tmp/lm_tiny,test=/tmp/lm_test"
  c.sweep.lm_steps = 300  # LM pretraining steps per rung (when trained here)
  c.sweep.num_eval = 500  # held-out noise-free pairs per PM
  c.sweep.seq_len = 128
  c.sweep.batch_size = 32
  c.sweep.mixture = "mixed"
  c.sweep.runlocal = a["runlocal"]  # the stage configs' runlocal variants (seconds)
  if a["runlocal"]:
    c.sweep.sizes = "test"
    c.sweep.num_train = "32,64"
    c.sweep.lm_steps = 6
    c.sweep.num_eval = 16
    c.sweep.seq_len = 32
    c.sweep.batch_size = 8
  return c
