"""Smoke run of the PM pipeline at the `test` rung: LM -> PMP -> PM -> pm_eval -> scorer."""
import json
import os

import numpy as np
import pytest

from configs import lm as lm_config, pm as pm_config, pm_eval as eval_config
from configs import pmp as pmp_config
from hh_jax import main
from hh_jax.errors import UserError
from hh_jax.rl import reward


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  root = tmp_path_factory.mktemp("pm_pipeline")
  dirs = {k: str(root / k) for k in ("lm", "pmp", "pm")}
  main.run(lm_config.get_config("size=test,runlocal=True"), dirs["lm"])
  c = pmp_config.get_config("size=test,runlocal=True")
  c.init.workdir = dirs["lm"]
  main.run(c, dirs["pmp"])
  c = pm_config.get_config("size=test,runlocal=True")
  c.init.workdir = dirs["pmp"]
  c.pm.lm_loss_weight = 0.1
  c.pm.center_weight = 0.01
  main.run(c, dirs["pm"])
  return root, dirs


def test_stages_write_checkpoints_and_stats(pipeline):
  _, dirs = pipeline
  for stage in ("pmp", "pm"):
    assert os.listdir(os.path.join(dirs[stage], "checkpoints"))
    assert os.path.exists(os.path.join(dirs[stage], "tokenizer.model"))
    with open(os.path.join(dirs[stage], "reward_stats.json")) as f:
      assert json.load(f)["std"] > 0
  with open(os.path.join(dirs["pm"], "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert {"loss", "accuracy", "margin", "reward_mean", "reward_std", "lm_loss"} <= set(rows[0])


def test_scorer_normalizes_and_keeps_order(pipeline):
  _, dirs = pipeline
  scorer = reward.PMScorer.from_workdir(dirs["pm"], batch_size=4)
  ctx = ["\n\nHuman: How do I clean my bathroom?\n\nAssistant:"] * 3 + \
        ["\n\nHuman: hi\n\nAssistant: hello\n\nHuman: How do I pick a lock?\n\nAssistant:"] * 2
  resp = [" Use bleach and gloves.", " No.", " I can not help with that at all, sorry.",
          " Call a licensed locksmith.", " Use a tension wrench and pick the pins."]
  raw = scorer.score_raw(ctx, resp)
  assert raw.dtype == np.float32 and raw.shape == (5,)
  np.testing.assert_allclose(scorer.score(ctx, resp),
                             (raw - scorer.stats["mean"]) / scorer.stats["std"], rtol=1e-5)
  # Batching and length buckets do not change a score.
  np.testing.assert_allclose(scorer.score_raw(ctx[::-1], resp[::-1])[::-1], raw, atol=1e-5)
  np.testing.assert_allclose(scorer.score_raw(ctx[1:2], resp[1:2]), raw[1:2], atol=1e-5)
  assert scorer.tokenizer.eoc_id > 0


def test_pm_eval_synthetic(pipeline):
  root, dirs = pipeline
  c = eval_config.get_config("data=synthetic,runlocal=True")
  c.pm.workdir = dirs["pm"]
  out = main.run(c, str(root / "eval_syn"))
  for k in ("accuracy", "ece", "by_turns", "gold_agreement", "spearman_gold"):
    assert k in out
  assert 0.0 <= out["ece"] <= 1.0
  assert os.path.exists(root / "eval_syn" / "reliability.png")
  with open(root / "eval_syn" / "eval.json") as f:
    assert json.load(f)["num_pairs"] == 64


def test_pm_eval_on_hh_rlhf_file(pipeline, hh_sample_dir):
  root, dirs = pipeline
  c = eval_config.get_config()
  c.pm.workdir = dirs["pm"]
  c.eval.files = str(hh_sample_dir / "harmless-base" / "test.jsonl.gz")
  c.eval.seq_len = 32
  out = main.run(c, str(root / "eval_hh"))
  assert out["num_pairs"] == 256
  assert sum(v["n"] for v in out["by_turns"].values()) == 256


def test_size_mismatch_through_the_stage(pipeline):
  root, dirs = pipeline
  c = pm_config.get_config("size=tiny,runlocal=True")  # tiny PM from a test-rung LM
  c.init.workdir = dirs["lm"]
  with pytest.raises(UserError) as err:
    main.run(c, str(root / "pm_bad"))
  assert "\n" not in str(err.value) and "checkpoints" in str(err.value)


def test_pm_needs_an_init_workdir(tmp_path):
  with pytest.raises(UserError, match="init.workdir"):
    main.run(pm_config.get_config("size=test,runlocal=True"), str(tmp_path / "pm"))
