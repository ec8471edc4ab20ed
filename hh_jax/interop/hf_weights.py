"""hh_jax params <-> Hugging Face GPT-2 / GPT-NeoX tensors, as numpy, with no torch.

(The Llama / Mistral / Qwen2 maps are in `hf_llama.py`, what they share in `hf_common.py`.)

What maps to what (hh_jax/model/transformer.py on the left):

- pre-LN blocks, tanh-approximated GELU (flax `nn.gelu`) = HF `gelu_new`, tied LM head,
  attention scaled by head_dim^-0.5, LayerNorm eps from the config;
- `learned` positions = GPT-2 (`GPT2LMHeadModel`): `wte`, `wpe` [max_len, d_model],
  `c_attn` = [q | k | v] columns (Conv1D: x @ W), `c_proj`, `mlp.c_fc`/`mlp.c_proj`;
- `rotary` positions with LayerNorm and a GELU MLP = GPT-NeoX (Pythia): NeoX rotates halves
  [x1, x2] as `transformer.rotary` does, the leading `rotary_pct` of each head
  (`rotary_fraction`), with base `rotary_emb_base` (`rope_theta`); `use_parallel_residual`
  is `parallel_residual`; `hidden_act` "gelu" is the erf form (`mlp=gelu_exact`); its fused
  `query_key_value` is head-major ([q_h, k_h, v_h] per head), Linear weights are [out, in],
  and an untied head is `embed_out` (`lm_head`);
- a bias hh_jax's model lacks (the key's under the default `attn_bias=qvo`, any under
  `none` or `mlp_bias=False`) is written as zeros, which computes the same. GPT-2 has no
  rotary, so importing its key bias drops it exactly: q·(k + b_k) = q·k + q·b_k, and q·b_k
  is the same for every key of a query, so softmax cancels it. NeoX rotates the key after
  its bias, so there it is kept (`attn_bias=all`).

Anything hh_jax cannot compute exactly (exact-erf GELU, per-layer-index attention scaling,
an untied head, ...) is refused with one line rather than converted approximately.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hh_jax.errors import UserError
from hh_jax.interop import hf_common
from hh_jax.interop.hf_common import per_layer, stack_layers  # noqa: F401  (this module's API)
from hh_jax.model import transformer

# The tanh approximation of GELU under its HF names; "gelu" in HF is the exact erf form.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


_np = hf_common.np32


def _check_exportable(cfg, family: str, plain: tuple[str, ...]) -> None:
  """The fields a GPT-2 / NeoX config.json cannot express must hold their default values."""
  if cfg.n_heads * cfg.head_dim != cfg.d_model:
    raise UserError(f"model.n_heads·head_dim = {cfg.n_heads * cfg.head_dim} differs from "
                    f"d_model = {cfg.d_model}; HF GPT-2/NeoX need them equal")
  for name in plain:
    if name == "n_kv_heads" and transformer.kv_heads(cfg) == cfg.n_heads:
      continue  # spelled out, but plain multi-head attention
    if transformer.arch(cfg, name) != transformer.ARCH_DEFAULTS[name]:
      raise UserError(f"model.{name}={transformer.arch(cfg, name)!r} has no {family} form; "
                      "no Hugging Face architecture hh_jax writes holds this model")


def _common_config(cfg, tok_ids: dict) -> dict:
  return {"vocab_size": int(cfg.vocab_size), "initializer_range": float(cfg.init_std),
          "tie_word_embeddings": True, "bos_token_id": tok_ids["eos"],
          "eos_token_id": tok_ids["eos"], "pad_token_id": tok_ids["pad"],
          "dtype": "float32", "torch_dtype": "float32", "use_cache": True}


def to_gpt2(params: dict, cfg, tok_ids: dict) -> tuple[dict, dict]:
  """(config.json dict, {name: array}) of `GPT2LMHeadModel` for a learned-position model."""
  _check_exportable(cfg, "GPT-2", tuple(k for k in transformer.ARCH_DEFAULTS
                                        if not k.startswith("rope") and k != "rotary_fraction"))
  d, hd = cfg.d_model, cfg.n_heads * cfg.head_dim
  t = {"transformer.wte.weight": _np(params["embedding"]),  # [vocab, d]
       "transformer.wpe.weight": _np(params["pos_embedding"]),  # [max_len, d]
       "transformer.ln_f.weight": _np(params["ln_f"]["scale"]),
       "transformer.ln_f.bias": _np(params["ln_f"]["bias"])}
  for i, p in enumerate(per_layer(params, cfg.n_layers)):
    a, m, pre = p["attn"], p["mlp"], f"transformer.h.{i}."
    t[pre + "ln_1.weight"], t[pre + "ln_1.bias"] = p["ln1"]["scale"], p["ln1"]["bias"]
    t[pre + "ln_2.weight"], t[pre + "ln_2.bias"] = p["ln2"]["scale"], p["ln2"]["bias"]
    t[pre + "attn.c_attn.weight"] = np.concatenate(
        [a[n]["kernel"].reshape(d, hd) for n in ("query", "key", "value")], axis=1)  # [d, 3·hd]
    t[pre + "attn.c_attn.bias"] = np.concatenate(
        [a["query"]["bias"].reshape(hd), np.zeros(hd, np.float32), a["value"]["bias"].reshape(hd)])
    t[pre + "attn.c_proj.weight"] = a["out"]["kernel"].reshape(hd, d)  # [hd, d]
    t[pre + "attn.c_proj.bias"] = a["out"]["bias"]
    t[pre + "mlp.c_fc.weight"], t[pre + "mlp.c_fc.bias"] = m["wi"]["kernel"], m["wi"]["bias"]
    t[pre + "mlp.c_proj.weight"], t[pre + "mlp.c_proj.bias"] = m["wo"]["kernel"], m["wo"]["bias"]
  config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "n_layer": cfg.n_layers, "n_embd": d, "n_head": cfg.n_heads,
            "n_inner": cfg.mlp_dim, "n_positions": cfg.max_len,
            "activation_function": "gelu_new", "layer_norm_epsilon": float(cfg.layer_norm_eps),
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "add_cross_attention": False,
            **_common_config(cfg, tok_ids)}
  return config, t


def _or_zeros(tree: dict, name: str, shape) -> np.ndarray:
  return np.asarray(tree[name], np.float32) if name in tree else np.zeros(shape, np.float32)


def to_neox(params: dict, cfg, tok_ids: dict) -> tuple[dict, dict]:
  """(config.json dict, {name: array}) of `GPTNeoXForCausalLM` for a rotary model."""
  _check_exportable(cfg, "GPT-NeoX", ("norm", "n_kv_heads", "rope_scaling"))
  if transformer.arch(cfg, "mlp") == "swiglu":
    raise UserError("model.mlp='swiglu' has no GPT-NeoX form; such a model exports as Llama "
                    "with norm=rmsnorm")
  d, h, dh, width = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.mlp_dim
  tied = bool(transformer.arch(cfg, "tie_embeddings"))
  t = {"gpt_neox.embed_in.weight": _np(params["embedding"]),
       "gpt_neox.final_layer_norm.weight": _np(params["ln_f"]["scale"]),
       "gpt_neox.final_layer_norm.bias": _np(params["ln_f"]["bias"])}
  for i, p in enumerate(per_layer(params, cfg.n_layers)):
    a, m, pre = p["attn"], p["mlp"], f"gpt_neox.layers.{i}."
    t[pre + "input_layernorm.weight"], t[pre + "input_layernorm.bias"] = p["ln1"]["scale"], p["ln1"]["bias"]
    t[pre + "post_attention_layernorm.weight"] = p["ln2"]["scale"]
    t[pre + "post_attention_layernorm.bias"] = p["ln2"]["bias"]
    qkv = np.stack([a[n]["kernel"] for n in ("query", "key", "value")], axis=2)  # [d, h, 3, dh]
    t[pre + "attention.query_key_value.weight"] = qkv.reshape(d, 3 * h * dh).T  # [3·h·dh, d]
    qkv_b = np.stack([_or_zeros(a[n], "bias", (h, dh)) for n in ("query", "key", "value")],
                     axis=1)  # [h, 3, dh]
    t[pre + "attention.query_key_value.bias"] = qkv_b.reshape(3 * h * dh)
    t[pre + "attention.dense.weight"] = a["out"]["kernel"].reshape(h * dh, d).T  # [d, h·dh]
    t[pre + "attention.dense.bias"] = _or_zeros(a["out"], "bias", (d,))
    t[pre + "mlp.dense_h_to_4h.weight"] = m["wi"]["kernel"].T
    t[pre + "mlp.dense_h_to_4h.bias"] = _or_zeros(m["wi"], "bias", (width,))
    t[pre + "mlp.dense_4h_to_h.weight"] = m["wo"]["kernel"].T
    t[pre + "mlp.dense_4h_to_h.bias"] = _or_zeros(m["wo"], "bias", (d,))
  if not tied:
    t["embed_out.weight"] = _np(params["lm_head"]).T  # [vocab, d]
  theta = float(transformer.arch(cfg, "rope_theta"))
  fraction = float(transformer.arch(cfg, "rotary_fraction"))
  act = "gelu" if transformer.arch(cfg, "mlp") == "gelu_exact" else "gelu_new"
  config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
            "num_hidden_layers": cfg.n_layers, "hidden_size": d, "num_attention_heads": h,
            "intermediate_size": cfg.mlp_dim, "max_position_embeddings": cfg.max_len,
            "hidden_act": act, "layer_norm_eps": float(cfg.layer_norm_eps),
            "use_parallel_residual": bool(transformer.arch(cfg, "parallel_residual")),
            "attention_bias": True, "hidden_dropout": 0.0, "attention_dropout": 0.0,
            # Both spellings: transformers 5 reads rope_parameters, 4.x rotary_pct/_emb_base.
            "rope_parameters": {"rope_type": "default", "rope_theta": theta,
                                "partial_rotary_factor": fraction},
            "rotary_pct": fraction, "rotary_emb_base": theta,
            **_common_config(cfg, tok_ids), "tie_word_embeddings": tied}
  return config, {k: np.ascontiguousarray(v, np.float32) for k, v in t.items()}


def export(params: dict, cfg, tok_ids: dict) -> tuple[dict, dict]:
  from hh_jax.interop import hf_llama  # hf_llama imports hf_common, as this module does
  if cfg.pos_embedding == "learned":
    return to_gpt2(params, cfg, tok_ids)
  if cfg.pos_embedding == "rotary" and hf_llama.exportable(cfg):
    return hf_llama.to_hf(params, cfg, tok_ids)
  if cfg.pos_embedding == "rotary":
    return to_neox(params, cfg, tok_ids)
  raise UserError(f"model.pos_embedding={cfg.pos_embedding!r} has no HF architecture; "
                  "use 'learned' (GPT-2) or 'rotary' (GPT-NeoX)")


def _refuse(hf: dict, key: str, bad, what: str) -> None:
  if key in hf and hf[key] == bad:
    raise UserError(f"config.json has {key}={hf[key]!r} ({what}); hh_jax cannot compute that "
                    "exactly, so it is not imported")


def model_config_from_gpt2(hf: dict, scan_layers: bool) -> dict:
  """The `model` section of an hh_jax config (the fields configs/models.py gives a rung)."""
  if hf.get("model_type") != "gpt2":
    raise UserError(f"config.json has model_type={hf.get('model_type')!r}; "
                    "only GPT-2-family checkpoints (model_type 'gpt2') import")
  act = hf.get("activation_function", "gelu_new")
  if act not in _TANH_GELU:
    raise UserError(f"config.json has activation_function={act!r}; hh_jax's GELU is the tanh "
                    "approximation ('gelu_new'), so this checkpoint would compute differently")
  _refuse(hf, "scale_attn_by_inverse_layer_idx", True, "attention scaled by 1/layer index")
  _refuse(hf, "reorder_and_upcast_attn", True, "a reordered, upcast attention")
  _refuse(hf, "scale_attn_weights", False, "attention logits not scaled by head_dim^-0.5")
  _refuse(hf, "add_cross_attention", True, "cross-attention layers")
  _refuse(hf, "tie_word_embeddings", False, "an LM head untied from the embedding")
  d, n_heads = int(hf["n_embd"]), int(hf["n_head"])
  if d % n_heads:
    raise UserError(f"config.json has n_embd={d} not divisible by n_head={n_heads}")
  return {"size": "hf-gpt2", "n_layers": int(hf["n_layer"]), "d_model": d, "n_heads": n_heads,
          "head_dim": d // n_heads, "mlp_dim": int(hf.get("n_inner") or 4 * d),
          "vocab_size": int(hf["vocab_size"]), "max_len": int(hf["n_positions"]),
          "pos_embedding": "learned", "dtype": "float32", "remat_policy": "none",
          "scan_layers": bool(scan_layers), "heads": ["lm"],
          "layer_norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
          "init_std": float(hf.get("initializer_range", 0.02))}


def params_from_gpt2(tensors: dict[str, Any], mc: dict) -> dict:
  """hh_jax params (numpy, the Transformer's tree for `mc`) from GPT-2 safetensors tensors."""
  prefix = "transformer." if "transformer.wte.weight" in tensors else ""
  def get(name):
    if prefix + name not in tensors:
      raise UserError(f"the checkpoint lacks {prefix + name}; it is not a GPT2LMHeadModel")
    return np.asarray(tensors[prefix + name], np.float32)
  d, h, dh, n = mc["d_model"], mc["n_heads"], mc["head_dim"], mc["n_layers"]
  wte = get("wte.weight")  # [vocab, d]
  head = tensors.get("lm_head.weight")
  if head is not None and not np.array_equal(np.asarray(head, np.float32), wte):
    raise UserError("the checkpoint's lm_head.weight differs from its wte.weight (an untied "
                    "head); hh_jax's LM head is the embedding, so it is not imported")
  layers = []
  for i in range(n):
    g = lambda name, i=i: get(f"h.{i}.{name}")  # noqa: E731
    w, b = g("attn.c_attn.weight"), g("attn.c_attn.bias")  # [d, 3d], [3d]
    wq, wk, wv = np.split(w, 3, axis=1)
    bq, _, bv = np.split(b, 3)  # the key bias is dropped: softmax cancels it (module doc)
    layers.append({
        "ln1": {"scale": g("ln_1.weight"), "bias": g("ln_1.bias")},
        "ln2": {"scale": g("ln_2.weight"), "bias": g("ln_2.bias")},
        "attn": {"query": {"kernel": wq.reshape(d, h, dh), "bias": bq.reshape(h, dh)},
                 "key": {"kernel": wk.reshape(d, h, dh)},
                 "value": {"kernel": wv.reshape(d, h, dh), "bias": bv.reshape(h, dh)},
                 "out": {"kernel": g("attn.c_proj.weight").reshape(h, dh, d),
                         "bias": g("attn.c_proj.bias")}},
        "mlp": {"wi": {"kernel": g("mlp.c_fc.weight"), "bias": g("mlp.c_fc.bias")},
                "wo": {"kernel": g("mlp.c_proj.weight"), "bias": g("mlp.c_proj.bias")}},
    })
  params = {"embedding": wte, "pos_embedding": get("wpe.weight"),
            "ln_f": {"scale": get("ln_f.weight"), "bias": get("ln_f.bias")}}
  return hf_common.with_layers(params, layers, mc["scan_layers"])


def model_config_from_neox(hf: dict, scan_layers: bool) -> dict:
  """The `model` section for a GPTNeoXForCausalLM (Pythia) config.json."""
  act = hf.get("hidden_act", "gelu")
  if act != "gelu" and act not in _TANH_GELU:
    raise UserError(f"config.json has hidden_act={act!r}; hh_jax computes 'gelu' (erf) and the "
                    "tanh approximation only, so this checkpoint is not imported")
  hf_common.refuse_moe(hf)
  d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
  rope = {**hf.get("rope_parameters", {})}
  rope.setdefault("partial_rotary_factor", hf.get("rotary_pct", 0.25))
  return hf_common.model_section(
      hf, scan_layers, size="hf-gpt_neox", n_layers=int(hf["num_hidden_layers"]), d_model=d,
      n_heads=heads, head_dim=d // heads, n_kv_heads=heads, mlp_dim=int(hf["intermediate_size"]),
      max_len=int(hf.get("max_position_embeddings", 2048)), norm="layernorm",
      mlp="gelu_exact" if act == "gelu" else "gelu", layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
      attn_bias="all" if hf.get("attention_bias", True) else "none", mlp_bias=True,
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      parallel_residual=bool(hf.get("use_parallel_residual", True)),
      **hf_common.rope_fields({**hf, "rope_parameters": rope}, theta_key="rotary_emb_base"))


def params_from_neox(tensors: dict[str, Any], mc: dict) -> dict:
  """hh_jax params (numpy) from a GPTNeoXForCausalLM state dict."""
  get = hf_common.getter(tensors, "gpt_neox.", "a GPTNeoXForCausalLM")
  d, h, dh = mc["d_model"], mc["n_heads"], mc["head_dim"]
  layers = []
  for i in range(mc["n_layers"]):
    g = lambda name, i=i: get(f"layers.{i}.{name}")  # noqa: E731
    qkv = g("attention.query_key_value.weight").T.reshape(d, h, 3, dh)  # head-major [q_h, k_h, v_h]
    attn = {n: {"kernel": qkv[:, :, j]} for j, n in enumerate(("query", "key", "value"))}
    attn["out"] = {"kernel": g("attention.dense.weight").T.reshape(h, dh, d)}
    if mc["attn_bias"] == "all":
      qkv_b = g("attention.query_key_value.bias").reshape(h, 3, dh)
      for j, n in enumerate(("query", "key", "value")):
        attn[n]["bias"] = qkv_b[:, j]
      attn["out"]["bias"] = g("attention.dense.bias")
    layers.append({
        "ln1": {"scale": g("input_layernorm.weight"), "bias": g("input_layernorm.bias")},
        "ln2": {"scale": g("post_attention_layernorm.weight"),
                "bias": g("post_attention_layernorm.bias")},
        "attn": attn,
        "mlp": {"wi": {"kernel": g("mlp.dense_h_to_4h.weight").T, "bias": g("mlp.dense_h_to_4h.bias")},
                "wo": {"kernel": g("mlp.dense_4h_to_h.weight").T, "bias": g("mlp.dense_4h_to_h.bias")}},
    })
  params = {"embedding": get("embed_in.weight"),
            "ln_f": {"scale": get("final_layer_norm.weight"), "bias": get("final_layer_norm.bias")}}
  if not mc["tie_embeddings"]:
    params["lm_head"] = hf_common.array(tensors, "embed_out.weight").T  # [d, vocab]
  return hf_common.with_layers(params, layers, mc["scan_layers"])
