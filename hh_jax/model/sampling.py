"""Fast sampling: one prefill, then a compiled `lax.while_loop` over a preallocated KV cache.

Generation is the slow part of RLHF, so nothing here runs per token in Python: for each
(batch, prompt bucket, settings) the whole loop is one XLA program. The cache is an
explicit pytree (`transformer.init_cache`) that the program takes donated and hands back,
so its buffers are reused call after call and updated in place.

What comes back, per row: the new tokens (the stop token included, then padding), the
log-probability of each under the model itself (temperature 1, no top-k/top-p: exactly
what the training forward pass computes, which PPO's ratio needs), and the count of new
tokens. Prompts are left-padded to a bucket length, so a handful of shapes covers every
prompt without recompiling, and positions come from the mask so padding changes nothing.

`sample_full_recompute` is the same loop without a cache (the full sequence re-run at every
step): the reference the tests compare against and the benchmark's naive baseline.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hh_jax.errors import UserError
from hh_jax.model import transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.parallel.rules import LOGICAL_AXIS_RULES

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How to sample; hashable, so one compiled program serves each distinct setting."""
  max_new_tokens: int = 64
  temperature: float = 1.0  # 0: greedy
  top_k: int = 0  # 0: off
  top_p: float = 1.0  # 1: off
  stop_ids: tuple[int, ...] = ()  # a row ends after producing any of these
  pad_id: int = 0

  def check(self) -> None:
    if self.max_new_tokens < 1:
      raise UserError(f"max_new_tokens={self.max_new_tokens}; sample at least 1 token")
    if self.temperature < 0:
      raise UserError(f"temperature={self.temperature}; use 0 (greedy) or a positive value")
    if self.top_k < 0:
      raise UserError(f"top_k={self.top_k}; use 0 (off) or a positive count")
    if not 0.0 < self.top_p <= 1.0:
      raise UserError(f"top_p={self.top_p}; use a value in (0, 1]")


def stop_ids_for(tok) -> tuple[int, ...]:
  """EOC, EOS and the dialogue markers: any of them ends an Assistant reply.

  `\\n\\nHuman:` is the usual end; `\\n\\nAssistant:` is there too, since a reply that
  opens a second Assistant turn would no longer split back into (context, reply).
  Every EOS id of a Hugging Face tokenizer (`eos_ids`, from the model's generation config)
  stops a row as well.
  """
  ids = {tok.eoc_id, tok.human_id, tok.assistant_id, tok.eos_id, *getattr(tok, "eos_ids", ())}
  return tuple(sorted(ids))


def filter_logits(logits, settings: Settings):
  """Temperature, top-k and top-p applied to logits [batch, vocab] (f32); -inf drops a token."""
  x = logits.astype(jnp.float32) / settings.temperature
  if settings.top_k and settings.top_k < x.shape[-1]:
    kth = jax.lax.top_k(x, settings.top_k)[0][:, -1:]  # [batch, 1]
    x = jnp.where(x < kth, -jnp.inf, x)
  if settings.top_p < 1.0:
    srt = jnp.sort(x, axis=-1)[:, ::-1]  # [batch, vocab] descending
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
    # The smallest logit still kept: tokens whose preceding mass is below top_p.
    cutoff = jnp.min(jnp.where(before < settings.top_p, srt, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x < cutoff, -jnp.inf, x)
  return x


def first_argmax(x):
  """argmax over the last axis (first index of the max), as two plain reductions.

  `jnp.argmax` lowers to one (value, index) variadic reduce that XLA:CPU does not
  vectorize: over [8, 8192] logits it cost more per token than a layer's matmuls.
  """
  best = jnp.max(x, axis=-1, keepdims=True)
  idx = jnp.arange(x.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(x == best, idx, x.shape[-1]), axis=-1)


def _first_reaching(c, target):
  """Per row, the first index where the non-decreasing c [batch, n] reaches target [batch, 1]."""
  return jnp.minimum(jnp.sum((c < target).astype(jnp.int32), axis=-1), c.shape[-1] - 1)


def draw(x, key):
  """A token per row [batch] drawn from softmax(x) for x [batch, vocab] (-inf: never).

  Two-level inverse CDF: a block of ~sqrt(vocab) tokens by the blocks' masses, then a
  token inside it, from two uniforms per row. Gumbel-max (`jax.random.categorical`) needs
  a random number per vocabulary entry: over [8, 8192] logits `choose` took 0.70 ms with it
  (of a ~12 ms decode step at 13m) and takes 0.17 ms with this, log-softmax included.
  A uniform in (0, 1] times a row's (positive) total always
  lands on a token of positive mass: a cumulative sum of non-negative terms never falls.
  """
  batch, vocab = x.shape
  blk = math.isqrt(vocab - 1) + 1  # ceil(sqrt(vocab))
  blocks = -(-vocab // blk)
  e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))  # [batch, vocab] unnormalized probs
  e = jnp.pad(e, ((0, 0), (0, blocks * blk - vocab))).reshape(batch, blocks, blk)
  mass = jnp.sum(e, axis=-1)  # [batch, blocks]
  u = 1.0 - jax.random.uniform(key, (batch, 2), jnp.float32)  # (0, 1]
  cm = jnp.cumsum(mass, axis=-1)  # [batch, blocks]
  b = _first_reaching(cm, u[:, :1] * cm[:, -1:])  # [batch]
  inner = jnp.take_along_axis(e, b[:, None, None], axis=1)[:, 0]  # [batch, blk]
  ci = jnp.cumsum(inner, axis=-1)
  t = _first_reaching(ci, u[:, 1:] * ci[:, -1:])
  return (b * blk + t).astype(jnp.int32)


