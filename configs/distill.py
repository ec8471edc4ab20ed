"""Context distillation: `--config=configs/distill.py:init=LM_WORKDIR[,size=tiny,runlocal=True]`.

The student (and teacher) is the LM in `init`; its model config is read from there, so
`size` only picks the run's scale (steps, batch, sequence length, which HHH prompt).
"""
import ml_collections

from configs import common, models


def get_config(arg=None):
  a = common.parse_arg(arg, size="tiny", init="", runlocal=False)
  small = a["size"] in models.SMALL
  c = common.header("distill", size=a["size"])  # model: replaced by the init run's when the stage starts

  common.upstream(c, init=a["init"])  # the LM: student and teacher
  c.distill = ml_collections.ConfigDict()
  c.distill.prompt = "short" if small else "full"  # see hh_jax/data/hhh_prompt.py
  c.distill.top_k = 50  # teacher log-probs kept per token, as in the paper

  c.data = ml_collections.ConfigDict()
  c.data.corpus = "synthetic"  # or "text_files" (.txt / .jsonl[.gz] with "text" or "chosen")
  c.data.text_files = ""
  c.data.seed = 1000  # dialogues the LM's corpus (seed 0) did not draw
  c.data.num_dialogues = 4000 if small else 100_000
  c.data.num_eval = 128 if small else 2048
  # Prompt + dialogue must stay inside the positions the LM was trained on (128 for tiny).
  c.data.seq_len = 56 if small else 512
  c.data.batch_size = 16 if small else 64

  # No weight decay: stay near the LM, decay would pull away from both models.
  c.optim = common.adamw(3e-4 if small else 1e-5, 10 if small else 200, weight_decay=0.0)
  c.train = common.train_loop(200 if small else 5000, 10 if small else 50,
                              100 if small else 1000, 100 if small else 1000)

  if a["runlocal"]:
    c.data.num_dialogues = 64
    c.data.num_eval = 16
    c.data.seq_len = 32
    c.data.batch_size = 8
    c.distill.top_k = 8
    c.optim.warmup_steps = 1
    c.train.total_steps = 4
    c.train.log_every = 2
    c.train.eval_every = 4
    c.train.ckpt_every = 2
  return c
