"""Decoder-only transformer, applied as a pure function over a params pytree.

One block is `nn.scan`-ned over depth (compile time flat in the number of layers) and
wrapped in `nn.remat` with a policy named in the config. Every parameter carries logical
axis names; `hh_jax.parallel.rules` maps them onto the device mesh, so the same module
runs on one CPU or a pod slice.

The architecture fields (`ARCH_DEFAULTS`) make the same module GPT-2-like (the default:
LayerNorm, GELU, learned or rotary positions, tied head) or Llama-like (RMSNorm, SwiGLU,
grouped-query attention, rope θ and Llama 3.1 scaling, untied head, no biases), Qwen2 or
Pythia; `hh_jax.interop` maps Hugging Face checkpoints of each onto them.

Positions are counted over real tokens only (cumsum of the mask), so left- and
right-padding give the same activations at every real token: a PM score read at the EOC
token does not depend on how the batch was padded.

Decoding reuses the same module with a KV cache (`init_cache`, then `__call__(..., cache=)`):
new tokens attend to the cached keys/values plus each other, and come out with the
positions and logits the full forward pass would give them, so a sampler's log-probs are
the ones a loss computes. The param tree is the same with or without a cache; a sampler
on a CPU may pass beside it a read-only "decode" collection (`decode_weights`): the same
weights copied once into a layout that decode-sized GEMMs read faster.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hh_jax.errors import UserError
from hh_jax.model import cpu_gemm

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_REMAT_POLICIES = {
    "none": None,  # no remat at all
    "full": jax.checkpoint_policies.nothing_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}
REMAT_POLICIES = tuple(_REMAT_POLICIES)
NEG_INF = -1e9  # finite, so an all-masked (padding) row gives a harmless uniform softmax

# The architecture fields the Llama family added, with the values that keep a config (or a
# run's config.json) written before them the GPT-2-style model it always was.
ARCH_DEFAULTS = {
    "norm": "layernorm",  # layernorm | rmsnorm
    "mlp": "gelu",  # gelu (tanh approximation) | gelu_exact (erf) | swiglu
    "n_kv_heads": 0,  # key/value heads (GQA/MQA); 0: n_heads
    "attn_bias": "qvo",  # qvo: q, v, out (no key bias) | none | qkv (Qwen2) | all (NeoX)
    "mlp_bias": True,
    "tie_embeddings": True,  # LM head = embedding (else its own `lm_head` [embed, vocab])
    "parallel_residual": False,  # x + attn(ln1 x) + mlp(ln2 x) (GPT-NeoX/Pythia)
    "rope_theta": 10000.0,
    "rotary_fraction": 1.0,  # leading fraction of head_dim that is rotated (Pythia: 0.25)
    "rope_scaling": "none",  # none | llama3
    "rope_factor": 8.0, "rope_low_freq_factor": 1.0, "rope_high_freq_factor": 4.0,
    "rope_original_max_len": 8192,
}
NORMS, MLPS, ATTN_BIASES, ROPE_SCALINGS = (
    ("layernorm", "rmsnorm"), ("gelu", "gelu_exact", "swiglu"), ("qvo", "none", "qkv", "all"),
    ("none", "llama3"))


def arch(cfg, name: str):
  """cfg.<name>, or its ARCH_DEFAULTS value for a config written before the field existed."""
  return getattr(cfg, name, ARCH_DEFAULTS[name])


def kv_heads(cfg) -> int:
  return int(arch(cfg, "n_kv_heads")) or int(cfg.n_heads)


def check_arch(cfg) -> None:
  """The architecture fields' values, as one-line errors naming the field."""
  for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("attn_bias", ATTN_BIASES),
                        ("rope_scaling", ROPE_SCALINGS)):
    if arch(cfg, name) not in allowed:
      raise ValueError(f"model.{name}={arch(cfg, name)!r}; use one of {', '.join(allowed)}")
  if cfg.n_heads % kv_heads(cfg):
    raise ValueError(f"model.n_kv_heads={kv_heads(cfg)} does not divide model.n_heads="
                     f"{cfg.n_heads}; each key/value head serves a whole group of query heads")
  rot = rotary_dims(cfg)
  if cfg.pos_embedding == "rotary" and (rot % 2 or not 0 < rot <= cfg.head_dim):
    raise ValueError(f"model.rotary_fraction={arch(cfg, 'rotary_fraction')} rotates {rot} of "
                     f"head_dim={cfg.head_dim} dims; it must be an even count in (0, head_dim]")