def choose(logits, key, settings: Settings):
  """Next tokens [batch] and their model log-probs [batch] from logits [batch, vocab]."""
  if settings.temperature == 0:
    tok = first_argmax(logits)
  else:
    tok = draw(filter_logits(logits, settings), key)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def _decode_loop(step_fn, first_logits, state, key, settings: Settings):
  """The loop both samplers share: choose, record, stop, advance `state` by one token.

  step_fn(state, tokens [batch], live [batch] bool, i) -> (logits [batch, vocab], state).
  """
  batch, n = first_logits.shape[0], settings.max_new_tokens
  stops = jnp.asarray(settings.stop_ids or (-1,), jnp.int32)

  def cond(c):
    return (c["i"] < n) & ~jnp.all(c["done"])

  def body(c):
    i = c["i"]
    tok, logp = choose(c["logits"], jax.random.fold_in(key, i), settings)
    live = ~c["done"]
    tok = jnp.where(live, tok, settings.pad_id)
    logp = jnp.where(live, logp, 0.0)
    tokens = jax.lax.dynamic_update_slice(c["tokens"], tok[:, None], (0, i))
    logprobs = jax.lax.dynamic_update_slice(c["logprobs"], logp[:, None], (0, i))
    done = c["done"] | jnp.isin(tok, stops)
    logits, state = step_fn(c["state"], tok, live, i)
    return {"i": i + 1, "tokens": tokens, "logprobs": logprobs, "done": done,
            "lengths": c["lengths"] + live.astype(jnp.int32), "logits": logits, "state": state}

  init = {"i": jnp.zeros((), jnp.int32),
          "tokens": jnp.full((batch, n), settings.pad_id, jnp.int32),  # [batch, new]
          "logprobs": jnp.zeros((batch, n), jnp.float32),  # [batch, new]
          "done": jnp.zeros((batch,), bool), "lengths": jnp.zeros((batch,), jnp.int32),
          "logits": first_logits.astype(jnp.float32), "state": state}
  out = jax.lax.while_loop(cond, body, init)
  n_idx = jnp.arange(n)[None, :]
  result = {"tokens": out["tokens"], "logprobs": out["logprobs"], "lengths": out["lengths"],
            "mask": (n_idx < out["lengths"][:, None]).astype(jnp.int32)}
  return result, out["state"]


def _variables(params, decode):
  return {"params": params, **({"decode": decode} if decode else {})}


def prefill(model, params, tokens, mask, cache, decode=None):
  """Runs the prompts [batch, prompt] into an empty cache; returns (last logits, cache).

  decode: `transformer.decode_weights` of params, or None (the plain weights).
  """
  out = model.apply(_variables(params, decode), tokens, mask, cache=cache, last_only=True)
  return out["logits"][:, -1], out["cache"]  # [batch, vocab]


def extend(model, params, tokens, live, cache, decode=None):
  """One new token per row [batch] (`live` false: a finished row's padding)."""
  out = model.apply(_variables(params, decode), tokens[:, None],
                    live[:, None].astype(jnp.int32), cache=cache)
  return out["logits"][:, -1], out["cache"]  # [batch, vocab]


DECODE_COPY_MAX_BYTES = 2 << 30  # the copy doubles the weights' memory; above this, none


def decode_layout_for(mesh, params) -> bool:
  """Whether `sample` on `mesh` should first copy `params` into `decode_weights`' layout.

  Only for one CPU device, where it was measured (transformer.decode_weights), and only
  for weights up to DECODE_COPY_MAX_BYTES, since the copy sits beside them. TPU, GPU and
  multi-device meshes sample from params as they are: their compilers and the sharding
  rules own the layout.
  """
  devices = list(np.asarray(mesh.devices).flat)
  size = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params))
  return len(devices) == 1 and devices[0].platform == "cpu" and size <= DECODE_COPY_MAX_BYTES


