"""The whole recipe: `--config=configs/pipeline.py:tiny` (the synthetic task on a laptop) or
`:hh` (hh-rlhf files: `--config.pm.data.train_files=PATH[,PATH]
--config.pm.data.eval_files=PATH`), `,runlocal=True` for tests. `:hh` trains on nothing
synthetic: the LM and distillation read the train files' transcripts, RS and PPO their
contexts, no PMP without a dump; online iterations (`iterations=N`) need people's judgments
(`--config.online.online.human_files`) or the test PM as their labeler
(`--config.online.online.judge=pm_test` with `--config.online.ppo_stage.prompts.files`) and
stop in one line otherwise; its report is judged by
the test PM and names anything synthetic (`hh_jax/eval/provenance.py`, `docs/pipeline.md`).

LM → PMP → PM → rejection sampling → context distillation → PPO → online iterations → report,
each stage in WORKDIR/<name>, checkpoint to checkpoint. Every stage's config is nested here
under its name (`--config.ppo.train.total_steps=60`); the pipeline fills in the sources
(`init.workdir`, `pm.workdir`). The paper's sizes, for `:hh` at scale: LM and PM 52B, PMP
on ~9M pairs, PM on the full hh-rlhf (~160k comparisons), PPO with 2k-4k prompts per
iteration and λ_KL = 0.001, online iterations weekly with ~20k fresh comparisons each.
"""
import ml_collections

from configs import common
from configs import distill as distill_config
from configs import lm as lm_config
from configs import online as online_config
from configs import pm as pm_config
from configs import pmp as pmp_config
from configs import ppo as ppo_config
from configs import rs as rs_config

PRESETS = ("tiny", "hh")


