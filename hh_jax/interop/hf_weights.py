"""hh_jax params <-> Hugging Face GPT-2 / GPT-NeoX tensors, as numpy, with no torch.

What maps to what (hh_jax/model/transformer.py on the left):

- pre-LN blocks, tanh-approximated GELU (flax `nn.gelu`) = HF `gelu_new`, tied LM head,
  attention scaled by head_dim^-0.5, LayerNorm eps from the config;
- `learned` positions = GPT-2 (`GPT2LMHeadModel`): `wte`, `wpe` [max_len, d_model],
  `c_attn` = [q | k | v] columns (Conv1D: x @ W), `c_proj`, `mlp.c_fc`/`mlp.c_proj`;
- `rotary` positions = GPT-NeoX with rotary_pct 1.0, base 10000 and sequential residuals
  (`use_parallel_residual=False`): NeoX rotates halves [x1, x2] as `transformer.rotary`
  does; its fused `query_key_value` is head-major ([q_h, k_h, v_h] per head) and its
  Linear weights are [out, in];
- hh_jax has no key bias; HF's is written as zeros. Importing drops HF's key bias, which
  is exact: q·(k + b_k) = q·k + q·b_k, and q·b_k is the same for every key of a query, so
  softmax cancels it.

Anything hh_jax cannot compute exactly (exact-erf GELU, per-layer-index attention scaling,
an untied head, ...) is refused with one line rather than converted approximately.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from hh_jax.errors import UserError
from hh_jax.model import transformer

ROTARY_BASE = float(inspect.signature(transformer.rotary).parameters["base"].default)
# The tanh approximation of GELU under its HF names; "gelu" in HF is the exact erf form.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _np(x) -> np.ndarray:
  return np.asarray(getattr(x, "value", x), np.float32)  # a flax Partitioned box or an array


def per_layer(params: dict, n_layers: int) -> list[dict]:
  """One numpy tree per layer, from a scanned stack (`layers`, leaves [n_layers, ...]) or
  unrolled `layer_0`, `layer_1`, ..."""
  def tree_map(f, t):
    return {k: tree_map(f, v) for k, v in t.items()} if isinstance(t, dict) else f(t)
  if "layers" in params:
    stack = params["layers"]
    return [tree_map(lambda a, i=i: _np(a)[i], stack) for i in range(n_layers)]
  return [tree_map(_np, params[f"layer_{i}"]) for i in range(n_layers)]


def stack_layers(layers: list[dict]) -> dict:
  """The inverse of `per_layer` for scanned models: leaves stacked on a leading [n_layers] axis."""
  first = layers[0]
  if not isinstance(first, dict):
    return np.stack(layers)
  return {k: stack_layers([layer[k] for layer in layers]) for k in first}


def _check_exportable(cfg) -> None:
  if cfg.n_heads * cfg.head_dim != cfg.d_model:
    raise UserError(f"model.n_heads·head_dim = {cfg.n_heads * cfg.head_dim} differs from "
                    f"d_model = {cfg.d_model}; HF GPT-2/NeoX need them equal")


def _common_config(cfg, tok_ids: dict) -> dict:
  return {"vocab_size": int(cfg.vocab_size), "initializer_range": float(cfg.init_std),
          "tie_word_embeddings": True, "bos_token_id": tok_ids["eos"],
          "eos_token_id": tok_ids["eos"], "pad_token_id": tok_ids["pad"],
          "dtype": "float32", "torch_dtype": "float32", "use_cache": True}


def to_gpt2(params: dict, cfg, tok_ids: dict) -> tuple[dict, dict]:
  """(config.json dict, {name: array}) of `GPT2LMHeadModel` for a learned-position model."""
  _check_exportable(cfg)
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


def to_neox(params: dict, cfg, tok_ids: dict) -> tuple[dict, dict]:
  """(config.json dict, {name: array}) of `GPTNeoXForCausalLM` for a rotary model."""
  _check_exportable(cfg)
  d, h, dh = cfg.d_model, cfg.n_heads, cfg.head_dim
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
    qkv_b = np.stack([a["query"]["bias"], np.zeros((h, dh), np.float32), a["value"]["bias"]],
                     axis=1)  # [h, 3, dh]
    t[pre + "attention.query_key_value.bias"] = qkv_b.reshape(3 * h * dh)
    t[pre + "attention.dense.weight"] = a["out"]["kernel"].reshape(h * dh, d).T  # [d, h·dh]
    t[pre + "attention.dense.bias"] = a["out"]["bias"]
    t[pre + "mlp.dense_h_to_4h.weight"], t[pre + "mlp.dense_h_to_4h.bias"] = m["wi"]["kernel"].T, m["wi"]["bias"]
    t[pre + "mlp.dense_4h_to_h.weight"], t[pre + "mlp.dense_4h_to_h.bias"] = m["wo"]["kernel"].T, m["wo"]["bias"]
  config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
            "num_hidden_layers": cfg.n_layers, "hidden_size": d, "num_attention_heads": h,
            "intermediate_size": cfg.mlp_dim, "max_position_embeddings": cfg.max_len,
            "hidden_act": "gelu_new", "layer_norm_eps": float(cfg.layer_norm_eps),
            "use_parallel_residual": False, "attention_bias": True,
            "hidden_dropout": 0.0, "attention_dropout": 0.0,
            # Both spellings: transformers 5 reads rope_parameters, 4.x rotary_pct/_emb_base.
            "rope_parameters": {"rope_type": "default", "rope_theta": ROTARY_BASE,
                                "partial_rotary_factor": 1.0},
            "rotary_pct": 1.0, "rotary_emb_base": ROTARY_BASE,
            **_common_config(cfg, tok_ids)}
  return config, {k: np.ascontiguousarray(v, np.float32) for k, v in t.items()}


def export(params: dict, cfg, tok_ids: dict) -> tuple[dict, dict]:
  if cfg.pos_embedding == "learned":
    return to_gpt2(params, cfg, tok_ids)
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
  if mc["scan_layers"]:
    params["layers"] = stack_layers(layers)
  else:
    params.update({f"layer_{i}": layer for i, layer in enumerate(layers)})
  return params
