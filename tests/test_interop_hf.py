"""Hugging Face interop: logits equal transformers' both ways, tokenizer ids equal ours, and a
PM stage starts from an imported GPT-2. Every model is randomly initialized and saved here."""
import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from configs import models, pm as pm_config  # noqa: E402
from hh_jax import main  # noqa: E402
from hh_jax.data import synthetic, tokenizer as tok_lib  # noqa: E402
from hh_jax.errors import UserError  # noqa: E402
from hh_jax.interop import hf  # noqa: E402
from hh_jax.model import params as params_lib, transformer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-3


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("interop_hf")


@pytest.fixture(scope="module")
def tokenizer(root):
  """A tokenizer trained on the synthetic corpus, its vocabulary the `test` rung's 512."""
  tok = tok_lib.train(synthetic.lm_corpus(400, 0), 512)
  path = str(root / "tokenizer.model")
  tok.save(path)
  return tok, path


def _batch(vocab, seq=12):
  """ids, mask [3, seq]: a full row, a left-padded row and a right-padded row."""
  ids = np.random.default_rng(1).integers(3, vocab, (3, seq)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :4] = 0
  mask[2, 8:] = 0
  return ids, mask


def _hh_logits(cfg, params, ids, mask):
  out = transformer.Transformer(cfg).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
  return np.asarray(out["logits"])  # [batch, seq, vocab]


def _hf_logits(model, ids, mask):
  pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # positions over real tokens, as hh_jax counts
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(pos, dtype=torch.long))
  return out.logits.numpy()


def _random_run(workdir, tok, pos_embedding, scan_layers, seed=0):
  """An LM workdir of the `test` rung whose every param is random (biases, LN scales too)."""
  cfg = models.get("test")
  cfg.pos_embedding, cfg.scan_layers = pos_embedding, scan_layers
  init = transformer.Transformer(cfg).init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))
  leaves, treedef = jax.tree.flatten(jax.tree.map(np.asarray, nn.unbox(init["params"])))
  rng = np.random.default_rng(seed)
  leaves = [x + rng.normal(0.0, 0.2, x.shape).astype(np.float32) for x in leaves]
  hf.write_workdir(str(workdir), cfg.to_dict(), jax.tree.unflatten(treedef, leaves), tok)
  return cfg


@pytest.fixture(scope="module", params=[("learned", True), ("learned", False), ("rotary", True)],
                ids=["gpt2-scanned", "gpt2-unrolled", "neox-rotary"])
def exported(request, root, tokenizer):
  pos, scan = request.param
  run, out = root / f"run_{pos}_{scan}", root / f"hf_{pos}_{scan}"
  _random_run(run, tokenizer[0], pos, scan)
  hf.export(str(run), str(out))
  return str(run), str(out), pos


def test_export_logits_match_transformers(exported):
  run, out, pos = exported
  model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  assert type(model).__name__ == {"learned": "GPT2LMHeadModel", "rotary": "GPTNeoXForCausalLM"}[pos]
  cfg, params, _ = params_lib.load_lm(run)
  ids, mask = _batch(cfg.vocab_size)
  ours, theirs = _hh_logits(cfg, params, ids, mask), _hf_logits(model, ids, mask)
  real = mask.astype(bool)
  diff = float(np.abs(ours - theirs)[real].max())
  print(f"export {pos} scan={cfg.scan_layers}: max |logit diff| {diff:.2e}, "
        f"max |logit| {np.abs(ours).max():.2f}")
  assert np.abs(ours).max() > 1.0  # the comparison is between non-trivial logits
  assert diff < TOL
  # Without position_ids HF counts from 0 at the first slot: the same as ours with no left padding.
  with torch.no_grad():
    plain = model(input_ids=torch.tensor(ids[:1], dtype=torch.long)).logits.numpy()
  assert np.abs(plain - ours[:1]).max() < TOL


def test_export_tokenizer_encodes_like_ours(exported, tokenizer):
  _, out, _ = exported
  tok = tokenizer[0]
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  texts = synthetic.lm_corpus(50, 3) + [
      "\n\nHuman: héllo ☃ 日本語 🙂\n\nAssistant:  Sure.  Two  spaces, then\ttab\n",
      "   leading spaces\n\nHuman:\n\nAssistant:\n\n\nHuman: x",
      "literal <eoc> and </s> and <pad> stay text", "....!!!!????    aaaa", ""]
  for text in texts:
    assert hf_tok.encode(text) == tok.encode(text), text
  assert tok.encode("<eoc>") != [tok.eoc_id]  # the control token is never produced from text
  ids = tok.encode(texts[0])
  assert hf_tok.decode(ids) == tok.decode(ids) == texts[0]
  assert (hf_tok.pad_token_id, hf_tok.eos_token_id) == (tok.pad_id, tok.eos_id)
  assert hf_tok.convert_tokens_to_ids(tok_lib.EOC) == tok.eoc_id
  assert hf_tok.convert_tokens_to_ids(tok_lib.HUMAN) == tok.human_id


