"""model.dtype=bfloat16 runs its matmuls in bfloat16, forward and backward.

test_model.py checks that a bf16 model's logits are close to the f32 model's, which a model
silently running in f32 passes too. Here the lowered program is read: every dot_general
of a bf16 model takes and gives bf16 (layer norms and the softmax stay f32 by design and
are no dots), and the f32 model, its control, has none. The dots are counted by hand: per
block q, k, v, the two attention products, the output projection and the MLP's two
= 8 (one scanned body, or 2 × 8 unrolled), plus the LM head's one.
"""
import re

import jax
import jax.numpy as jnp
import pytest

from configs import models
from hh_jax.model.transformer import Transformer

# `%3 = stablehlo.dot_general %1, %2, ... : (tensor<16x32xbf16>, tensor<32x96xbf16>) -> tensor<16x96xbf16>`
DOT = re.compile(r"stablehlo\.dot_general .*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\) "
                 r"-> tensor<[^>]*x(\w+)>")


def _lowered(dtype, grad=False, **overrides):
  cfg = models.get("test")
  cfg.heads = ("lm",)
  cfg.dtype = dtype
  for k, v in overrides.items():
    setattr(cfg, k, v)
  model = Transformer(cfg)
  tokens = jnp.zeros((2, 8), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)["params"]
  fn = lambda p, t: model.apply({"params": p}, t)["logits"]  # noqa: E731
  if grad:
    fn = jax.grad(lambda p, t: model.apply({"params": p}, t)["logits"].astype(jnp.float32).mean())
  text = jax.jit(fn).lower(params, tokens).as_text()
  dots = DOT.findall(text)
  assert len(dots) == text.count("stablehlo.dot_general "), "a dot the pattern missed"
  return dots


@pytest.mark.parametrize("scan,count", [(True, 9), (False, 17)])
def test_every_forward_dot_of_a_bf16_model_is_bf16(scan, count):
  assert _lowered("bfloat16", scan_layers=scan) == [("bf16", "bf16", "bf16")] * count
  assert _lowered("float32", scan_layers=scan) == [("f32", "f32", "f32")] * count


def test_every_backward_dot_of_a_bf16_model_is_bf16():
  dots = _lowered("bfloat16", grad=True)
  assert len(dots) >= 2 * 9  # the forward's and at least one gradient product per weight
  assert set(dots) == {("bf16", "bf16", "bf16")}, dots


def test_an_unknown_dtype_is_one_line():
  from hh_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from hh_jax.train import runner  # pylint: disable=g-import-not-at-top
  cfg = models.get("test")
  cfg.dtype = "float16"
  with pytest.raises(UserError, match=r"^model\.dtype='float16' is not supported; use one of "
                     r"\['bfloat16', 'float32'\]$"):
    runner.validate_model(cfg)