def get_config(arg=None):
  preset = str(arg or "tiny").split(",")[0]
  if preset not in PRESETS:
    raise ValueError(f"unknown pipeline preset {preset!r}; use one of {', '.join(PRESETS)}")
  # iterations -1: the preset's default (tiny 2; hh 0, as its online loop needs people's
  # judgments in online.human_files)
  a = common.parse_arg(",".join(str(arg or "tiny").split(",")[1:]), size="tiny",
                       iterations=-1, runlocal=False)
  if a["iterations"] < 0:
    a["iterations"] = 0 if preset == "hh" else 2
  sub = f"size={a['size']},runlocal={a['runlocal']}"
  c = common.header("pipeline", mesh=False)
  c.preset = preset
  c.lm = lm_config.get_config(sub)
  c.pmp = pmp_config.get_config(sub)
  c.pm = pm_config.get_config(sub + (",data=hh_rlhf" if preset == "hh" else ""))
  # The train PM on the first half of the comparisons; the pipeline's pm_test stage trains
  # the test PM on the second with this same config (`hh_jax.pipeline.stage_config`).
  c.pm.data.half = "first"
  c.rs = rs_config.get_config(sub)
  c.distill = distill_config.get_config(sub)
  c.ppo = ppo_config.get_config(sub)
  c.online = online_config.get_config(sub + f",iterations={a['iterations']}")
  # elo_prompts: one response per model each; at 1,024 a 0.05 gold difference between two
  # online policies is ~2 standard errors (at 256 it was one).
  # recall_items: the fact-recall probe (a skill the reward does not pay for); at 500 items an
  # accuracy near 0.5 has a standard error of 0.022.
  c.report = ml_collections.ConfigDict({"elo_prompts": 1024, "elo_seed": 777,
                                        "capability_items": 200, "recall_items": 500})
  # XLA's persistent compilation cache: "auto" = WORKDIR/jax_cache (local workdirs), a path,
  # or "" for none. The online PM and PPO stages reuse the train steps the pm and ppo stages
  # compiled, and a rerun after a kill what the killed run compiled.
  c.compile_cache = "auto"

  if preset == "tiny" and not a["runlocal"]:
    # Sized so the whole recipe fits a few minutes per stage on a 2-core laptop.
    # 500 LM steps: the recall probe's closed-book facts (synthetic.FACTS) reach 0.61 (0.43
    # at 300 steps, chance 0.25), so the alignment tax on them has room both ways.
    c.lm.train.total_steps = 500
    c.pmp.data.num_pairs = 2000
    c.pmp.train.total_steps = 40
    c.pm.data.num_train = 4000
    c.pm.train.total_steps = 125
    # Held-out accuracy every 25 steps (800 comparisons): report.md's PM learning curve.
    c.pm.train.eval_every = 25
    # The PPO stage's own evaluation (ppo_eval.json), sized for the effect it must resolve:
    # the stage gains ~0.2 gold with a per-prompt paired sd of ~1.3, so 3 SEM needs ~360
    # prompts (at 256 it measured 2.7 SEM; at 512 3.5).
    c.ppo.eval.num_prompts = 512
    c.rs.data.num_prompts = 32
    c.rs.rs.k = 8
    c.distill.train.total_steps = 100
    # PPO, here and in every online iteration: 60 iterations at 2.5x the stage's default
    # learning rate (at 2e-5 the policy moved ~3e-7 nats per update and 60-80 iterations
    # gained ~0.12 gold whatever the PM; at 5e-5 they gain 0.15-0.26, KL ~2).
    for ppo in (c.ppo, c.online.ppo_stage):
      ppo.train.total_steps = 60
      ppo.optim.learning_rate = 5e-5
    # The online iterations' PPO at twice that: from the 500-step LM's better initial policy,
    # 5e-5 moved them ~2.5 nats and the three RLHF policies ended within the noise of each
    # other (online_2 below online_1); at 1e-4 (KL ~5-6.6) each beats the one before at
    # p < 0.05 (docs/pipeline.md, runs F and F2).
    c.online.ppo_stage.optim.learning_rate = 1e-4
    # Online PMs: two epochs over 1,000 replayed synthetic pairs + every online comparison,
    # labeled with less noise than the default (0.5 flips 27% of the pairs at |Δgold| = 0.5,
    # 0.25 flips 12%, 0.1 flips 0.7%; at |Δgold| = 0.25: 38%, 27%, 8%).
    c.online.pm_stage.data.num_train = 1000
    c.online.pm_stage.train.total_steps = 0
    c.online.pm_stage.train.num_epochs = 2
    c.online.online.label_temperature = 0.1
    c.online.ppo_stage.eval.num_prompts = 128
    c.online.ppo_stage.eval.bon_prompts = 16
    # ~half the drawn pairs are gold ties (dropped): 768 pairs leave ~400 labelled ones, ~80
    # of them the iteration's held-out split (at 512: ~250 and ~51, a Wilson interval of
    # ±0.13 around 0.65, too wide to tell 0.65 from chance's 0.5).
    c.online.online.prompts_per_iteration = 768
    # The loop's own Elo (online_record.json, beside the report's 1,024-prompt one in
    # elo_by_iteration.png): 256 prompts pay for the larger collection above.
    c.online.online.elo_prompts = 256
  if preset == "hh":
    # Nothing synthetic: the LM and context distillation read the transcripts of
    # pm.data.train_files, rejection sampling their contexts, PPO the contexts of
    # pm.data.eval_files (`hh_jax.pipeline.fill_real_data`); no PMP without a dump.
    c.lm.data.corpus = "text_files"
    c.distill.data.corpus = "text_files"
    c.pmp.data.synthetic_questions = 0
    c.ppo.prompts.source = "hh_rlhf"
    c.online.ppo_stage.prompts.source = "hh_rlhf"
    c.online.pm_stage.data.source = "hh_rlhf"
    c.rs.data.source = "hh_rlhf"
    # The report on real data (`hh_jax/eval/report.py`): Elo and the helpful/harmless table
    # judged by the test PM (the PM of the other half of the comparisons) on prompts of
    # pm.data.eval_files; helpful_files / harmless_files: hh-rlhf subsets (e.g.
    # helpful-base/test.jsonl.gz, harmless-base/test.jsonl.gz) whose own prompts make the
    # table; capability_tasks: "name=PATH,..." of the real-format readers (mmlu, lambada,
    # hellaswag, arc, openbookqa) for the alignment tax. Empty: left out, with why.
    c.report.helpful_files = ""
    c.report.harmless_files = ""
    c.report.capability_tasks = ""
    if a["runlocal"]:  # the short HHH prompt in a 512-piece tokenizer of real text: 137 tokens
      for stage in (c.lm, c.pmp, c.pm, c.rs, c.distill, c.ppo, c.online.pm_stage,
                    c.online.ppo_stage):
        if "model" in stage:  # the others take their model from the runs they start from
          stage.model.max_len = max(stage.model.max_len, 256)
  if a["runlocal"]:
    c.distill.data.seq_len = 8  # the HHH prompt (~118 tokens at vocab 512) + this fits max_len 128
    # PPO's prompt budget is the PM's seq_len minus the reply's 8 tokens: 88 holds the
    # longest synthetic request turn (~70 tokens at vocab 512) whole.
    for pm in (c.pm, c.online.pm_stage):
      pm.data.seq_len = 96
    for ppo in (c.ppo, c.online.ppo_stage):  # the main PPO stage and each online one
      ppo.train.total_steps = 2
      ppo.eval.num_prompts = 8
      ppo.eval.bon_n = 2
      ppo.eval.bon_prompts = 2
    c.report.elo_prompts = 8
    c.report.capability_items = 16
    c.report.recall_items = 32
  return c
