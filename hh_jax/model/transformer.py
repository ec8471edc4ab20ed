"""Decoder-only transformer, applied as a pure function over a params pytree.

One block is `nn.scan`-ned over depth (compile time flat in the number of layers) and
wrapped in `nn.remat` with a policy named in the config. Every parameter carries logical
axis names; `hh_jax.parallel.rules` maps them onto the device mesh, so the same module
runs on one CPU or a pod slice.

Positions are counted over real tokens only (cumsum of the mask), so left- and
right-padding give the same activations at every real token: a PM score read at the EOC
token does not depend on how the batch was padded.

Decoding reuses the same module with a KV cache (`init_cache`, then `__call__(..., cache=)`):
new tokens attend to the cached keys/values plus each other, and come out with the
positions and logits the full forward pass would give them, so a sampler's log-probs are
the ones a loss computes. The param tree is the same with or without a cache.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def compute_dtype(name: str):
  if name not in _DTYPES:
    raise ValueError(f"model.dtype={name!r} is not supported; use one of {sorted(_DTYPES)}")
  return _DTYPES[name]


def _init(names, std=None):
  init = nn.initializers.normal(std) if std is not None else nn.initializers.zeros
  return nn.with_logical_partitioning(init, names)


def _constrain(x, names):
  return nn.with_logical_constraint(x, names)


def rotary(x, positions, base=10000.0):
  """Rotary position embedding on the last axis of x [batch, seq, heads, head_dim]."""
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [half]
  angles = positions[..., None].astype(jnp.float32) * freqs  # [batch, seq, half]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


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


class Projection(nn.Module):
  """x @ kernel with a bias, for kernels whose in/out axes are split (heads × head_dim).

  Written out (not nn.DenseGeneral) so the kernel is created at its real rank and its
  logical axis names apply to it as stored.
  """
  shape: tuple[int, ...]
  names: tuple[str, ...]
  std: float
  dtype: Any
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _init(self.names, self.std), self.shape)
    n_in = 1 if self.names[0] == "embed" else 2  # contract embed, or (heads, kv)
    d_in, d_out = math.prod(self.shape[:n_in]), math.prod(self.shape[n_in:])
    lead = x.shape[:-n_in]  # [batch, seq]
    # One 2-D GEMM over the flattened axes: XLA:CPU runs it ~1.5× faster than the same
    # contraction written as a multi-axis einsum, and the reshapes are free.
    y = jnp.dot(x.reshape(-1, d_in).astype(self.dtype),
                kernel.reshape(d_in, d_out).astype(self.dtype))  # [batch·seq, d_out]
    y = y.reshape(*lead, *self.shape[n_in:])
    if not self.use_bias:
      return y
    bias = self.param("bias", _init(self.names[n_in:]), self.shape[n_in:])
    return y + bias.astype(self.dtype)


class Attention(nn.Module):
  cfg: Any

  @nn.compact
  def __call__(self, x, bias, positions, kv=None):
    """Returns (y, (k, v)) with k, v the new tokens' keys/values [batch, seq, heads, head_dim].

    kv: optional cached keys [batch, heads, head_dim, cache_len] and values
    [batch, heads, cache_len, head_dim] of earlier tokens; then `bias` is
    [batch, seq, cache_len + seq] over (cache slots, new tokens), and the new k/v come back
    in the cache's layouts.
    """
    cfg = self.cfg
    dtype = compute_dtype(cfg.dtype)
    std = cfg.init_std
    qkv_shape = (cfg.d_model, cfg.n_heads, cfg.head_dim)
    proj = lambda name, bias=True: Projection(  # noqa: E731
        qkv_shape, ("embed", "heads", "kv"), std, dtype, bias, name=name)
    q = proj("query")(x)  # [batch, seq, heads, head_dim]
    # No key bias: softmax is invariant to it, so its gradient is pure rounding noise that
    # Adam would amplify into arbitrary updates.
    k = proj("key", bias=False)(x)
    v = proj("value")(x)
    if cfg.pos_embedding == "rotary":
      q, k = rotary(q, positions), rotary(k, positions)
    q = _constrain(q, ("batch", "act_length", "act_heads", None))
    q = q * (cfg.head_dim ** -0.5)
    if kv is None:
      # Heads-major copies first: the score and value dots then run as plain batched GEMMs,
      # which XLA:CPU executes markedly faster than with the heads axis in the middle.
      qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # [batch, heads, seq, head_dim]
      logits = jnp.einsum("bhqd,bhkd->bhqk", qh, kh).astype(jnp.float32)  # [batch, heads, q, k]
      probs = jax.nn.softmax(logits + bias[:, None, :, :], axis=-1).astype(dtype)
      out = jnp.einsum("bhqk,bhkd->bhqd", probs, vh).transpose(0, 2, 1, 3)  # [batch, seq, heads, head_dim]
    else:
      logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)  # [batch, heads, q, new]
      # Cached and new keys as two dots joined in the softmax, so the cache is only read,
      # never copied: in a decode loop it is updated in place once, after all layers. Its
      # layouts are the ones the two dots consume as they are (keys with head_dim before
      # length, values with length before head_dim): any other layout makes XLA transpose
      # the whole cache at every step.
      k_cache, v_cache = kv
      cache_len = v_cache.shape[2]
      old = jnp.einsum("bqhd,bhdk->bhqk", q, k_cache.astype(dtype)).astype(jnp.float32)
      logits = jnp.concatenate([old, logits], axis=-1)  # [batch, heads, q, cache_len + q]
      probs = jax.nn.softmax(logits + bias[:, None, :, :], axis=-1).astype(dtype)
      out = (jnp.einsum("bhqk,bhkd->bqhd", probs[..., :cache_len], v_cache.astype(dtype))
             + jnp.einsum("bhqk,bkhd->bqhd", probs[..., cache_len:], v))
      k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)  # the cache's layouts
    # Output projection scaled down by depth, as in GPT-2, so the residual stream starts calm.
    out_std = std / (2 * cfg.n_layers) ** 0.5
    y = Projection((cfg.n_heads, cfg.head_dim, cfg.d_model), ("heads", "kv", "embed"), out_std,
                   dtype, name="out")(out)  # [batch, seq, embed]
    return y, (k, v)


class Mlp(nn.Module):
  cfg: Any

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dtype = compute_dtype(cfg.dtype)
    h = nn.Dense(cfg.mlp_dim, dtype=dtype, name="wi",
                 kernel_init=_init(("embed", "mlp"), cfg.init_std),
                 bias_init=_init(("mlp",)))(x)  # [batch, seq, mlp]
    h = _constrain(nn.gelu(h), ("batch", "act_length", "act_mlp"))
    out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
    return nn.Dense(cfg.d_model, dtype=dtype, name="wo",
                    kernel_init=_init(("mlp", "embed"), out_std),
                    bias_init=_init(("embed",)))(h)  # [batch, seq, embed]


class Block(nn.Module):
  """Pre-LN residual block; its signature fits `nn.scan` (carry, per-layer input)."""
  cfg: Any

  @nn.compact
  def __call__(self, x, bias, positions, kv=None):
    """kv: this layer's cached (keys, values), or None; returns (x, new (k, v) or None)."""
    h, new_kv = Attention(self.cfg, name="attn")(
        LayerNorm(self.cfg.layer_norm_eps, name="ln1")(x), bias, positions, kv)
    x = x + h
    x = x + Mlp(self.cfg, name="mlp")(LayerNorm(self.cfg.layer_norm_eps, name="ln2")(x))
    x = _constrain(x, ("batch", "act_length", "act_embed"))
    return x, (None if kv is None else new_kv)


