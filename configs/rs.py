"""Rejection sampling (best-of-k): `--config=configs/rs.py:policy=DIR,pm=DIR[,k=16,runlocal=True]`.

Without `pm` the synthetic gold labeler picks the best (scorer=gold), which is only a
ceiling to compare a PM's picks against; with it the PM picks and gold only judges.
"""
import ml_collections

from configs import common, models


def get_config(arg=None):
  a = common.parse_arg(arg, policy="", pm="", k=16, size="tiny", runlocal=False)
  small = a["size"] in models.SMALL
  c = common.header("rs")

  common.upstream(c, init=a["policy"], pm=a["pm"])  # policy: an LM, distill or PPO run
  c.rs = ml_collections.ConfigDict()
  c.rs.scorer = "pm" if a["pm"] else "gold"
  c.rs.k = a["k"]
  c.rs.batch_size = 64 if small else 256  # sampler rows per call

  c.sampling = ml_collections.ConfigDict()
  c.sampling.max_new_tokens = 64 if small else 256
  c.sampling.temperature = 1.0
  c.sampling.top_k = 0
  c.sampling.top_p = 1.0

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # or "hh_rlhf": contexts of data.hh_file's comparisons
  c.data.hh_file = ""
  c.data.num_prompts = 128 if small else 4096
  c.data.seed = 7  # prompts the PM's comparisons did not use
  c.data.mixture = "mixed"

  if a["runlocal"]:
    c.rs.k = min(a["k"], 4)
    c.rs.batch_size = 8
    c.sampling.max_new_tokens = 8
    c.data.num_prompts = 4
  return c
