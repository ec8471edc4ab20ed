"""Iterated online RLHF: `--config=configs/online.py:init=POLICY,pm=PM,lm=LM[,size=tiny,runlocal=True]`.

`init` is the initial policy (PPO of every iteration starts from it), `pm` the PM before the
loop (it picks the first iteration's rejection samples), `lm` the LM (or PMP) run each new PM
starts from; `--config.online.deploy=RUN[,RUN]` adds policies deployed before the loop (the
first iteration collects on the last; the pipeline passes its PPO run). `pm_stage` and
`ppo_stage` are the PM and PPO stage configs each iteration runs
(their sources are filled in by the loop); override any of their fields as usual, e.g.
`--config.ppo_stage.train.total_steps=60`.
"""
import ml_collections

from configs import common, models
from configs import pm as pm_config
from configs import ppo as ppo_config


def get_config(arg=None):
  a = common.parse_arg(arg, size="tiny", init="", pm="", lm="", iterations=2, runlocal=False)
  small = a["size"] in models.SMALL
  c = common.header("online", mesh=False)
  common.upstream(c, init=a["init"], pm=a["pm"])
  sub = f"size={a['size']},runlocal={a['runlocal']}"
  c.pm_stage = pm_config.get_config(sub)
  c.ppo_stage = ppo_config.get_config(sub)

  c.online = ml_collections.ConfigDict()
  c.online.iterations = a["iterations"]
  c.online.pm_init_workdir = a["lm"]
  # True: each iteration's PM continues from the one before (the first from `pm`) on old + new
  # comparisons; False: from pm_init_workdir every time.
  c.online.pm_warm_start = True
  # Policies deployed before the first iteration besides `init`: comma-separated workdirs,
  # each named by its directory. The first iteration collects its comparisons on the last one,
  # as the paper's first online round deployed its best RLHF policy (the pipeline passes its
  # PPO run); empty: on `init`.
  c.online.deploy = ""
  c.online.prompts_per_iteration = 512 if small else 20_000
  c.online.seed = 500  # fresh prompts per iteration: seed + 1000 * iteration
  c.online.rs_share = 0.5  # response B: best-of-k by the current PM this often, else an earlier policy
  c.online.rs_k = 4
  # Whose samples the best-of-k picks from: "initial" (the paper's RS models sampled the
  # context-distilled LM; its samples still carry the details PPO policies learn to drop, so
  # the labels keep teaching the PM which details help) or "latest".
  c.online.rs_policy = "initial"
  c.online.label_temperature = 0.5  # the simulated labeler's Bradley-Terry noise
  c.online.human_files = ""  # one hh-rlhf jsonl of human judgments per iteration, instead
  # A PM run that labels the comparisons (its order; its ties dropped) and judges the loop's
  # Elo instead of the synthetic gold labeler: on real data the paper's test PM, a PM of
  # comparisons no policy was trained against (in the pipeline "pm_test" names its own).
  c.online.judge = ""
  c.online.test_fraction = 0.2  # of each iteration's comparisons: its test split
  c.online.elo_prompts = 128
  c.online.elo_seed = 4242

  if a["runlocal"]:
    c.online.prompts_per_iteration = 16
    c.online.rs_k = 2
    c.online.elo_prompts = 8
  return c