def _block_class(cfg):
  if cfg.remat_policy not in _REMAT_POLICIES:
    raise ValueError(f"model.remat_policy={cfg.remat_policy!r} is unknown; "
                     f"use one of {', '.join(REMAT_POLICIES)}")
  if cfg.remat_policy == "none":
    return Block
  return nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)


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


CACHE_AXES = {"k": ("layers", "batch", "act_heads", None, "act_length"),
              "v": ("layers", "batch", "act_heads", "act_length", None)}


def init_cache(cfg, batch: int, length: int):
  """An empty KV cache for `length` tokens, to pass as `Transformer(cfg)(..., cache=)`.

  k: [layers, batch, heads, head_dim, length] and v: [layers, batch, heads, length, head_dim]
  in the compute dtype (the layouts attention reads without a transpose); mask:
  [batch, length] 1 on slots holding a real token; index: [] the next free slot, shared by
  all rows (prompts are left-padded to one length, so every row writes the same slot).
  """
  heads, head_dim = cfg.n_heads, cfg.head_dim
  dtype = compute_dtype(cfg.dtype)
  return {"k": jnp.zeros((cfg.n_layers, batch, heads, head_dim, length), dtype),
          "v": jnp.zeros((cfg.n_layers, batch, heads, length, head_dim), dtype),
          "mask": jnp.zeros((batch, length), jnp.int32), "index": jnp.zeros((), jnp.int32)}


