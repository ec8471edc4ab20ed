"""Hugging Face Llama / Qwen2 / GPT-NeoX import and export: random `transformers` models built
offline, imported with their own tokenizer.json, logits equal in f32, greedy samples equal to
`generate`, exported back with equal logits, and the refusals."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from hh_jax.data import tokenizer as tok_lib  # noqa: E402
from hh_jax.errors import UserError  # noqa: E402
from hh_jax.interop import hf  # noqa: E402
from hh_jax.model import params as params_lib, sampling, transformer  # noqa: E402

TOL = 1e-4  # f32 throughout
VOCAB = 320
TEXTS = ["\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast.",
         "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
         "The quick brown fox jumps over the lazy dog. " * 3,
         "\n\nHuman: Tell me a joke.\n\nAssistant: Why did the chicken cross the road?",
         "A paragraph that ends.\n\n"]  # "\n\n" at the end: a pre-token, so BPE learns it as one piece


def _save_tokenizer(path: str) -> None:
  """A byte-level BPE trained on a few strings, EOS `<|endoftext|>` = id 0 (as GPT-2/Pythia)."""
  tk = tokenizers.Tokenizer(tokenizers.models.BPE())
  tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=316, special_tokens=["<|endoftext|>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tk.train_from_iterator(TEXTS * 4 + ["\n\n"] * 50, trainer)
  tk.save(os.path.join(path, "tokenizer.json"))


def _hf_config(family: str):
  common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                intermediate_size=96, max_position_embeddings=512, bos_token_id=0,
                eos_token_id=0, pad_token_id=0)
  if family == "llama":  # GQA (8 query heads over 2 kv heads), Llama 3.1 rope scaling, untied
    return transformers.LlamaConfig(
        **common, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 256})
  if family == "llama_bias":  # Llama's attention_bias (q, k, v, o) and mlp_bias, tied, MQA
    return transformers.LlamaConfig(**common, num_key_value_heads=1, attention_bias=True,
                                    mlp_bias=True, tie_word_embeddings=True)
  if family == "mistral":  # no sliding window; head_dim 16 != hidden / heads
    return transformers.MistralConfig(**common, num_key_value_heads=4, head_dim=16,
                                      sliding_window=None, tie_word_embeddings=False)
  if family == "qwen2":  # q/k/v biases, tied, theta 1e6
    return transformers.Qwen2Config(**common, num_key_value_heads=4, tie_word_embeddings=True,
                                    rope_parameters={"rope_type": "default", "rope_theta": 1e6})
  # Pythia's defaults: parallel residual, a quarter of each head rotated, erf GELU, untied
  return transformers.GPTNeoXConfig(**common, hidden_act="gelu", use_parallel_residual=True,
                                    rotary_pct=0.25, tie_word_embeddings=False)


FAMILIES = ("llama", "llama_bias", "mistral", "qwen2", "gpt_neox")
MODEL_TYPES = {"llama_bias": "llama"}  # else the family's name
# What export writes: Mistral without a window is a Llama.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "llama_bias": "LlamaForCausalLM",
                 "mistral": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "gpt_neox": "GPTNeoXForCausalLM"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("interop_llama")


def _random_hf(path: str, family: str, max_shard_size=None):
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(_hf_config(family)).eval()
  with torch.no_grad():  # every weight random, norm scales and biases included
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.2)
  kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
  model.save_pretrained(path, **kw)
  _save_tokenizer(path)
  return model


@pytest.fixture(scope="module", params=FAMILIES)
def imported(request, root):
  family = request.param
  src = str(root / f"hf_{family}")
  # Llama is saved in shards (model.safetensors.index.json), the others in one file.
  model = _random_hf(src, family, max_shard_size="100KB" if family == "llama" else None)
  run = str(root / f"run_{family}")
  hf.import_(src, run)
  return family, src, model, run


def _batch(seq=12):
  ids = np.random.default_rng(1).integers(1, VOCAB, (3, seq)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :4] = 0  # left-padded
  mask[2, 8:] = 0  # right-padded
  return ids, mask


def _ours(cfg, params, ids, mask):
  out = jax.jit(transformer.Transformer(cfg).apply)({"params": params}, ids, mask)
  return np.asarray(out["logits"])


def _theirs(model, ids, mask):
  pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # positions over real tokens, as ours
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(pos, dtype=torch.long)).logits.numpy()


def test_import_logits_equal_transformers(imported):
  family, src, model, run = imported
  if family == "llama":
    assert os.path.exists(os.path.join(src, hf.SAFETENSORS_INDEX))
  cfg, params, tok = params_lib.load_lm(run)
  assert cfg.size == f"hf-{MODEL_TYPES.get(family, family)}"
  if family == "llama_bias":
    assert (cfg.attn_bias, cfg.mlp_bias, cfg.n_kv_heads, cfg.tie_embeddings) == ("all", True, 1, True)
  if family == "mistral":
    assert cfg.head_dim == 16 and cfg.n_heads * cfg.head_dim != cfg.d_model
  if family == "llama":
    assert (transformer.kv_heads(cfg), cfg.rope_scaling, "lm_head" in params) == (2, "llama3", True)
  ids, mask = _batch()
  ours, theirs = _ours(cfg, params, ids, mask), _theirs(model, ids, mask)
  diff = float(np.abs(ours - theirs)[mask.astype(bool)].max())
  print(f"import {family}: max |logit diff| {diff:.2e}, max |logit| {np.abs(ours).max():.2f}")
  assert np.abs(ours).max() > 1.0 and diff < TOL


def test_imported_tokenizer_is_the_models_own(imported):
  family, src, _, run = imported
  _, _, tok = params_lib.load_lm(run)
  theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(src, "tokenizer.json"))
  for text in TEXTS + ["héllo ☃ 🙂", ""]:
    assert tok.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert tok.decode(tok.encode(text)) == text
  assert tok.eos_ids == (0,) and tok.eoc_id == 0 and tok.vocab_size <= VOCAB
  newline = tok.encode("\n\n")
  assert len(newline) == 1 and tok.human_id == newline[0] != tok.eos_id
  assert set(sampling.stop_ids_for(tok)) == {0, newline[0]}  # a reply ends at "\n\n" or EOS
  # Stages copy and compare the tokenizer file byte for byte, as a SentencePiece model.
  with open(os.path.join(run, tok_lib.FILENAME), "rb") as f:
    assert tok_lib.Tokenizer.load(os.path.join(run, tok_lib.FILENAME)).model_proto == f.read()


def test_greedy_samples_equal_transformers_generate(imported):
  family, _, model, run = imported
  cfg, params, _ = params_lib.load_lm(run)
  prompts = np.random.default_rng(3).integers(1, VOCAB, (2, 7))
  settings = sampling.Settings(max_new_tokens=10, temperature=0.0, stop_ids=())
  ours = sampling.Sampler(cfg, params)([list(p) for p in prompts], jax.random.PRNGKey(0), settings)
  with torch.no_grad():
    out = model.generate(torch.tensor(prompts), attention_mask=torch.ones(2, 7, dtype=torch.long),
                         do_sample=False, max_new_tokens=10, min_new_tokens=10,
                         eos_token_id=None, pad_token_id=0)
  theirs = out[:, 7:].numpy()
  assert len({tuple(r) for r in theirs}) == 2  # not a degenerate repeat
  np.testing.assert_array_equal(ours["tokens"], theirs)


def test_export_loads_in_transformers_with_equal_logits(imported, root):
  family, _, model, run = imported
  out = str(root / f"export_{family}")
  hf.export(run, out)
  back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  assert type(back).__name__ == ARCHITECTURES[family]
  cfg, params, _ = params_lib.load_lm(run)
  ids, mask = _batch()
  ours, theirs = _ours(cfg, params, ids, mask), _theirs(back, ids, mask)
  assert float(np.abs(ours - theirs)[mask.astype(bool)].max()) < TOL
  # The original model and the exported one are the same function.
  assert float(np.abs(_theirs(model, ids, mask) - theirs)[mask.astype(bool)].max()) < TOL
  # (AutoTokenizer would rebuild a Qwen2 dir's tokenizer as Qwen2's own; this one is not.)
  tk = transformers.PreTrainedTokenizerFast.from_pretrained(out)
  assert tk.encode(TEXTS[0], add_special_tokens=False) == params_lib.load_lm(run)[2].encode(TEXTS[0])
  # A re-import of the export, with unrolled layers this time, is the same model.
  again = str(root / f"reimport_{family}")
  hf.import_(out, again, scan_layers=False)
  cfg2, params2, _ = params_lib.load_lm(again)
  assert not cfg2.scan_layers and "layer_1" in params2
  assert float(np.abs(_ours(cfg2, params2, ids, mask) - ours)[mask.astype(bool)].max()) < TOL


def _edited(src: str, dst: str, **changes) -> str:
  shutil.copytree(src, dst)
  path = os.path.join(dst, "config.json")
  with open(path) as f:
    config = json.load(f)
  config.update(changes)
  with open(path, "w") as f:
    json.dump(config, f)
  return dst


@pytest.mark.parametrize("changes,message", [
    ({"model_type": "mistral", "sliding_window": 4096}, "sliding_window=4096"),
    ({"use_sliding_window": True, "sliding_window": 64}, "sliding_window"),
    ({"num_local_experts": 8}, "num_local_experts=8"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     "rope_type='yarn'"),
    ({"rope_parameters": None, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
     "rope_scaling.rope_type='dynamic'"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"model_type": "mixtral"}, "model_type='mixtral'"),
])
def test_import_refuses_unsupported_fields_in_one_line(root, changes, message):
  src = str(root / "hf_refuse_src")
  if not os.path.exists(src):
    _random_hf(src, "llama")
  name = "_".join(changes)
  bad = _edited(src, str(root / f"refuse_{name}"), **changes)
  with pytest.raises(UserError, match=message) as e:
    hf.import_(bad, str(root / f"refuse_run_{name}"))
  assert "\n" not in str(e.value)
  assert not os.path.exists(root / f"refuse_run_{name}" / "checkpoints")


def test_every_eos_id_of_the_generation_config_stops_the_sampler(imported, root):
  """Llama-3 instruct ends turns with <|eot_id|> and text with <|end_of_text|>: a list."""
  family, src, _, _ = imported
  if family != "llama":
    pytest.skip("one family is enough")
  two = str(root / "hf_two_eos")
  shutil.copytree(src, two)
  with open(os.path.join(two, "generation_config.json"), "w") as f:
    json.dump({"eos_token_id": [0, 7], "pad_token_id": 0}, f)
  hf.import_(two, str(root / "run_two_eos"))
  _, _, tok = params_lib.load_lm(str(root / "run_two_eos"))
  assert tok.eos_ids == (0, 7)
  assert {0, 7} <= set(sampling.stop_ids_for(tok))
  assert tok.decode([7] + tok.encode("Paris.")) == "Paris."  # EOS ids never show as text
