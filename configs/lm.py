"""LM pretraining: `--config=configs/lm.py:size=tiny[,runlocal=True]`.

`runlocal` shrinks the run to seconds (what tests use); every field can be overridden with
`--config.a.b=value`.
"""
import ml_collections

from configs import common, models


def get_config(arg=None):
  a = common.parse_arg(arg, size="tiny", runlocal=False)
  c = common.header("lm", size=a["size"])
  # Continue a run instead of starting fresh: an imported Hugging Face model
  # (`python -m hh_jax.interop.hf import`) or an earlier LM; its model and tokenizer are used.
  common.upstream(c)

  small = a["size"] in models.SMALL
  c.data = ml_collections.ConfigDict()
  c.data.corpus = "synthetic"  # or "text_files"
  c.data.text_files = ""  # comma-separated .txt / .jsonl[.gz]
  c.data.num_dialogues = 4000 if small else 200_000
  c.data.seq_len = min(128 if small else 1024, c.model.max_len)
  c.data.batch_size = 16 if small else 256
  c.data.eval_fraction = 0.02
  c.data.tokenizer_vocab = c.model.vocab_size
  c.data.tokenizer_path = ""  # reuse an existing tokenizer.model instead of training one

  c.optim = common.adamw(3e-3 if small else 6e-4, 20 if small else 2000)
  c.train = common.train_loop(300 if small else 100_000, 10 if small else 100,
                              100 if small else 2000, 100 if small else 2000, eval_batches=4)

  if a["runlocal"]:
    c.data.num_dialogues = 400
    c.data.seq_len = min(32, c.model.max_len)
    c.data.batch_size = 8
    c.data.tokenizer_vocab = min(c.model.vocab_size, 512)
    c.optim.warmup_steps = 2
    c.train.total_steps = 6
    c.train.log_every = 2
    c.train.eval_every = 6
    c.train.eval_batches = 1
    c.train.ckpt_every = 3
  return c