def _cache_bias(cache_mask, mask):
  """Bias of new tokens over (cache slots, new tokens): [batch, seq, cache_len + seq]."""
  seq = mask.shape[1]
  old = jnp.where(cache_mask.astype(bool), 0.0, NEG_INF).astype(jnp.float32)  # [batch, len]
  old = jnp.broadcast_to(old[:, None, :], (mask.shape[0], seq, old.shape[1]))
  return jnp.concatenate([old, attention_bias(mask)], axis=-1)


class Transformer(nn.Module):
  """Trunk plus the heads named in `cfg.heads`.

  Returns a dict: `logits` [batch, seq, vocab] from the tied LM head, `scalar`
  [batch, seq] from the scalar head (PM reward or value), and `hidden` [batch, seq, embed].
  """
  cfg: Any

  def setup(self):
    cfg = self.cfg
    for head in cfg.heads:
      if head not in ("lm", "scalar"):
        raise ValueError(f"model.heads contains {head!r}; use 'lm' and/or 'scalar'")
    self.embed = self.param("embedding", _init(("vocab", "embed"), cfg.init_std),
                            (cfg.vocab_size, cfg.d_model))
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
    self.ln_f = LayerNorm(cfg.layer_norm_eps, name="ln_f")
    if "scalar" in cfg.heads:
      self.scalar_head = nn.Dense(1, dtype=jnp.float32, name="scalar_head",
                                  kernel_init=_init(("embed", None), cfg.init_std),
                                  bias_init=_init((None,)))

  def __call__(self, tokens, mask=None, cache=None, last_only=False):
    """tokens, mask: [batch, seq] int; mask is 1 on real tokens (default: all real).

    cache: a KV cache from `init_cache` holding the tokens before these; they are appended
    at `cache["index"]` and the updated cache comes back as `out["cache"]`. last_only:
    heads on the last position only ([batch, 1, ...]), all a sampler needs after a prefill.
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
      bias = _cache_bias(cache["mask"], mask)  # [batch, seq, cache_len + seq]
      kv = (cache["k"], cache["v"])  # [layers, batch, heads, ...] (see init_cache)
    if cfg.scan_layers:
      x, new_kv = self.layers(x, bias, positions, kv)
    else:
      new_kv = []
      for i, layer in enumerate(self.layers):
        x, layer_kv = layer(x, bias, positions, None if kv is None else (kv[0][i], kv[1][i]))
        new_kv.append(layer_kv)
      new_kv = None if kv is None else jax.tree.map(lambda *a: jnp.stack(a), *new_kv)
    if last_only:
      x = x[:, -1:]
    h = self.ln_f(x)  # [batch, seq, embed]
    out = {"hidden": h}
    if cache is not None:
      out["cache"] = _append(cache, new_kv, mask)
    if "lm" in cfg.heads:
      logits = jnp.einsum("bse,ve->bsv", h, self.embed.astype(dtype))  # [batch, seq, vocab]
      out["logits"] = _constrain(logits.astype(jnp.float32), ("batch", "act_length", "act_vocab"))
    if "scalar" in cfg.heads:
      out["scalar"] = self.scalar_head(h.astype(jnp.float32))[..., 0]  # [batch, seq]
    return out


def _append(cache, new_kv, mask):
  """Writes the new tokens' k/v (in the cache's layouts, per layer) at the cache index."""
  i = cache["index"]
  k = jax.lax.dynamic_update_slice(cache["k"], new_kv[0].astype(cache["k"].dtype), (0, 0, 0, 0, i))
  v = jax.lax.dynamic_update_slice(cache["v"], new_kv[1].astype(cache["v"].dtype), (0, 0, 0, i, 0))
  m = jax.lax.dynamic_update_slice(cache["mask"], mask.astype(jnp.int32), (0, i))
  return {"k": _constrain(k, CACHE_AXES["k"]), "v": _constrain(v, CACHE_AXES["v"]), "mask": m,
          "index": i + mask.shape[1]}
