"""PPO against a PM: `--config=configs/ppo.py:init=POLICY_RUN,pm=PM_RUN[,size=tiny,runlocal=True]`.

The policy (and the frozen reference) is the run in `init` (an LM, distill or PPO run); its
model config is read from there, so `size` only picks the run's scale. The PM in `pm` gives
the reward (normalized by its reward_stats.json) and, by default, the value model's init.
"""
import ml_collections

from configs import common, models


def get_config(arg=None):
  a = common.parse_arg(arg, size="tiny", init="", pm="", runlocal=False)
  small = a["size"] in models.SMALL
  c = ml_collections.ConfigDict()
  c.stage = "ppo"
  c.seed = 0
  c.model = models.get(a["size"])  # replaced by the init run's model when the stage starts
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.distributed = common.distributed()

  c.init = ml_collections.ConfigDict({"workdir": a["init"]})
  # test_workdir: a second PM (trained on the other half of the comparisons) that only
  # scores the rollouts, for the train-PM / test-PM robustness plot.
  c.pm = ml_collections.ConfigDict({"workdir": a["pm"], "test_workdir": ""})

  c.prompts = ml_collections.ConfigDict()
  c.prompts.source = "synthetic"  # or "hh_rlhf": contexts of prompts.files
  c.prompts.files = ""
  c.prompts.num = 4096 if small else 100_000  # prompt pool; 0 = every context in the files
  c.prompts.seed = 11  # a pool the LM and PM corpora did not draw
  c.prompts.mixture = "mixed"
  # No prompt length here: the budget is the PM's data.seq_len minus sampling.max_new_tokens
  # (a longer context loses whole turns from the front, keeping its last Human turn).
  # > 0: that many extra prompts written by the initial LM from few-shot prefixes of
  # fewshot_k pool requests (the paper's way of growing the prompt set).
  c.prompts.fewshot_extra = 0
  c.prompts.fewshot_k = 3
  c.prompts.fewshot_tokens = 32

  c.sampling = ml_collections.ConfigDict()
  c.sampling.max_new_tokens = 48 if small else 256  # T = 1, no top-k/top-p: PPO's ratio needs it

  c.ppo = ml_collections.ConfigDict()
  c.ppo.batch_size = 32 if small else 512  # responses per iteration
  c.ppo.epochs = 2 if small else 4
  c.ppo.num_minibatches = 2 if small else 8
  c.ppo.gamma = 1.0
  c.ppo.lam = 0.95
  c.ppo.clip = 0.2
  c.ppo.value_clip = 0.2
  c.ppo.vf_coef = 0.1
  c.ppo.entropy_coef = 0.0
  c.ppo.kl_coef = 0.001  # λ_KL of the paper (fixed unless kl_target > 0)
  c.ppo.kl_target = 0.0  # > 0: Ziegler et al.'s adaptive controller toward this KL per response
  c.ppo.kl_horizon = 10_000
  c.ppo.value = "pm"  # "pm": a value model initialized from the PM; "shared": a head on the policy
  c.ppo.no_stop_penalty = -3.0  # the score of a response that never produced a stop token

  c.optim = common.adamw(2e-5 if small else 1e-6, 5 if small else 20, weight_decay=0.0)
  c.value_optim = common.adamw(1e-4 if small else 5e-6, 5 if small else 20, weight_decay=0.0)
  c.train = common.train_loop(150 if small else 2000, 1, 0, 25 if small else 100,
                              sample_every=25 if small else 100, num_samples_shown=8)

  c.eval = ml_collections.ConfigDict()
  c.eval.num_prompts = 256
  c.eval.seed = 12345  # never a training seed
  c.eval.files = ""  # hh_rlhf: evaluation prompts from these files ("": prompts.files)
  c.eval.bon_n = 16  # best-of-n from the initial policy, n = 1, 2, 4, ..., bon_n
  c.eval.bon_prompts = 64
  c.eval.part_threshold = 0.25  # train-PM lead over the test-PM that counts as parted

  if a["runlocal"]:
    c.prompts.num = 64
    c.sampling.max_new_tokens = 8
    c.ppo.batch_size = 16  # two minibatches of 8: one row per device on 8 test devices
    c.ppo.epochs = 1
    c.ppo.num_minibatches = 2
    c.optim.warmup_steps = 1
    c.value_optim.warmup_steps = 1
    c.train.total_steps = 4
    c.train.ckpt_every = 2
    c.train.sample_every = 2
    c.eval.num_prompts = 16
    c.eval.bon_n = 4
    c.eval.bon_prompts = 4
  return c
