"""hh_jax params <-> Hugging Face Llama / Mistral / Qwen2 tensors, as numpy, with no torch.

What maps to what (hh_jax/model/transformer.py on the left; HF Linear weights are [out, in],
ours [in, out], so every kernel is a transpose and a reshape):

- `norm=rmsnorm` (eps = rms_norm_eps), `mlp=swiglu`: `gate_proj` -> `wi_gate`, `up_proj` ->
  `wi_up`, `down_proj` -> `wo`; `input_layernorm` / `post_attention_layernorm` / `model.norm`
  -> `ln1` / `ln2` / `ln_f` (scale only);
- `q_proj` [heads·head_dim, d] -> `query` [d, heads, head_dim]; `k_proj`, `v_proj`
  [kv_heads·head_dim, d] -> `key`, `value` [d, kv_heads, head_dim] (`n_kv_heads`); `o_proj`
  -> `out` [heads, head_dim, d];
- rotary positions in HF's rotate-half convention, which is `transformer.rotary`'s, so q and
  k need no permutation (HF's own conversion from Meta's interleaved layout already did it);
  `rope_theta` and the `llama3` rope scaling carry over, any other rope type is refused;
- biases: Llama's `attention_bias` (q, k, v, o) is `attn_bias=all`, Qwen2's q/k/v biases are
  `attn_bias=qkv`, none is `none`; `mlp_bias` as is;
- `tie_word_embeddings=False`: `lm_head.weight` [vocab, d] -> `lm_head` [d, vocab].

Refused in one line naming the field: a sliding window, mixture-of-experts fields, an
unknown rope scaling type, an activation other than SiLU.
"""
from __future__ import annotations

import numpy as np

from hh_jax.errors import UserError
from hh_jax.interop import hf_common
from hh_jax.model import transformer

MODEL_TYPES = ("llama", "mistral", "qwen2")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _refuse(field: str, value, what: str):
  raise UserError(f"config.json has {field}={value!r} ({what}); hh_jax does not compute it, "
                  "so this checkpoint is not imported")


