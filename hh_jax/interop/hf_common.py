"""What every Hugging Face family's weight map shares: numpy leaves, layer stacks, tensor
lookups with one-line errors, the rope and token fields of config.json, the refusals."""
from __future__ import annotations

from typing import Any

import numpy as np

from hh_jax.errors import UserError
from hh_jax.model import transformer

# The rope scaling types hh_jax computes exactly ("default" is none).
ROPE_TYPES = ("default", "llama3")


def np32(x) -> np.ndarray:
  return np.asarray(getattr(x, "value", x), np.float32)  # a flax Partitioned box or an array


def per_layer(params: dict, n_layers: int) -> list[dict]:
  """One numpy tree per layer, from a scanned stack (`layers`, leaves [n_layers, ...]) or
  unrolled `layer_0`, `layer_1`, ..."""
  def tree_map(f, t):
    return {k: tree_map(f, v) for k, v in t.items()} if isinstance(t, dict) else f(t)
  if "layers" in params:
    stack = params["layers"]
    return [tree_map(lambda a, i=i: np32(a)[i], stack) for i in range(n_layers)]
  return [tree_map(np32, params[f"layer_{i}"]) for i in range(n_layers)]


def stack_layers(layers: list[dict]) -> dict:
  """The inverse of `per_layer` for scanned models: leaves stacked on a leading [n_layers] axis."""
  first = layers[0]
  if not isinstance(first, dict):
    return np.stack(layers)
  return {k: stack_layers([layer[k] for layer in layers]) for k in first}


def with_layers(params: dict, layers: list[dict], scan_layers: bool) -> dict:
  if scan_layers:
    return {**params, "layers": stack_layers(layers)}
  return {**params, **{f"layer_{i}": layer for i, layer in enumerate(layers)}}


def array(tensors: dict[str, Any], name: str, what: str = "the model config.json names") -> np.ndarray:
  if name not in tensors:
    raise UserError(f"the checkpoint lacks {name}; it is not {what}")
  return np.asarray(tensors[name], np.float32)


def getter(tensors: dict, prefix: str, what: str):
  """name -> float32 array of `prefix + name`, a missing tensor one line naming it."""
  return lambda name: array(tensors, prefix + name, what)


def refuse_moe(hf: dict) -> None:
  for field in ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size"):
    if hf.get(field):
      raise UserError(f"config.json has {field}={hf[field]!r} (a mixture of experts); hh_jax "
                      "has dense MLPs only, so this checkpoint is not imported")


def rope_fields(hf: dict, theta_key: str = "rope_theta", default_theta: float = 10000.0) -> dict:
  """rope_theta, rotary_fraction and the llama3 scaling fields from either spelling of
  config.json: transformers 5's `rope_parameters` or 4.x's `rope_theta` + `rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  merged = {**scaling, **params}
  kind = merged.get("rope_type", merged.get("type", "default"))
  if kind not in ROPE_TYPES:
    field = "rope_parameters" if params else "rope_scaling"
    raise UserError(f"config.json has {field}.rope_type={kind!r}; hh_jax computes rope types "
                    f"{', '.join(ROPE_TYPES)} only, so this checkpoint is not imported")
  theta = float(merged.get("rope_theta", hf.get(theta_key, default_theta)))
  fraction = float(merged.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)))
  out = {"pos_embedding": "rotary", "rope_theta": theta, "rotary_fraction": fraction,
         "rope_scaling": "none" if kind == "default" else kind}
  defaults = transformer.ARCH_DEFAULTS
  out.update({k: defaults[k] for k in ("rope_factor", "rope_low_freq_factor",
                                      "rope_high_freq_factor", "rope_original_max_len")})
  if kind == "llama3":
    out.update(rope_factor=float(merged["factor"]),
               rope_low_freq_factor=float(merged["low_freq_factor"]),
               rope_high_freq_factor=float(merged["high_freq_factor"]),
               rope_original_max_len=int(merged["original_max_position_embeddings"]))
  return out


def rope_config(cfg) -> dict:
  """config.json's rope fields for cfg, in both spellings (transformers 5 and 4.x)."""
  a = lambda name: transformer.arch(cfg, name)  # noqa: E731
  params = {"rope_type": "default", "rope_theta": float(a("rope_theta"))}
  if a("rope_scaling") == "llama3":
    params.update(rope_type="llama3", factor=float(a("rope_factor")),
                  low_freq_factor=float(a("rope_low_freq_factor")),
                  high_freq_factor=float(a("rope_high_freq_factor")),
                  original_max_position_embeddings=int(a("rope_original_max_len")))
  legacy = {k: v for k, v in params.items() if k != "rope_theta"}
  return {"rope_parameters": params, "rope_theta": float(a("rope_theta")),
          "rope_scaling": legacy if a("rope_scaling") != "none" else None}


def token_config(cfg, tok_ids: dict) -> dict:
  return {"vocab_size": int(cfg.vocab_size), "initializer_range": float(cfg.init_std),
          "bos_token_id": tok_ids.get("bos", tok_ids["eos"]), "eos_token_id": tok_ids["eos"],
          "pad_token_id": tok_ids["pad"], "dtype": "float32", "torch_dtype": "float32",
          "use_cache": True}


def model_section(hf: dict, scan_layers: bool, **fields) -> dict:
  """A full `model` section: the fields given, every other one at the project's value."""
  mc = {"dtype": "float32", "remat_policy": "none", "scan_layers": bool(scan_layers),
        "heads": ["lm"], "init_std": float(hf.get("initializer_range", 0.02)),
        "vocab_size": int(hf["vocab_size"]), **transformer.ARCH_DEFAULTS}
  mc.update(fields)
  return mc
