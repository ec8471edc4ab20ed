"""Preference-model pretraining: `--config=configs/pmp.py:size=tiny[,runlocal=True]`.

Starts from an LM workdir (`--config.init.workdir=DIR`) and trains the PM objective on
binarized pairs from StackExchange / Reddit / Wikipedia dumps (`--config.data.stackexchange=
Posts.xml`, `data.reddit_comments`, `data.wikipedia`), mixed by `data.weights`; with no
dump given it writes and uses a synthetic `Posts.xml`. The learning rate is
`optim.lr_fraction` of the LM's, as in the paper.
"""
import ml_collections

from configs import common, models
from configs import pm as pm_config


def get_config(arg=None):
  a = common.parse_arg(arg, size="tiny", runlocal=False)
  c = common.header("pmp", size=a["size"])
  small = a["size"] in models.SMALL
  pm_config.pm_fields(c, small)
  c.optim.lr_fraction = 0.1

  c.data = ml_collections.ConfigDict()
  c.data.source = "pmp"
  c.data.stackexchange = ""  # Posts.xml of a StackExchange dump
  c.data.reddit_comments = ""  # pushshift RC_*.jsonl[.gz]
  c.data.reddit_submissions = ""  # pushshift RS_*.jsonl[.gz] (titles of top-level parents)
  c.data.wikipedia = ""  # revert edits, JSON lines (see docs/data.md)
  c.data.synthetic_questions = 3000 if small else 0  # > 0 and no dump: synthetic Posts.xml
  c.data.weights = ml_collections.ConfigDict(
      {"stackexchange": 1.0, "reddit": 1.0, "wikipedia": 1.0})
  c.data.num_pairs = 8000 if small else 1_000_000  # before binarization (which doubles it)
  c.data.binarize = True
  c.data.eval_fraction = 0.05  # held out by whole contexts, before any source is cycled
  c.data.max_bad_share = 0.01  # more malformed records in a dump than this stops the run
  c.data.seq_len = min(128 if small else 1024, c.model.max_len)
  c.data.batch_size = 32 if small else 64
  c.data.pad_side = "right"
  c.data.tokenizer_path = ""

  if a["runlocal"]:
    c.data.synthetic_questions = 30
    c.data.num_pairs = 48
    c.data.eval_fraction = 0.25
    c.data.seq_len = min(32, c.model.max_len)
    c.data.batch_size = 8
    c.optim.warmup_steps = 1
    c.train.log_every = 2
    c.train.eval_every = 4
    c.train.ckpt_every = 4
  return c
