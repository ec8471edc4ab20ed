"""Stages on an imported Llama run (GQA, llama3 rope, its own byte-level BPE tokenizer.json):
a PM stage and then a PPO stage start from it with no --config.model.* flags, and the chat
session samples from it with its Hugging Face EOS / "\\n\\n" stops."""
import io
import json
import os

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import test_interop_llama as hf_models  # noqa: E402
from configs import lm as lm_config, pm as pm_config, ppo as ppo_config  # noqa: E402
from hh_jax import chat, stages  # noqa: E402
from hh_jax.data import tokenizer as tok_lib  # noqa: E402
from hh_jax.interop import hf  # noqa: E402
from hh_jax.model import params as params_lib, sampling  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("llama_stages")
  src = str(root / "hf_llama")
  hf_models._random_hf(src, "llama")
  dirs = {k: str(root / k) for k in ("lm", "pm", "ppo")}
  hf.import_(src, dirs["lm"])
  c = pm_config.get_config("size=test,runlocal=True")  # the `test` rung: replaced by the run's model
  c.init.workdir = dirs["lm"]
  c.data.seq_len = 128  # PPO's prompt budget is this - 8 new tokens; the import's small
  # tokenizer spends up to ~80 tokens on a synthetic request turn
  c.train.total_steps = 2
  c.train.eval_every = 2
  dirs["pm_state"] = stages.run(c, dirs["pm"])
  c = ppo_config.get_config(f"init={dirs['lm']},pm={dirs['pm']},size=test,runlocal=True")
  c.train.total_steps = 2
  stages.run(c, dirs["ppo"])
  return dirs


def _model(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)["model"]


def test_pm_stage_takes_the_imported_model(runs):
  lm, pm = _model(runs["lm"]), _model(runs["pm"])
  assert pm["n_kv_heads"] == 2 and pm["rope_scaling"] == "llama3" and pm["norm"] == "rmsnorm"
  assert {k: v for k, v in pm.items() if k != "heads"} == {k: v for k, v in lm.items() if k != "heads"}
  # Its tokenizer is the import's, byte for byte (PPO checks this), not a retrained one.
  read = lambda d: open(os.path.join(d, tok_lib.FILENAME), "rb").read()  # noqa: E731
  assert read(runs["pm"]) == read(runs["lm"]) and read(runs["lm"]).startswith(b"{")
  _, lm_params, _ = params_lib.load_lm(runs["lm"])
  pm_params = jax.device_get(runs["pm_state"].params)
  assert set(pm_params) == set(lm_params) - {"lm_head"} | {"scalar_head"}


def test_ppo_stage_runs_from_the_imported_llama(runs):
  with open(os.path.join(runs["ppo"], "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert rows and all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
  cfg, params, tok = params_lib.load_lm(runs["ppo"])  # the policy loads as an LM
  assert cfg.n_kv_heads == 2 and "lm_head" in params and tok.eos_ids == (0,)


def test_chat_session_on_the_imported_run(runs):
  cfg, params, tok = params_lib.load_lm(runs["lm"])
  stops = sampling.stop_ids_for(tok)
  assert set(stops) == {0, tok.encode("\n\n")[0]}  # EOS from the HF config, and "\n\n"
  settings = sampling.Settings(max_new_tokens=6, temperature=1.0, stop_ids=stops, pad_id=tok.pad_id)
  out = io.StringIO()
  transcript = chat.session(sampling.Sampler(cfg, params), tok, ["hello", "and then?"],
                            settings, out=out)
  assert transcript.startswith("\n\nHuman: hello\n\nAssistant:")
  assert transcript.count("\n\nHuman:") >= 2 and out.getvalue().count("Assistant:") == 2


def test_lm_stage_continues_the_imported_llama(runs, tmp_path):
  """`--config.init.workdir=IMPORT` on the LM stage (how `:hh` pretrains an open model on
  hh-rlhf transcripts): the import's architecture, tokenizer and weights, then training."""
  c = lm_config.get_config("size=test,runlocal=True")  # the `test` rung: replaced by the run's
  c.init.workdir = runs["lm"]
  c.optim.learning_rate = 1e-6  # two steps barely move the weights they start from
  c.train.total_steps = 2
  out = str(tmp_path / "lm_cont")
  stages.run(c, out)
  assert {k: v for k, v in _model(out).items() if k != "heads"} == \
      {k: v for k, v in _model(runs["lm"]).items() if k != "heads"}
  read = lambda d: open(os.path.join(d, tok_lib.FILENAME), "rb").read()  # noqa: E731
  assert read(out) == read(runs["lm"])
  _, src, _ = params_lib.load_lm(runs["lm"])
  _, cont, _ = params_lib.load_lm(out)
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), src, cont))
  assert max(diffs) < 1e-3  # a fresh init would differ by the init's scale (~0.02-1)