def model_config(hf: dict, scan_layers: bool) -> dict:
  """The `model` section of an hh_jax config for a Llama / Mistral / Qwen2 config.json."""
  mt = hf.get("model_type")
  if hf.get("sliding_window") is not None and (mt == "mistral" or hf.get("use_sliding_window")):
    _refuse("sliding_window", hf["sliding_window"], "sliding-window attention")
  if hf.get("use_sliding_window"):
    _refuse("use_sliding_window", True, "sliding-window attention")
  hf_common.refuse_moe(hf)
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    _refuse("hidden_act", act, "the SwiGLU gate is SiLU in hh_jax")
  d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
  bias = bool(hf.get("attention_bias", False))
  return hf_common.model_section(
      hf, scan_layers, size=f"hf-{mt}", n_layers=int(hf["num_hidden_layers"]), d_model=d,
      n_heads=heads, head_dim=int(hf.get("head_dim") or d // heads),
      n_kv_heads=int(hf.get("num_key_value_heads") or heads),
      mlp_dim=int(hf["intermediate_size"]), max_len=int(hf.get("max_position_embeddings", 2048)),
      norm="rmsnorm", mlp="swiglu", layer_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      attn_bias="qkv" if mt == "qwen2" else ("all" if bias else "none"),
      mlp_bias=bool(hf.get("mlp_bias", False)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), parallel_residual=False,
      **hf_common.rope_fields(hf))


def params_from_hf(tensors: dict, mc: dict) -> dict:
  """hh_jax params (numpy) from a LlamaForCausalLM / Qwen2ForCausalLM state dict."""
  get = hf_common.getter(tensors, "model.", "a LlamaForCausalLM / Qwen2ForCausalLM")
  d, h, kv, dh = mc["d_model"], mc["n_heads"], mc["n_kv_heads"], mc["head_dim"]
  bias = mc["attn_bias"]
  layers = []
  for i in range(mc["n_layers"]):
    g = lambda name, i=i: get(f"layers.{i}.{name}")  # noqa: E731
    attn = {"query": {"kernel": g("self_attn.q_proj.weight").T.reshape(d, h, dh)},
            "key": {"kernel": g("self_attn.k_proj.weight").T.reshape(d, kv, dh)},
            "value": {"kernel": g("self_attn.v_proj.weight").T.reshape(d, kv, dh)},
            "out": {"kernel": g("self_attn.o_proj.weight").T.reshape(h, dh, d)}}
    if bias != "none":
      for ours, theirs, n in (("query", "q_proj", h), ("key", "k_proj", kv), ("value", "v_proj", kv)):
        attn[ours]["bias"] = g(f"self_attn.{theirs}.bias").reshape(n, dh)
    if bias == "all":
      attn["out"]["bias"] = g("self_attn.o_proj.bias")
    mlp = {ours: {"kernel": g(f"mlp.{theirs}.weight").T}
           for ours, theirs in (("wi_gate", "gate_proj"), ("wi_up", "up_proj"), ("wo", "down_proj"))}
    if mc["mlp_bias"]:
      for ours, theirs in (("wi_gate", "gate_proj"), ("wi_up", "up_proj"), ("wo", "down_proj")):
        mlp[ours]["bias"] = g(f"mlp.{theirs}.bias")
    layers.append({"ln1": {"scale": g("input_layernorm.weight")},
                   "ln2": {"scale": g("post_attention_layernorm.weight")},
                   "attn": attn, "mlp": mlp})
  params = {"embedding": get("embed_tokens.weight"), "ln_f": {"scale": get("norm.weight")}}
  if not mc["tie_embeddings"]:
    params["lm_head"] = hf_common.array(tensors, "lm_head.weight").T  # [d, vocab]
  return hf_common.with_layers(params, layers, mc["scan_layers"])


def exportable(cfg) -> bool:
  a = lambda name: transformer.arch(cfg, name)  # noqa: E731
  return (cfg.pos_embedding == "rotary" and a("norm") == "rmsnorm" and a("mlp") == "swiglu"
          and a("attn_bias") in ("none", "all", "qkv") and not a("parallel_residual")
          and transformer.rotary_dims(cfg) == cfg.head_dim)


def to_hf(params: dict, cfg, tok_ids: dict) -> tuple[dict, dict]:
  """(config.json dict, {name: array}): Qwen2ForCausalLM for `attn_bias=qkv`, else LlamaForCausalLM."""
  a = lambda name: transformer.arch(cfg, name)  # noqa: E731
  mt = "qwen2" if a("attn_bias") == "qkv" else "llama"
  d, h, kv, dh = cfg.d_model, cfg.n_heads, transformer.kv_heads(cfg), cfg.head_dim
  t = {"model.embed_tokens.weight": hf_common.np32(params["embedding"]),
       "model.norm.weight": hf_common.np32(params["ln_f"]["scale"])}
  if not a("tie_embeddings"):
    t["lm_head.weight"] = hf_common.np32(params["lm_head"]).T
  for i, p in enumerate(hf_common.per_layer(params, cfg.n_layers)):
    pre, at, m = f"model.layers.{i}.", p["attn"], p["mlp"]
    t[pre + "input_layernorm.weight"] = p["ln1"]["scale"]
    t[pre + "post_attention_layernorm.weight"] = p["ln2"]["scale"]
    for ours, theirs, n in (("query", "q_proj", h), ("key", "k_proj", kv), ("value", "v_proj", kv)):
      t[pre + f"self_attn.{theirs}.weight"] = at[ours]["kernel"].reshape(d, n * dh).T
      if "bias" in at[ours]:
        t[pre + f"self_attn.{theirs}.bias"] = at[ours]["bias"].reshape(n * dh)
    t[pre + "self_attn.o_proj.weight"] = at["out"]["kernel"].reshape(h * dh, d).T
    if "bias" in at["out"]:
      t[pre + "self_attn.o_proj.bias"] = at["out"]["bias"]
    for ours, theirs in (("wi_gate", "gate_proj"), ("wi_up", "up_proj"), ("wo", "down_proj")):
      t[pre + f"mlp.{theirs}.weight"] = m[ours]["kernel"].T
      if "bias" in m[ours]:
        t[pre + f"mlp.{theirs}.bias"] = m[ours]["bias"]
  config = {"architectures": [_ARCHITECTURES[mt]], "model_type": mt,
            "num_hidden_layers": cfg.n_layers, "hidden_size": d, "num_attention_heads": h,
            "num_key_value_heads": kv, "head_dim": dh, "intermediate_size": cfg.mlp_dim,
            "max_position_embeddings": cfg.max_len, "hidden_act": "silu",
            "rms_norm_eps": float(cfg.layer_norm_eps), "attention_dropout": 0.0,
            "tie_word_embeddings": bool(a("tie_embeddings")),
            **hf_common.rope_config(cfg), **hf_common.token_config(cfg, tok_ids)}
  if mt == "llama":
    config.update(attention_bias=a("attn_bias") == "all", mlp_bias=bool(a("mlp_bias")))
  else:
    if a("mlp_bias"):
      raise UserError("model.mlp_bias=True has no Qwen2 form (its MLP has no biases); "
                      "export a model with mlp_bias=False")
    config.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
  return config, {k: np.ascontiguousarray(v, np.float32) for k, v in t.items()}
