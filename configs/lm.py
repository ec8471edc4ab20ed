"""LM pretraining: `--config=configs/lm.py:size=tiny[,runlocal=True]`.

`runlocal` shrinks the run to seconds (what tests use); every field can be overridden with
`--config.a.b=value`.
"""
import ml_collections

from configs import common, models


def get_config(arg=None):
  a = common.parse_arg(arg, size="tiny", runlocal=False)
  c = ml_collections.ConfigDict()
  c.stage = "lm"
  c.seed = 0
  c.model = models.get(a["size"])
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.distributed = common.distributed()

  small = a["size"] in ("test", "tiny")
  c.data = ml_collections.ConfigDict()
  c.data.corpus = "synthetic"  # or "text_files"
  c.data.text_files = ""  # comma-separated .txt / .jsonl[.gz]
  c.data.num_dialogues = 4000 if small else 200_000
  c.data.seq_len = min(128 if small else 1024, c.model.max_len)
  c.data.batch_size = 16 if small else 256
  c.data.eval_fraction = 0.02
  c.data.tokenizer_vocab = c.model.vocab_size
  c.data.tokenizer_path = ""  # reuse an existing tokenizer.model instead of training one

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 3e-3 if small else 6e-4
  c.optim.warmup_steps = 20 if small else 2000
  c.optim.min_lr_ratio = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1
  c.optim.grad_clip_norm = 1.0
  c.optim.grad_accum_steps = 1

  c.train = ml_collections.ConfigDict()
  c.train.total_steps = 300 if small else 100_000
  c.train.log_every = 10 if small else 100
  c.train.eval_every = 100 if small else 2000
  c.train.eval_batches = 4
  c.train.ckpt_every = 100 if small else 2000
  c.train.keep_checkpoints = 2
  c.train.async_checkpointing = True
  c.train.stop_at_step = 0  # >0: stop (with a checkpoint) after this step, as a preemption would

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
