"""PM accuracy over ladder rungs × data sizes × seeds, one process (or pod job) per point.

  python -m launch.sweep --sweep=configs/sweeps/pm_ladder.py[:runlocal=True] --workdir=DIR
  python -m launch.sweep --sweep=configs/sweeps/pm_ladder.py:sizes=13m/42m,num_train=1000/4000 \\
      --workdir=DIR --sweep.lm_steps=2000

Every point is its own chain of ordinary `hh_jax.main` runs (LM → PM → pm_eval) in its own
sub-workdir, so points run as separate processes or pod jobs, any one reruns alone
(`--only=NAME`), and a rerun skips the finished ones. `:sizes=`, `:num_train=` and `:seeds=`
('/'-separated) replace the default grid; the fields below are stage settings, overridable
with `--sweep.KEY=VALUE`. launch/sweeps/plan.py turns points into runs;
launch/sweeps/report.py aggregates.
"""
import itertools

import ml_collections

from configs import common


def grid(sizes, num_train, seeds=(0,)):
  """Every (size rung, train comparisons, seed) combination, in that nesting order."""
  return tuple((str(s), int(n), int(seed))
               for s, n, seed in itertools.product(sizes, num_train, seeds))


def _split(text):
  return [x for x in str(text).split("/") if x]


def get_config(arg=None):
  a = common.parse_arg(arg, sizes="", num_train="", seeds="0", runlocal=False)
  c = ml_collections.ConfigDict()
  c.name = "pm_ladder"
  # (size rung, synthetic train comparisons, seed). The seed is the PM's (train pairs, data
  # order, head init); each rung's LM is trained once, with lm_seed, and shared.
  sizes, datas = ("nano", "test", "micro", "tiny"), (250, 1000, 4000)
  if a["runlocal"]:
    sizes, datas = ("nano", "test", "micro"), (32,)
  c.points = grid(_split(a["sizes"]) or sizes, _split(a["num_train"]) or datas,
                  _split(a["seeds"]))
  if a["runlocal"] and not (a["sizes"] or a["num_train"]):
    # Three rungs at one data size give the parameter axis; half the data on the largest
    # rung gives the data axis: 3 LMs and 4 PMs, ~3 minutes on 2 busy CPU cores, most of
    # it compiling (~1.5 minutes with a warm jax compilation cache).
    c.points += grid(("micro",), (16,), _split(a["seeds"]))
  c.lm_seed = 0
  c.lm_steps = 300  # LM pretraining steps per rung
  c.lm_workdirs = ""  # reuse trained LMs instead: "tiny=/tmp/lm_tiny,13m=gs://b/lm13m"
  c.num_eval = 500  # the PM's own held-out pairs (final_eval.json, reward stats)
  c.eval_pairs = 500  # pm_eval's noise-free pairs, its fixed seed: the same for every point
  c.seq_len = 128
  c.batch_size = 32
  c.mixture = "mixed"  # synthetic: helpful | harmless | mixed
  c.runlocal = a["runlocal"]  # the stage configs' runlocal variants (seconds per run)
  if a["runlocal"]:
    c.lm_steps = 6
    c.num_eval = 16
    c.eval_pairs = 32
    c.seq_len = 32
    c.batch_size = 8
  return c
