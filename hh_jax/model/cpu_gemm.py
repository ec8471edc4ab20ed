"""The model's GEMMs with their backward pass written out for XLA:CPU.

XLA:CPU runs a weight gradient (x^T @ g, contracting the leading axis of both operands)
through a generic kernel at half the speed of a plain GEMM, and fuses an operand's
elementwise producers into any transpose it does, re-reading them in cache-hostile order.
`gemm` and `gemm_nt` are `jnp.dot` forward with a custom VJP that avoids both.

Only CPU programs contain this code: `transformer.matmul` picks it with
`jax.lax.platform_dependent`, which keeps one branch per *lowering* platform, so a step
lowered for TPU or GPU (from any host, `bench/memory_plan.py` included) holds plain dots
and none of the conditionals or optimization barriers below.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _transpose(a):
  """a.T [cols, rows] for a [rows, cols], transposed from a buffer of its own.

  XLA:CPU fuses elementwise producers into their consumers. When the consumer is a
  transpose, the fused loop then reads every producer input in transposed, cache-hostile
  order, and the producers can be long: a residual-stream gradient is the sum of every later
  layer's contribution. At 13M that made the transposes in the weight gradients 0.28 s of a
  3.7 s single-core step (85 ms for layer 0's MLP output) where one buffer transposes in
  ~1-3 ms. An optimization barrier does not stop fusion (XLA lowers it away first); a
  conditional does: its operand is computed into a buffer, and the transpose inside reads
  only that. The predicate is one the compiler cannot fold (false only for NaN); both
  branches return a.T (+0.0 keeps them distinct, or XLA would merge them away). The
  conditional also keeps XLA from folding the transpose back into the dot.
  """
  return jax.lax.cond(a[0, 0] == a[0, 0], lambda v: v.T, lambda v: v.T + 0.0, a)


def _weight_grad(x, g):
  """x^T @ g [in, out] for x [rows, in], g [rows, out], as a plain GEMM.

  The weight gradient contracts the rows, the leading axis of both operands. XLA:CPU
  sends that (transposed-LHS) form to a generic kernel at half the speed of a plain GEMM,
  so one operand is transposed first (`_transpose`): x when it is the smaller, else g, and
  then the [out, in] product (weight-sized, so small) is transposed back, under a barrier
  that keeps XLA from folding that transpose into the dot.
  """
  if x.shape[1] <= g.shape[1]:
    return jnp.dot(_transpose(x), g)  # [in, rows] @ [rows, out]
  return jax.lax.optimization_barrier(jnp.dot(_transpose(g), x)).T  # ([out, rows] @ [rows, in]).T


@jax.custom_vjp
def gemm(x, w):
  """x [rows, in] @ w [in, out] -> [rows, out]."""
  return jnp.dot(x, w)


def _gemm_fwd(x, w):
  return jnp.dot(x, w), (x, w)


def _gemm_bwd(res, g):
  x, w = res
  return jnp.dot(g, w.T), _weight_grad(x, g).astype(w.dtype)  # [rows, in], [in, out]


gemm.defvjp(_gemm_fwd, _gemm_bwd)


@jax.custom_vjp
def gemm_nt(x, w):
  """x [rows, in] @ w.T for w [out, in] -> [rows, out] (the tied LM head)."""
  return jnp.dot(x, w.T)


def _gemm_nt_fwd(x, w):
  return jnp.dot(x, w.T), (x, w)


def _gemm_nt_bwd(res, g):
  x, w = res
  # w is [out, in]: its gradient is the transpose of x^T @ g, taken on the (weight-sized)
  # product rather than on g, which for the tied LM head is [tokens, vocab].
  dw = jax.lax.optimization_barrier(_weight_grad(x, g)).T  # [out, in]
  return jnp.dot(g, w), dw.astype(w.dtype)


gemm_nt.defvjp(_gemm_nt_fwd, _gemm_nt_bwd)