def rotary_dims(cfg) -> int:
  return int(cfg.head_dim * float(arch(cfg, "rotary_fraction")))


def _default_rope(cfg) -> bool:
  return (float(arch(cfg, "rope_theta")) == 10000.0 and arch(cfg, "rope_scaling") == "none"
          and rotary_dims(cfg) == cfg.head_dim)


def rope_frequencies(cfg) -> np.ndarray:
  """Inverse frequencies [rotary_dims / 2] (float32), as transformers computes them.

  theta^(-2i/dim), then for `rope_scaling=llama3` Llama 3.1's rescaling
  (transformers' `_compute_llama3_parameters`): wavelengths longer than
  original_max_len / low_freq_factor are stretched by `factor`, shorter than
  original_max_len / high_freq_factor kept, and those between interpolated smoothly.
  """
  dim = rotary_dims(cfg)
  inv = (1.0 / (np.float32(arch(cfg, "rope_theta"))
                ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)
  if arch(cfg, "rope_scaling") == "llama3":
    factor = float(arch(cfg, "rope_factor"))
    low, high = float(arch(cfg, "rope_low_freq_factor")), float(arch(cfg, "rope_high_freq_factor"))
    old = float(arch(cfg, "rope_original_max_len"))
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    inv = np.where(medium, smoothed, scaled).astype(np.float32)
  return inv


def compute_dtype(name: str):
  """The jnp dtype `model.dtype` names; an unknown name is one line (`--config.model.dtype`)."""
  if name not in _DTYPES:
    raise UserError(f"model.dtype={name!r} is not supported; use one of {sorted(_DTYPES)}")
  return _DTYPES[name]


def _init(names, std=None):
  init = nn.initializers.normal(std) if std is not None else nn.initializers.zeros
  return nn.with_logical_partitioning(init, names)


def _constrain(x, names):
  return nn.with_logical_constraint(x, names)


def rotary(x, positions, base=10000.0, freqs=None):
  """Rotary position embedding on the last axis of x [batch, seq, heads, head_dim].

  The rotate-half convention (GPT-NeoX, HF Llama): dims i and i + half form a pair.
  freqs: inverse frequencies [half] (`rope_frequencies`), or None for base^(-i/half).
  """
  half = x.shape[-1] // 2
  if freqs is None:
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [half]
  angles = positions[..., None].astype(jnp.float32) * freqs  # [batch, seq, half]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def apply_rope(cfg, x, positions):
  """`rotary` on x [batch, seq, heads, head_dim] with the config's theta, scaling and fraction.

  The default (theta 10000, no scaling, whole head) is the original call, unchanged; a
  partial rotation (Pythia) rotates the leading `rotary_dims` and passes the rest through.
  """
  if _default_rope(cfg):
    return rotary(x, positions)
  rot, freqs = rotary_dims(cfg), jnp.asarray(rope_frequencies(cfg))
  if rot == x.shape[-1]:
    return rotary(x, positions, freqs=freqs)
  return jnp.concatenate([rotary(x[..., :rot], positions, freqs=freqs), x[..., rot:]], axis=-1)


def matmul(x, w, transpose_w: bool = False):
  """x [rows, in] @ w [in, out] (or @ w.T for w [out, in]): the model's every big GEMM.

  Chosen by the platform the program is lowered for, not the host tracing it: CPU
  programs get `cpu_gemm`'s hand-written backward pass, TPU/GPU programs a plain dot
  (their compilers already place the transposes well).
  """
  cpu = cpu_gemm.gemm_nt if transpose_w else cpu_gemm.gemm
  return jax.lax.platform_dependent(
      x, w, cpu=cpu, default=lambda x, w: jnp.dot(x, w.T if transpose_w else w))


def padded_matmul(x, w, d_out: int):
  """x [rows, in] @ w [in, d_out] for w stored padded as [in, d_out + pad] (`decode_weights`)."""
  return jnp.dot(x, w)[:, :d_out]  # [rows, d_out]


def _padded(w, dtype):
  """w [in, out] copied into its own [in, out + one cache line of columns] buffer."""
  pad = max(1, 64 // jnp.dtype(dtype).itemsize)
  return jnp.pad(w.astype(dtype), ((0, 0), (0, pad)))


def decode_weights(params, cfg):
  """The "decode" collection a sampler passes beside params (unstacked or not), built once.

  At decode time every GEMM is [batch, in] @ [in, out] for a handful of rows: it streams a
  whole weight for a few tokens, and XLA:CPU's kernel then reads it at well under the
  machine's bandwidth. Two layouts help it, so a sampler on a CPU copies the weights once
  into them: q, k and v fused into one [embed, (heads + 2·kv_heads)·head_dim] GEMM, and every weight's
  rows padded by one cache line. The model's row lengths are powers of two (2-32 KiB), so
  the rows a kernel reads together land in the same cache sets; the pad staggers them.
  Measured at 13m, batch 8, 128 new tokens on 2 cores, interleaved in one process (ms per
  token): plain 13.94, fused 12.94, fused + padded 11.91 (docs/sampling.md). The
  arithmetic is unchanged: the pad columns are zeros that are sliced off, and fusing q, k,
  v does not change any output's sum.
  """
  dtype = compute_dtype(cfg.dtype)
  params = nn.unbox(params)
  d = cfg.d_model

  def layer(p):
    a, m = p["attn"], p["mlp"]
    names = ("query", "key", "value")
    qkv = jnp.concatenate([a[n]["kernel"].reshape(d, -1) for n in names], 1)  # [embed, (heads + 2·kv_heads)·head_dim]
    # A projection without a bias (the key's always, every one under attn_bias=none) adds zeros.
    bias = jnp.concatenate([a[n]["bias"].reshape(-1) if "bias" in a[n]
                            else jnp.zeros((a[n]["kernel"].size // d,), jnp.float32)
                            for n in names]).astype(dtype)  # [(heads + 2·kv_heads)·head_dim]
    return {"attn": {"qkv": _padded(qkv, dtype), "qkv_bias": bias,
                     "out": {"kernel": _padded(a["out"]["kernel"].reshape(-1, d), dtype)}},
            "mlp": {n: {"kernel": _padded(m[n]["kernel"], dtype)} for n in m}}

  out = {}
  if "lm" in cfg.heads:
    head = params["embedding"].T if arch(cfg, "tie_embeddings") else params["lm_head"]
    out["head"] = _padded(head, dtype)  # [embed, vocab + pad]
  if cfg.scan_layers:
    out["layers"] = tuple(layer(p) for p in _per_layer(params["layers"], cfg.n_layers))
  else:
    out.update({f"layer_{i}": layer(params[f"layer_{i}"]) for i in range(cfg.n_layers)})
  return out


class LayerNorm(nn.Module):
  """Pre-LN in float32 whatever the compute dtype, with logically named params."""
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (d,))
    bias = self.param("bias", _init(("embed",)), (d,))
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
    return y.astype(x.dtype)


class RMSNorm(nn.Module):
  """RMSNorm (Llama, Qwen2) in float32: x / rms(x) · scale, no mean, no bias."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (d,))
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + self.eps) * scale
    return y.astype(x.dtype)


def _norm(cfg, name: str):
  cls = RMSNorm if arch(cfg, "norm") == "rmsnorm" else LayerNorm
  return cls(cfg.layer_norm_eps, name=name)


class Projection(nn.Module):
  """x @ kernel (+ bias): every dense layer of the model, its kernel possibly split into
  (heads × head_dim) on either side.

  Written out (not nn.Dense / nn.DenseGeneral) so the kernel is created at its real rank,
  its logical axis names apply to it as stored, and the product goes through `matmul`.
  """
  shape: tuple[int, ...]
  names: tuple[str, ...]
  std: float
  dtype: Any
  use_bias: bool = True
  n_in: int = 1  # leading kernel axes contracted with x's trailing axes

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _init(self.names, self.std), self.shape)
    n_in = self.n_in
    d_in, d_out = math.prod(self.shape[:n_in]), math.prod(self.shape[n_in:])
    lead = x.shape[:-n_in]  # [batch, seq]
    # One 2-D GEMM over the flattened axes: XLA:CPU runs it ~1.5× faster than the same
    # contraction written as a multi-axis einsum, and the reshapes are free.
    x2 = x.reshape(-1, d_in).astype(self.dtype)  # [batch·seq, d_in]
    if self.has_variable("decode", "kernel"):  # a sampler's padded copy (decode_weights)
      y = padded_matmul(x2, self.get_variable("decode", "kernel"), d_out)
    else:
      y = matmul(x2, kernel.reshape(d_in, d_out).astype(self.dtype))  # [batch·seq, d_out]
    y = y.reshape(*lead, *self.shape[n_in:])
    if not self.use_bias:
      return y
    bias = self.param("bias", _init(self.names[n_in:]), self.shape[n_in:])
    return y + bias.astype(self.dtype)


class Attention(nn.Module):
  cfg: Any

  @nn.compact
  def __call__(self, x, bias, positions, kv=None):
    """Returns (y, new cache entry); the entry is None without a cache.

    kv: optional (keys [batch, heads, head_dim, cache_len], values
    [batch, heads, cache_len, head_dim], index []) of this layer's cache; then `bias` is
    [batch, seq, cache_len] over cache slots, counting these tokens as written at `index`.
    """
    cfg = self.cfg
    dtype = compute_dtype(cfg.dtype)
    std = cfg.init_std
    n_kv, dh = kv_heads(cfg), cfg.head_dim
    group = cfg.n_heads // n_kv  # query heads per key/value head (1: plain multi-head)
    kv_name = "heads" if group == 1 else "kv_heads"
    bias_kind = arch(cfg, "attn_bias")
    if self.has_variable("decode", "qkv"):
      # A sampler's fused copy (decode_weights): one GEMM for q, k and v (zeros where a bias is absent).
      b, s = x.shape[:2]
      widths = (cfg.n_heads * dh, n_kv * dh, n_kv * dh)
      qkv = padded_matmul(x.reshape(b * s, -1).astype(dtype), self.get_variable("decode", "qkv"),
                          sum(widths))  # [batch·seq, (heads + 2·kv_heads)·head_dim]
      qkv = qkv + self.get_variable("decode", "qkv_bias")
      q = qkv[:, :widths[0]].reshape(b, s, cfg.n_heads, dh)  # [batch, seq, heads, head_dim]
      k = qkv[:, widths[0]:widths[0] + widths[1]].reshape(b, s, n_kv, dh)  # [batch, seq, kv_heads, head_dim]
      v = qkv[:, widths[0] + widths[1]:].reshape(b, s, n_kv, dh)
    else:
      q = Projection((cfg.d_model, cfg.n_heads, dh), ("embed", "heads", "kv"), std, dtype,
                     bias_kind != "none", name="query")(x)  # [batch, seq, heads, head_dim]
      # No key bias by default: without rotary positions softmax is invariant to it, so its
      # gradient is pure rounding noise that Adam would amplify into arbitrary updates.
      # Qwen2 and NeoX rotate the key after its bias, where it does change the scores.
      k = Projection((cfg.d_model, n_kv, dh), ("embed", kv_name, "kv"), std, dtype,
                     bias_kind in ("qkv", "all"), name="key")(x)  # [batch, seq, kv_heads, head_dim]
      v = Projection((cfg.d_model, n_kv, dh), ("embed", kv_name, "kv"), std, dtype,
                     bias_kind != "none", name="value")(x)
    if cfg.pos_embedding == "rotary":
      q, k = apply_rope(cfg, q, positions), apply_rope(cfg, k, positions)
    q = _constrain(q, ("batch", "act_length", "act_heads", None))
    q = q * (cfg.head_dim ** -0.5)
    if group > 1:
      out, new_kv = _grouped_attention(q, k, v, bias, kv, group, dtype)
    elif kv is None:
      # Heads-major copies first: the score and value dots then run as plain batched GEMMs,
      # which XLA:CPU executes markedly faster than with the heads axis in the middle.
      qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # [batch, heads, seq, head_dim]
      logits = jnp.einsum("bhqd,bhkd->bhqk", qh, kh).astype(jnp.float32)  # [batch, heads, q, k]
      probs = jax.nn.softmax(logits + bias[:, None, :, :], axis=-1).astype(dtype)
      out = jnp.einsum("bhqk,bhkd->bhqd", probs, vh).transpose(0, 2, 1, 3)  # [batch, seq, heads, head_dim]
      new_kv = None
    else:
      # Write first, then attend over the whole cache: the old cache is never read again,
      # so a decode loop updates it in place (reading it and then writing it makes XLA copy
      # every layer's cache at every token). The layouts are the ones the two dots consume
      # as they are (keys with head_dim before length, values with length before head_dim).
      k_cache, v_cache = _write_cache(kv, k, v)
      logits = jnp.einsum("bqhd,bhdk->bhqk", q, k_cache.astype(dtype)).astype(jnp.float32)
      probs = jax.nn.softmax(logits + bias[:, None, :, :], axis=-1).astype(dtype)  # [batch, heads, q, cache_len]
      out = jnp.einsum("bhqk,bhkd->bqhd", probs, v_cache.astype(dtype))  # [batch, seq, heads, head_dim]
      new_kv = (k_cache, v_cache)
    # Output projection scaled down by depth, as in GPT-2, so the residual stream starts calm.
    out_std = std / (2 * cfg.n_layers) ** 0.5
    y = Projection((cfg.n_heads, cfg.head_dim, cfg.d_model), ("heads", "kv", "embed"), out_std,
                   dtype, bias_kind in ("qvo", "all"), n_in=2, name="out")(out)  # [batch, seq, embed]
    return y, new_kv


def _write_cache(kv, k, v):
  """This layer's cache with k, v [batch, seq, kv_heads, head_dim] written at its index."""
  k_cache, v_cache, index = kv
  k_cache = jax.lax.dynamic_update_slice(
      k_cache, k.transpose(0, 2, 3, 1).astype(k_cache.dtype), (0, 0, 0, index))
  v_cache = jax.lax.dynamic_update_slice(
      v_cache, v.transpose(0, 2, 1, 3).astype(v_cache.dtype), (0, 0, index, 0))
  return _constrain(k_cache, CACHE_AXES["k"]), _constrain(v_cache, CACHE_AXES["v"])


def _grouped_attention(q, k, v, bias, kv, group: int, dtype):
  """Grouped-query attention: query head j reads key/value head j // group (HF's repeat_kv).

  q [batch, seq, heads, head_dim]; k, v [batch, seq, kv_heads, head_dim]; the keys and
  values are never repeated, so the cache holds kv_heads heads (`init_cache`). Returns
  (out [batch, seq, heads, head_dim], the updated (k, v) cache or None).
  """
  b, s, h, dh = q.shape
  qg = q.reshape(b, s, h // group, group, dh)  # [batch, seq, kv_heads, group, head_dim]
  if kv is None:
    logits = jnp.einsum("bqkgd,blkd->bkgql", qg, k).astype(jnp.float32)  # [batch, kv_heads, group, q, k]
    probs = jax.nn.softmax(logits + bias[:, None, None], axis=-1).astype(dtype)
    out = jnp.einsum("bkgql,blkd->bqkgd", probs, v)
    return out.reshape(b, s, h, dh), None
  k_cache, v_cache = _write_cache(kv, k, v)
  logits = jnp.einsum("bqkgd,bkdl->bkgql", qg, k_cache.astype(dtype)).astype(jnp.float32)
  probs = jax.nn.softmax(logits + bias[:, None, None], axis=-1).astype(dtype)  # [batch, kv_heads, group, q, cache_len]
  out = jnp.einsum("bkgql,bkld->bqkgd", probs, v_cache.astype(dtype))
  return out.reshape(b, s, h, dh), (k_cache, v_cache)


class Mlp(nn.Module):
  cfg: Any

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dtype = compute_dtype(cfg.dtype)
    kind, use_bias = arch(cfg, "mlp"), bool(arch(cfg, "mlp_bias"))
    wi = lambda name: Projection((cfg.d_model, cfg.mlp_dim), ("embed", "mlp"), cfg.init_std,  # noqa: E731
                                 dtype, use_bias, name=name)(x)  # [batch, seq, mlp]
    if kind == "swiglu":  # Llama: silu(x W_gate) * (x W_up)
      h = nn.silu(wi("wi_gate")) * wi("wi_up")
    else:  # "gelu": the tanh approximation (GPT-2's gelu_new); "gelu_exact": erf (NeoX's gelu)
      h = nn.gelu(wi("wi"), approximate=kind == "gelu")
    h = _constrain(h, ("batch", "act_length", "act_mlp"))
    out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
    return Projection((cfg.mlp_dim, cfg.d_model), ("mlp", "embed"), out_std, dtype, use_bias,
                      name="wo")(h)  # [batch, seq, embed]


class Block(nn.Module):
  """Pre-LN residual block; its signature fits `nn.scan` (carry, per-layer input)."""
  cfg: Any

  @nn.compact
  def __call__(self, x, bias, positions, kv=None):
    """kv: this layer's cache (keys, values, index), or None; returns (x, updated (k, v) or None)."""
    h, new_kv = Attention(self.cfg, name="attn")(_norm(self.cfg, "ln1")(x), bias, positions, kv)
    if arch(self.cfg, "parallel_residual"):  # both branches read the block's input
      x = x + h + Mlp(self.cfg, name="mlp")(_norm(self.cfg, "ln2")(x))
    else:
      x = x + h
      x = x + Mlp(self.cfg, name="mlp")(_norm(self.cfg, "ln2")(x))
    x = _constrain(x, ("batch", "act_length", "act_embed"))
    return x, new_kv


def _block_class(cfg):
  if cfg.remat_policy not in _REMAT_POLICIES:
    raise ValueError(f"model.remat_policy={cfg.remat_policy!r} is unknown; "
                     f"use one of {', '.join(REMAT_POLICIES)}")
  if cfg.remat_policy == "none":
    return Block
  return nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)


def _per_layer(layers, n_layers: int):
  """Per-layer param trees from a scanned stack (leaves [layers, ...]) or an unstacked tuple."""
  if isinstance(layers, (tuple, list)):
    return tuple(layers)
  return tuple(jax.tree.map(lambda a, i=i: a[i], layers) for i in range(n_layers))


def unstack_layers(params, cfg):
  """Params of a scanned model with the stack split per layer, for decoding loops.

  The model accepts either form with a cache; slicing once before a `while_loop` keeps
  the per-token step from copying every weight out of the stack.
  """
  if not cfg.scan_layers:
    return params
  return {**params, "layers": _per_layer(nn.unbox(params["layers"]), cfg.n_layers)}


def attention_bias(mask):
  """Causal + key-padding additive bias from a [batch, seq] mask of real tokens."""
  seq = mask.shape[1]
  causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))  # [q, k]
  allowed = causal[None] & mask[:, None, :].astype(bool)  # [batch, q, k]
  return jnp.where(allowed, 0.0, NEG_INF).astype(jnp.float32)


def positions_from_mask(mask, offset=None):
  """Position of each token among the real ones: padding never shifts a position.

  offset: [batch] real tokens before these (those already in a KV cache), or None.
  """
  counts = jnp.cumsum(mask.astype(jnp.int32), axis=-1)  # [batch, seq]
  if offset is not None:
    counts = counts + offset[:, None]
  return jnp.maximum(counts - 1, 0)  # [batch, seq]


CACHE_AXES = {"k": ("batch", "act_heads", None, "act_length"),  # of each layer's array
              "v": ("batch", "act_heads", "act_length", None)}


def init_cache(cfg, batch: int, length: int):
  """An empty KV cache for `length` tokens, to pass as `Transformer(cfg)(..., cache=)`.

  k: one [batch, kv_heads, head_dim, length] and v: one [batch, kv_heads, length, head_dim] per
  layer (tuples), in the compute dtype and the layouts attention reads without a transpose;
  separate buffers, so a decode step updates each in place and never slices a stack; mask:
  [batch, length] 1 on slots holding a real token; index: [] the next free slot, shared by
  all rows (prompts are left-padded to one length, so every row writes the same slot).
  """
  heads, head_dim = kv_heads(cfg), cfg.head_dim  # grouped-query: the key/value heads only
  dtype = compute_dtype(cfg.dtype)
  return {"k": tuple(jnp.zeros((batch, heads, head_dim, length), dtype)
                    for _ in range(cfg.n_layers)),
          "v": tuple(jnp.zeros((batch, heads, length, head_dim), dtype)
                    for _ in range(cfg.n_layers)),
          "mask": jnp.zeros((batch, length), jnp.int32), "index": jnp.zeros((), jnp.int32)}


def _cache_bias(cache_mask, index, seq: int):
  """Bias of `seq` new tokens over the cache slots once they are written: [batch, seq, len].

  cache_mask [batch, len] already holds the new tokens' mask at [index, index + seq); new
  token t sees a real slot j when j <= index + t (causal among the new tokens).
  """
  slots = jnp.arange(cache_mask.shape[1])  # [len]
  own = index + jnp.arange(seq)  # [seq] the slot each new token is written to
  allowed = (slots[None, :] <= own[:, None])[None] & cache_mask[:, None, :].astype(bool)
  return jnp.where(allowed, 0.0, NEG_INF).astype(jnp.float32)  # [batch, seq, len]


class Transformer(nn.Module):
  """Trunk plus the heads named in `cfg.heads`.

  Returns a dict: `logits` [batch, seq, vocab] from the LM head (the embedding, or
  `lm_head` [embed, vocab] under tie_embeddings=False), `scalar`
  [batch, seq] from the scalar head (PM reward or value), and `hidden` [batch, seq, embed].
  """
  cfg: Any

  def setup(self):
    cfg = self.cfg
    for head in cfg.heads:
      if head not in ("lm", "scalar"):
        raise ValueError(f"model.heads contains {head!r}; use 'lm' and/or 'scalar'")
    check_arch(cfg)
    self.embed = self.param("embedding", _init(("vocab", "embed"), cfg.init_std),
                            (cfg.vocab_size, cfg.d_model))
    self.tied = bool(arch(cfg, "tie_embeddings"))
    if "lm" in cfg.heads and not self.tied:
      self.lm_head = self.param("lm_head", _init(("embed", "vocab"), cfg.init_std),
                                (cfg.d_model, cfg.vocab_size))
    if cfg.pos_embedding == "learned":
      self.pos_embed = self.param("pos_embedding", _init(("pos", "embed"), cfg.init_std),
                                  (cfg.max_len, cfg.d_model))
    elif cfg.pos_embedding != "rotary":
      raise ValueError(f"model.pos_embedding={cfg.pos_embedding!r}; use 'learned' or 'rotary'")
    block = _block_class(cfg)
    if cfg.scan_layers:
      self.layers = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(nn.broadcast, nn.broadcast, 0), length=cfg.n_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    else:
      self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.n_layers)]
    self.ln_f = _norm(cfg, "ln_f")
    if "scalar" in cfg.heads:
      self.scalar_head = nn.Dense(1, dtype=jnp.float32, name="scalar_head",
                                  kernel_init=_init(("embed", None), cfg.init_std),
                                  bias_init=_init((None,)))

  def _decode_layers(self, x, bias, positions, kv):
    """The layers one at a time over per-layer caches: (x, (new keys, new values) per layer).

    A scanned stack would slice every layer's weights out of the stacked params at every
    step: a copy of all the weights per token, the decode loop's largest cost. So with
    scanned params each layer runs on its own slice, and a decode loop passes params from
    `unstack_layers` (sliced once, before the loop) so that nothing is copied per token.
    """
    if self.cfg.scan_layers:
      if self.is_initializing():
        raise ValueError("initialize the model without a cache, then decode with its params")
      per_layer = _per_layer(nn.unbox(self.variables["params"]["layers"]), self.cfg.n_layers)
      block = Block(self.cfg, parent=None)
      dec = self.variables.get("decode", {}).get("layers")
      layers = [functools.partial(block.apply, {"params": p, **({"decode": dec[i]} if dec else {})})
                for i, p in enumerate(per_layer)]
    else:
      layers = self.layers
    new_k, new_v = [], []
    for layer, k, v in zip(layers, kv[0], kv[1]):
      x, (k, v) = layer(x, bias, positions, (k, v, kv[2]))
      new_k.append(k)
      new_v.append(v)
    return x, (tuple(new_k), tuple(new_v))

  def __call__(self, tokens, mask=None, cache=None, last_only=False, head_span=None):
    """tokens, mask: [batch, seq] int; mask is 1 on real tokens (default: all real).

    cache: a KV cache from `init_cache` holding the tokens before these; they are appended
    at `cache["index"]` and the updated cache comes back as `out["cache"]`. last_only:
    heads on the last position only ([batch, 1, ...]), all a sampler needs after a prefill.
    head_span: (start, stop), static: heads (and `hidden`) on those positions only
    ([batch, stop - start, ...]): PPO reads the LM head on the response alone, and the
    vocab-wide GEMM and its gradient skip the prompt.
    """
    cfg = self.cfg
    dtype = compute_dtype(cfg.dtype)
    if mask is None:
      mask = jnp.ones_like(tokens)
    offset = None if cache is None else jnp.sum(cache["mask"], axis=-1)  # [batch]
    positions = positions_from_mask(mask, offset)  # [batch, seq]
    # Gather from the table all-gathered (as FSDP does for every layer's weights): a gather
    # across shards would make XLA replicate it anyway, with a warning per step.
    table = _constrain(self.embed, (None, None))
    x = jnp.take(table, tokens, axis=0)  # [batch, seq, embed]
    if cfg.pos_embedding == "learned":
      x = x + jnp.take(_constrain(self.pos_embed, (None, None)), positions, axis=0)
    x = _constrain(x.astype(dtype), ("batch", "act_length", "act_embed"))
    if cache is None:
      bias, kv = attention_bias(mask), None  # [batch, seq, seq]
    else:
      index = cache["index"]
      cache_mask = jax.lax.dynamic_update_slice(cache["mask"], mask.astype(jnp.int32), (0, index))
      bias = _cache_bias(cache_mask, index, tokens.shape[1])  # [batch, seq, cache_len]
      kv = (cache["k"], cache["v"], index)  # per layer [batch, heads, ...] (see init_cache)
    if kv is not None:
      x, new_kv = self._decode_layers(x, bias, positions, kv)
    elif cfg.scan_layers:
      x, _ = self.layers(x, bias, positions, None)
    else:
      for layer in self.layers:
        x, _ = layer(x, bias, positions, None)
    if last_only:
      x = x[:, -1:]
    elif head_span is not None:
      x = x[:, head_span[0]:head_span[1]]
    h = self.ln_f(x)  # [batch, seq, embed]
    out = {"hidden": h}
    if cache is not None:
      out["cache"] = {"k": new_kv[0], "v": new_kv[1], "mask": cache_mask,
                      "index": index + tokens.shape[1]}
    if "lm" in cfg.heads:
      h2 = h.reshape(-1, cfg.d_model).astype(dtype)  # [batch·seq, embed]
      if self.has_variable("decode", "head"):
        logits = padded_matmul(h2, self.get_variable("decode", "head"), cfg.vocab_size)
      elif self.tied:
        logits = matmul(h2, self.embed.astype(dtype), transpose_w=True)
      else:
        logits = matmul(h2, self.lm_head.astype(dtype))
      logits = logits.reshape(*h.shape[:2], cfg.vocab_size)  # [batch, seq, vocab]
      out["logits"] = _constrain(logits.astype(jnp.float32), ("batch", "act_length", "act_vocab"))
    if "scalar" in cfg.heads:
      out["scalar"] = self.scalar_head(h.astype(jnp.float32))[..., 0]  # [batch, seq]
    return out