def sample(model, params, tokens, mask, cache, key, settings: Settings,
           cpu_layout: bool = False, decode=None):
  """KV-cache sampling. tokens, mask: [batch, prompt] left-padded; cache: empty, donated.

  cpu_layout: first copy params into `transformer.decode_weights`' layout (see
  `decode_layout_for`), unless `decode` already holds that copy: a caller sampling many
  times from the same params makes it once, since the copy costs about a prefill.
  Returns (samples, cache): samples["tokens"], ["logprobs"], ["mask"] are [batch, new] and
  samples["lengths"] is [batch]; the cache goes back to the caller for the next call.
  """
  cache = {**cache, "mask": jnp.zeros_like(cache["mask"]), "index": jnp.zeros((), jnp.int32)}
  if decode is None and cpu_layout:
    decode = transformer.decode_weights(params, model.cfg)
  params = transformer.unstack_layers(params, model.cfg)  # sliced once, not once per token
  logits, cache = prefill(model, params, tokens, mask, cache, decode)

  def step(cache, tok, live, i):
    del i
    return extend(model, params, tok, live, cache, decode)

  return _decode_loop(step, logits, cache, key, settings)


def sample_full_recompute(model, params, tokens, mask, key, settings: Settings):
  """The same sampler with no cache: every step re-runs the whole [prompt + new] sequence."""
  batch, plen = tokens.shape
  total = plen + settings.max_new_tokens
  seq = jnp.zeros((batch, total), jnp.int32).at[:, :plen].set(tokens)  # [batch, total]
  seq_mask = jnp.zeros((batch, total), jnp.int32).at[:, :plen].set(mask)
  logits = model.apply({"params": params}, seq, seq_mask)["logits"][:, plen - 1]

  def step(state, tok, live, i):
    seq, seq_mask = state
    seq = jax.lax.dynamic_update_slice(seq, tok[:, None], (0, plen + i))
    seq_mask = jax.lax.dynamic_update_slice(seq_mask, live[:, None].astype(jnp.int32),
                                            (0, plen + i))
    logits = model.apply({"params": params}, seq, seq_mask)["logits"]  # [batch, total, vocab]
    return jax.lax.dynamic_index_in_dim(logits, plen + i, axis=1, keepdims=False), (seq, seq_mask)

  result, _ = _decode_loop(step, logits, (seq, seq_mask), key, settings)
  return result


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds n tokens (the largest one if none does)."""
  for b in sorted(buckets):
    if b >= n:
      return b
  return max(buckets)


def left_pad(prompts: Sequence[Sequence[int]], length: int, batch: int, pad_id: int = 0):
  """tokens, mask [batch, length]: each prompt's last `length` ids, right-aligned.

  Rows past len(prompts) are empty (all padding): they fill the batch to a shape the mesh
  splits evenly and are dropped from the results.
  """
  tokens = np.full((batch, length), pad_id, np.int32)  # [batch, length]
  mask = np.zeros((batch, length), np.int32)  # [batch, length]
  for r, ids in enumerate(prompts):
    ids = list(ids)[-length:]
    if ids:
      tokens[r, length - len(ids):] = ids
      mask[r, length - len(ids):] = 1
  return tokens, mask


class Sampler:
  """Token ids in, samples out, on a mesh; compiles once per (batch, bucket, settings).

  params: the model's params, already placed on `mesh` (as a restored checkpoint is).
  Rows are sharded over the mesh's (data, fsdp) axes like training batches; the batch is
  padded up to a multiple of that (or of `batch_size`, when set, to fix the shape).
  """

  def __init__(self, model_cfg, params, mesh=None, *, buckets: Sequence[int] = DEFAULT_BUCKETS,
               batch_size: int = 0):
    self.cfg = model_cfg
    self.model = transformer.Transformer(model_cfg)
    self.params = params
    self.mesh = mesh if mesh is not None else mesh_lib.one_device_mesh()
    self.buckets = tuple(sorted(buckets))
    self.batch_size = int(batch_size)
    self._caches = {}
    self._programs = {}
    self._cpu_layout = decode_layout_for(self.mesh, params)
    self._decode = None  # (the params it was made from, their decode_weights)

  def _program(self, settings: Settings):
    if settings not in self._programs:
      fn = functools.partial(sample, self.model, settings=settings, cpu_layout=self._cpu_layout)
      rows, row = mesh_lib.batch_sharding(self.mesh, 2), mesh_lib.batch_sharding(self.mesh, 1)
      # Explicit output shardings: the cache comes back exactly as it went in, so the next
      # call with it hits the same compiled program.
      out_sh = ({"tokens": rows, "logprobs": rows, "mask": rows, "lengths": row},
                self._cache_shardings())
      self._programs[settings] = jax.jit(fn, out_shardings=out_sh, donate_argnums=(3,))
    return self._programs[settings]

  def shape_for(self, prompts: Sequence[Sequence[int]], settings: Settings) -> tuple[int, int]:
    """(batch, bucket) the prompts run at; a prompt too long for the model is cut at the front."""
    limit = self.cfg.max_len - settings.max_new_tokens
    if limit < 1:
      raise UserError(f"max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in "
                      f"model.max_len={self.cfg.max_len}; lower max_new_tokens")
    longest = max((len(p) for p in prompts), default=1)
    bucket = min(bucket_length(max(longest, 1), self.buckets), limit)
    div = mesh_lib.batch_size_divisor(self.mesh)
    unit = max(self.batch_size, div)
    if unit % div:
      raise UserError(f"sampling batch_size={self.batch_size} is not divisible by the mesh's "
                      f"{div} data shards; use a multiple of {div}")
    batch = -(-max(len(prompts), 1) // unit) * unit
    return batch, bucket

  def __call__(self, prompts: Sequence[Sequence[int]], key, settings: Settings) -> dict:
    """Samples for each prompt: numpy tokens/logprobs/mask [n, new], lengths [n]."""
    settings.check()
    batch, bucket = self.shape_for(prompts, settings)
    tokens, mask = left_pad(prompts, bucket, batch, settings.pad_id)
    cache_len = bucket + settings.max_new_tokens
    rows = mesh_lib.batch_sharding(self.mesh, 2)
    with mesh_lib.activate(self.mesh):
      cache = self._caches.pop((batch, cache_len), None)
      if cache is None:
        cache = jax.jit(functools.partial(transformer.init_cache, self.cfg, batch, cache_len),
                        out_shardings=self._cache_shardings())()
      out, cache = self._program(settings)(self.params, jax.device_put(tokens, rows),
                                           jax.device_put(mask, rows), cache, key,
                                           decode=self._decode_weights())
      self._caches[(batch, cache_len)] = cache
    out = jax.device_get(out)
    return {k: np.asarray(v)[:len(prompts)] for k, v in out.items()}

  def _decode_weights(self):
    """`transformer.decode_weights` of self.params, made once (again if params change)."""
    if not self._cpu_layout:
      return None
    if self._decode is None or self._decode[0] is not self.params:
      if "decode_weights" not in self._programs:  # one compiled copy, whatever the params
        self._programs["decode_weights"] = jax.jit(
            functools.partial(transformer.decode_weights, cfg=self.cfg))
      self._decode = (self.params, self._programs["decode_weights"](self.params))
    return self._decode[1]

  def _cache_shardings(self):
    kv = {n: (nn.logical_to_mesh_sharding(jax.sharding.PartitionSpec(*axes), self.mesh,
                                          LOGICAL_AXIS_RULES),) * self.cfg.n_layers
          for n, axes in transformer.CACHE_AXES.items()}
    return {**kv, "mask": mesh_lib.batch_sharding(self.mesh, 2),
            "index": mesh_lib.replicated(self.mesh)}

  def stream(self, prompt: Sequence[int], key, settings: Settings) -> Iterator[int]:
    """Yields one row's new token ids as they are made (for chat); stops after a stop id.

    The same prefill and one-token step as the compiled loop, driven from Python so each
    token can be shown at once.
    """
    settings.check()
    _, bucket = self.shape_for([prompt], settings)
    tokens, mask = left_pad([prompt], bucket, 1, settings.pad_id)
    if "stream" not in self._programs:
      self._programs["stream"] = (
          jax.jit(functools.partial(prefill, self.model)),
          jax.jit(functools.partial(extend, self.model), donate_argnums=(3,)),
          jax.jit(choose, static_argnums=(2,)))
    pre, ext, pick = self._programs["stream"]
    with mesh_lib.activate(self.mesh):
      cache = transformer.init_cache(self.cfg, 1, bucket + settings.max_new_tokens)
      logits, cache = pre(self.params, tokens, mask, cache)
      for i in range(settings.max_new_tokens):
        tok, _ = pick(logits, jax.random.fold_in(key, i), settings)
        t = int(tok[0])
        yield t
        if t in settings.stop_ids:
          return
        logits, cache = ext(self.params, tok, jnp.ones((1,), bool), cache)


def decode_samples(tok, samples: dict, strip_stop: bool = True) -> list[str]:
  """Text of each row's new tokens, without the stop token that ended it."""
  out = []
  for ids, n in zip(samples["tokens"], samples["lengths"]):
    ids = [int(t) for t in ids[:n]]
    if strip_stop and ids and ids[-1] in stop_ids_for(tok):
      ids = ids[:-1]
    out.append(tok.decode(ids))
  return out