@pytest.fixture(scope="module")
def gpt2_dir(root):
  """A random GPT2LMHeadModel whose every bias, the key bias included, is non-zero."""
  torch.manual_seed(0)
  config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=512, n_positions=64,
                                   activation_function="gelu_new", layer_norm_epsilon=1e-5,
                                   bos_token_id=2, eos_token_id=2)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.add_(torch.randn_like(p) * 0.2)
  key_bias = model.transformer.h[0].attn.c_attn.bias[32:64]
  assert float(key_bias.detach().abs().max()) > 0.1
  path = str(root / "gpt2")
  model.save_pretrained(path)
  return path, model


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_import_logits_match_transformers(gpt2_dir, tokenizer, root, scan_layers):
  path, model = gpt2_dir
  workdir = str(root / f"imported_{scan_layers}")
  mc = hf.import_(path, workdir, tokenizer[1], scan_layers=scan_layers)
  assert mc["scan_layers"] == scan_layers and mc["n_layers"] == 2 and mc["max_len"] == 64
  cfg, params, tok = params_lib.load_lm(workdir)  # what sampling, distillation and PPO read
  assert tok.vocab_size == 512
  ids, mask = _batch(cfg.vocab_size)
  ours, theirs = _hh_logits(cfg, params, ids, mask), _hf_logits(model, ids, mask)
  diff = float(np.abs(ours - theirs)[mask.astype(bool)].max())
  print(f"import scan={scan_layers}: max |logit diff| {diff:.2e} (key bias dropped), "
        f"max |logit| {np.abs(ours).max():.2f}")
  assert np.abs(ours).max() > 1.0
  assert diff < TOL


def _edited_copy(src, dst, **changes):
  shutil.copytree(src, dst)
  with open(os.path.join(dst, "config.json")) as f:
    config = json.load(f)
  config.update(changes)
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(config, f)
  return dst


@pytest.mark.parametrize("changes,message", [
    ({"activation_function": "gelu"}, "activation_function='gelu'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ({"tie_word_embeddings": False}, "untied"),
    ({"model_type": "mixtral"}, "model_type='mixtral'"),
    ({"model_type": "llama"}, "lacks hidden_size"),
    ({"n_positions": 32}, "params/pos_embedding"),
])
def test_import_refuses_what_hh_jax_cannot_compute(gpt2_dir, root, changes, message):
  name = "_".join(f"{k}-{v}" for k, v in changes.items())
  src = _edited_copy(gpt2_dir[0], str(root / f"bad_{name}"), **changes)
  with pytest.raises(UserError, match=message) as e:
    hf.import_(src, str(root / f"bad_run_{name}"))
  assert "\n" not in str(e.value)
  assert not os.path.exists(root / f"bad_run_{name}" / "checkpoints")


def test_export_refuses_a_preference_model(root):
  run = root / "pm_like"
  run.mkdir()
  (run / "config.json").write_text(json.dumps({"stage": "pm", "model": {}}))
  with pytest.raises(UserError, match="not a language model"):
    hf.export(str(run), str(root / "pm_like_hf"))


def test_pm_stage_starts_from_imported_gpt2(gpt2_dir, tokenizer, root):
  """The CLI imports; the PM stage takes the workdir as init.workdir and trains two steps."""
  workdir = str(root / "imported_cli")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, "-m", "hh_jax.interop.hf", "import",
                         f"--hf_dir={gpt2_dir[0]}", f"--workdir={workdir}",
                         f"--tokenizer={tokenizer[1]}"],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert done.returncode == 0, done.stderr
  assert f"--config.init.workdir={workdir}" in done.stdout and "--config.model" not in done.stdout

  # No --config.model.* flags: the stage takes the imported run's model (max_len 64, not 128).
  c = pm_config.get_config("size=test,runlocal=True")
  c.init.workdir = workdir
  c.train.total_steps = 2
  c.train.eval_every = 2
  c.optim.learning_rate = 0.0  # two real steps that leave the params where they started
  state = main.run(c, str(root / "pm_from_gpt2"))
  _, lm_params, _ = params_lib.load_lm(workdir)
  pm_params = jax.device_get(state.params)
  assert set(pm_params) == set(lm_params) | {"scalar_head"}  # the trunk restored, a fresh head
  jax.tree.map(np.testing.assert_array_equal, {k: pm_params[k] for k in lm_params},
               jax.device_get(lm_params))
  assert int(state.step) == 2
  with open(root / "pm_from_gpt2" / "config.json") as f:
    assert json.load(f)["model"]["max_len"] == 64
  with open(root / "pm_from_gpt2" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert any(np.isfinite(r.get("loss", np.nan)) for r in rows)


def test_cli_error_is_one_line(root):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, "-m", "hh_jax.interop.hf", "import",
                         f"--hf_dir={root / 'nowhere'}", f"--workdir={root / 'x'}"],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert done.returncode == 2
  lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
  assert lines[-1].startswith("error: ") and "config.json" in lines[-1]
