"""PM finetuning: `--config=configs/pm.py:size=tiny[,data=synthetic|hh_rlhf][,runlocal=True]`.

Starts from an LM or PMP workdir (`--config.init.workdir=DIR`, the paper's two arms), one
epoch by default, on hh-rlhf files (`data=hh_rlhf --config.data.train_files=PATH[,PATH]`)
or on the synthetic comparisons. Every field can be overridden with `--config.a.b=value`.
"""
import ml_collections

from configs import common, models


def pm_fields(c, small: bool):
  """Objective, optimizer and train-loop fields shared by the PMP and PM configs."""
  c.init = ml_collections.ConfigDict({"workdir": ""})  # the LM / PMP run to start from
  c.pm = ml_collections.ConfigDict()
  c.pm.lm_loss_weight = 0.0  # > 0: add the LM loss on the chosen transcript
  c.pm.center_weight = 0.0  # > 0: add weight · (r_chosen + r_rejected)²

  # learning_rate is used when lr_fraction is 0; lr_fraction > 0 takes that fraction of
  # the source run's learning rate.
  c.optim = common.adamw(1e-3 if small else 1e-4, 10 if small else 100, lr_fraction=0.0)
  # total_steps > 0 overrides num_epochs; eval_batches 0 means every held-out batch.
  c.train = common.train_loop(0, 10 if small else 50, 100 if small else 500,
                              200 if small else 1000, num_epochs=1, eval_batches=0)


def get_config(arg=None):
  a = common.parse_arg(arg, size="tiny", data="synthetic", runlocal=False)
  c = common.header("pm", size=a["size"])
  small = a["size"] in models.SMALL
  pm_fields(c, small)

  c.data = ml_collections.ConfigDict()
  # synthetic | hh_rlhf, or several comma-separated ("synthetic,hh_rlhf": synthetic pairs
  # plus every pair of train_files, as the online loop's "old + new comparisons").
  c.data.source = a["data"]
  c.data.train_files = ""  # hh_rlhf: comma-separated jsonl(.gz)
  c.data.eval_files = ""  # hh_rlhf: held-out files for the in-training eval
  c.data.eval_fraction = 0.05  # hh_rlhf without eval_files: share of train_files held out
  c.data.max_bad_share = 0.01  # hh_rlhf: more malformed lines than this stops the run
  c.data.num_train = 8000 if a["data"] == "synthetic" else 0  # hh_rlhf: 0 = all
  # none | first | second: train on the comparisons whose context falls in that half (by a
  # digest of the normalised context, `pm.in_half`): two PMs on `first` and `second` share
  # no comparison, the paper's train PM / test PM. Synthetic: num_train pairs of the half.
  c.data.half = "none"
  c.data.num_eval = 1000  # synthetic held-out pairs (noise-free labels, another seed)
  c.data.mixture = "mixed"  # synthetic: helpful | harmless | mixed
  c.data.temperature = 0.0  # synthetic labeler's Bradley-Terry temperature (0: noise-free)
  c.data.seq_len = min(128 if small else 1024, c.model.max_len)
  c.data.batch_size = 32 if small else 64
  c.data.pad_side = "right"
  c.data.tokenizer_path = ""  # default: <init.workdir>/tokenizer.model

  if a["runlocal"]:
    c.data.num_train = 64
    c.data.num_eval = 16
    c.data.seq_len = min(32, c.model.max_len)
    c.data.batch_size = 8
    c.optim.warmup_steps = 1
    c.train.log_every = 2
    c.train.eval_every = 4
    c.train.ckpt_every = 4
  return c
