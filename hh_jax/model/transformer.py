"""Decoder-only transformer, applied as a pure function over a params pytree.

One block is `nn.scan`-ned over depth (compile time flat in the number of layers) and
wrapped in `nn.remat` with a policy named in the config. Every parameter carries logical
axis names; `hh_jax.parallel.rules` maps them onto the device mesh, so the same module
runs on one CPU or a pod slice.

Positions are counted over real tokens only (cumsum of the mask), so left- and
right-padding give the same activations at every real token: a PM score read at the EOC
token does not depend on how the batch was padded.
"""
from __future__ import annotations

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
    letters = "hkd"[:len(self.shape)]
    lhs = "bs" + letters[:n_in]
    y = jnp.einsum(f"{lhs},{letters}->bs{letters[n_in:]}", x.astype(self.dtype),
                   kernel.astype(self.dtype))
    if not self.use_bias:
      return y
    bias = self.param("bias", _init(self.names[n_in:]), self.shape[n_in:])
    return y + bias.astype(self.dtype)


class Attention(nn.Module):
  cfg: Any

  @nn.compact
  def __call__(self, x, bias, positions):
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
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)  # [batch, heads, q, k]
    probs = jax.nn.softmax(logits + bias[:, None, :, :], axis=-1).astype(dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [batch, seq, heads, head_dim]
    # Output projection scaled down by depth, as in GPT-2, so the residual stream starts calm.
    out_std = std / (2 * cfg.n_layers) ** 0.5
    y = Projection((cfg.n_heads, cfg.head_dim, cfg.d_model), ("heads", "kv", "embed"), out_std,
                   dtype, name="out")(out)  # [batch, seq, embed]
    return y


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
  def __call__(self, x, bias, positions):
    h = Attention(self.cfg, name="attn")(LayerNorm(self.cfg.layer_norm_eps, name="ln1")(x),
                                            bias, positions)
    x = x + h
    x = x + Mlp(self.cfg, name="mlp")(LayerNorm(self.cfg.layer_norm_eps, name="ln2")(x))
    x = _constrain(x, ("batch", "act_length", "act_embed"))
    return x, None


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


def positions_from_mask(mask):
  """Position of each token among the real ones: padding never shifts a position."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)  # [batch, seq]


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
          in_axes=(nn.broadcast, nn.broadcast), length=cfg.n_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    else:
      self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.n_layers)]
    self.ln_f = LayerNorm(cfg.layer_norm_eps, name="ln_f")
    if "scalar" in cfg.heads:
      self.scalar_head = nn.Dense(1, dtype=jnp.float32, name="scalar_head",
                                  kernel_init=_init(("embed", None), cfg.init_std),
                                  bias_init=_init((None,)))

  def __call__(self, tokens, mask=None):
    """tokens, mask: [batch, seq] int; mask is 1 on real tokens (default: all real)."""
    cfg = self.cfg
    dtype = compute_dtype(cfg.dtype)
    if mask is None:
      mask = jnp.ones_like(tokens)
    positions = positions_from_mask(mask)  # [batch, seq]
    # Gather from the table all-gathered (as FSDP does for every layer's weights): a gather
    # across shards would make XLA replicate it anyway, with a warning per step.
    table = _constrain(self.embed, (None, None))
    x = jnp.take(table, tokens, axis=0)  # [batch, seq, embed]
    if cfg.pos_embedding == "learned":
      x = x + jnp.take(_constrain(self.pos_embed, (None, None)), positions, axis=0)
    x = _constrain(x.astype(dtype), ("batch", "act_length", "act_embed"))
    bias = attention_bias(mask)  # [batch, seq, seq]
    if cfg.scan_layers:
      x, _ = self.layers(x, bias, positions)
    else:
      for layer in self.layers:
        x, _ = layer(x, bias, positions)
    h = self.ln_f(x)  # [batch, seq, embed]
    out = {"hidden": h}
    if "lm" in cfg.heads:
      logits = jnp.einsum("bse,ve->bsv", h, self.embed.astype(dtype))  # [batch, seq, vocab]
      out["logits"] = _constrain(logits.astype(jnp.float32), ("batch", "act_length", "act_vocab"))
    if "scalar" in cfg.heads:
      out["scalar"] = self.scalar_head(h.astype(jnp.float32))[..., 0]  # [batch, seq]
    return out
