"""Model invariants: causality, padding independence, heads, dtypes, scan/remat variants."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_variants
from configs import models
from hh_jax.model import transformer
from hh_jax.model.transformer import Transformer


def _model(**overrides):
  cfg = models.get("test")
  cfg.heads = ("lm", "scalar")
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return Transformer(cfg), cfg


def _params(model, seq=12):
  return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, seq), jnp.int32))["params"]


def _apply(model, params, *args):
  return jax.jit(model.apply)({"params": params}, *args)  # eager flax ops are slow on 8 devices


def test_causal_future_tokens_do_not_change_past():
  model, cfg = _model()
  params = _params(model)
  rng = np.random.default_rng(0)
  a = rng.integers(3, cfg.vocab_size, size=(2, 12))
  b = a.copy()
  b[:, 8:] = rng.integers(3, cfg.vocab_size, size=(2, 4))
  out_a = _apply(model, params, jnp.asarray(a))
  out_b = _apply(model, params, jnp.asarray(b))
  np.testing.assert_allclose(out_a["logits"][:, :8], out_b["logits"][:, :8], atol=1e-5)
  assert not np.allclose(out_a["logits"][:, 8:], out_b["logits"][:, 8:])


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_left_and_right_padding_give_same_scores(pos):
  model, cfg = _model(pos_embedding=pos)
  params = _params(model)
  rng = np.random.default_rng(1)
  real = rng.integers(3, cfg.vocab_size, size=7)
  right = np.zeros((1, 12), np.int32)
  right[0, :7] = real
  left = np.zeros((1, 12), np.int32)
  left[0, 5:] = real
  out_r = _apply(model, params, jnp.asarray(right), jnp.asarray(right > 0))
  out_l = _apply(model, params, jnp.asarray(left), jnp.asarray(left > 0))
  unpadded = _apply(model, params, jnp.asarray(real[None]))
  np.testing.assert_allclose(out_r["scalar"][0, :7], unpadded["scalar"][0], atol=1e-5)
  np.testing.assert_allclose(out_l["scalar"][0, 5:], unpadded["scalar"][0], atol=1e-5)
  np.testing.assert_allclose(out_l["logits"][0, 5:], out_r["logits"][0, :7], atol=1e-4)


@pytest.mark.parametrize("variant", model_variants.VARIANTS[2:])
def test_llama_family_is_causal_and_padding_free(variant):
  cfg = model_variants.get(variant)
  cfg.heads = ("lm", "scalar")
  model = Transformer(cfg)
  params = _params(model)
  rng = np.random.default_rng(1)
  real = rng.integers(3, cfg.vocab_size, size=7)
  left = np.zeros((1, 12), np.int32)
  left[0, 5:] = real
  out_l = _apply(model, params, jnp.asarray(left), jnp.asarray(left > 0))
  unpadded = _apply(model, params, jnp.asarray(real[None]))
  np.testing.assert_allclose(out_l["logits"][0, 5:], unpadded["logits"][0], atol=1e-4)
  np.testing.assert_allclose(out_l["scalar"][0, 5:], unpadded["scalar"][0], atol=1e-5)
  changed = real.copy()
  changed[5:] = (changed[5:] + 1) % cfg.vocab_size
  out_c = _apply(model, params, jnp.asarray(changed[None]))
  np.testing.assert_allclose(out_c["logits"][0, :5], unpadded["logits"][0, :5], atol=1e-5)


def test_grouped_query_attention_is_multi_head_with_shared_key_values():
  """GQA with 2 kv heads == MHA whose 8 heads' keys/values repeat each kv head 4 times
  (query head j reads kv head j // 4, as HF's repeat_kv); the cache is 4x smaller."""
  gqa_cfg = model_variants.get("llama")
  gqa_cfg.n_kv_heads = 2
  mha_cfg = model_variants.get("llama")
  mha_cfg.n_kv_heads = 8
  gqa, mha = Transformer(gqa_cfg), Transformer(mha_cfg)
  params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(3), x.shape),
                        nn.unbox(_params(gqa)))
  rep = lambda k: jnp.repeat(k, 4, axis=2)  # noqa: E731  [layers, embed, kv_heads, kv] -> heads
  attn = dict(params["layers"]["attn"])
  attn["key"] = {"kernel": rep(attn["key"]["kernel"])}
  attn["value"] = {"kernel": rep(attn["value"]["kernel"])}
  mha_params = {**params, "layers": {**params["layers"], "attn": attn}}
  tokens = jnp.asarray(np.random.default_rng(4).integers(3, 500, size=(2, 10)))
  a, b = _apply(gqa, params, tokens)["logits"], _apply(mha, mha_params, tokens)["logits"]
  assert float(jnp.abs(a).max()) > 1.0
  np.testing.assert_allclose(a, b, atol=1e-4)
  k_gqa = transformer.init_cache(gqa_cfg, 2, 16)["k"][0]
  assert k_gqa.shape == (2, 2, gqa_cfg.head_dim, 16)
  assert transformer.init_cache(mha_cfg, 2, 16)["k"][0].shape[1] == 8


def test_llama3_rope_frequencies_equal_transformers():
  torch = pytest.importorskip("torch")
  rope_utils = pytest.importorskip("transformers.modeling_rope_utils")
  transformers = pytest.importorskip("transformers")
  cfg = models.get("llama-test")
  cfg.head_dim = 64  # enough frequencies to populate all three bands
  hf = transformers.LlamaConfig(
      hidden_size=512, num_attention_heads=8, head_dim=64, max_position_embeddings=1024,
      rope_parameters={"rope_type": "llama3", "rope_theta": cfg.rope_theta,
                       "factor": cfg.rope_factor, "low_freq_factor": cfg.rope_low_freq_factor,
                       "high_freq_factor": cfg.rope_high_freq_factor,
                       "original_max_position_embeddings": cfg.rope_original_max_len})
  theirs, _ = rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf, torch.device("cpu"))
  ours = transformer.rope_frequencies(cfg)
  plain = 1.0 / cfg.rope_theta ** (np.arange(0, 64, 2) / 64)
  assert (ours < plain * 0.99).sum() > 3 and np.isclose(ours, plain).sum() > 3  # all bands occur
  np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6)


def test_heads_are_selectable():
  for heads, keys in [(("lm",), {"logits"}), (("scalar",), {"scalar"}),
                      (("lm", "scalar"), {"logits", "scalar"})]:
    model, cfg = _model(heads=heads)
    params = _params(model)
    out = _apply(model, params, jnp.ones((2, 5), jnp.int32))
    assert keys <= set(out) and not ({"logits", "scalar"} - keys) & set(out)
    assert ("scalar_head" in params) == ("scalar" in heads)
    if "lm" in heads:
      assert out["logits"].shape == (2, 5, cfg.vocab_size)
    if "scalar" in heads:
      assert out["scalar"].shape == (2, 5)


def test_scan_remat_and_unrolled_agree():
  tokens = jnp.asarray(np.random.default_rng(2).integers(3, 500, size=(2, 10)))
  base, _ = _model()
  params = _params(base)
  ref = _apply(base, params, tokens)["logits"]
  for policy in ("full", "dots_saveable"):
    m, _ = _model(remat_policy=policy)
    np.testing.assert_allclose(_apply(m, params, tokens)["logits"], ref, atol=1e-5)
  # Unrolled layers hold the same weights, split per layer.
  unrolled, _ = _model(scan_layers=False)
  per_layer = {k: v for k, v in params.items() if k != "layers"}
  for i in range(2):
    per_layer[f"layer_{i}"] = jax.tree.map(lambda x: x[i], params["layers"])
  np.testing.assert_allclose(_apply(unrolled, per_layer, tokens)["logits"], ref,
                             atol=1e-5)
  # Gradients flow through remat + scan.
  m, _ = _model(remat_policy="full")
  g = jax.jit(jax.grad(lambda p: m.apply({"params": p}, tokens)["logits"].sum()))(params)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(g))


def test_bfloat16_compute_keeps_float32_params():
  model, _ = _model(dtype="bfloat16")
  params = _params(model)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  tokens = jnp.ones((2, 6), jnp.int32)
  out = _apply(model, params, tokens)
  ref = _apply(_model()[0], params, tokens)
  assert out["logits"].dtype == jnp.float32
  np.testing.assert_allclose(out["logits"], ref["logits"], atol=0.05)


def test_params_carry_logical_axis_names():
  model, _ = _model()
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  names = set()
  for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: hasattr(x, "names")):
    assert hasattr(leaf, "names"), leaf
    names.update(n for n in leaf.names if n)
  assert {"vocab", "embed", "heads", "kv", "mlp", "layers"} <= names


@pytest.mark.parametrize("rows,d_in,d_out", [(12, 4, 10), (12, 10, 4)])
@pytest.mark.parametrize("transpose_w", [False, True])
def test_matmul_gradients_equal_plain_dot(rows, d_in, d_out, transpose_w):
  # The CPU path writes the backward pass by hand (which operand gets transposed depends
  # on the shapes); it must give autodiff's gradients of the plain dot in every case.
  from hh_jax.model.transformer import matmul
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(rows, d_in)), jnp.float32)
  w_shape = (d_out, d_in) if transpose_w else (d_in, d_out)
  w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
  g = jnp.asarray(rng.normal(size=(rows, d_out)), jnp.float32)

  def plain(x, w):
    return jnp.sum(jnp.dot(x, w.T if transpose_w else w) * g)

  def ours(x, w):
    return jnp.sum(matmul(x, w, transpose_w) * g)

  want = jax.grad(plain, argnums=(0, 1))(x, w)
  got = jax.jit(jax.grad(ours, argnums=(0, 1)))(x, w)
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_cpu_gemm_path_is_chosen_by_lowering_platform():
  # The hand-written backward pass (hh_jax/model/cpu_gemm.py, which always puts an
  # optimization barrier on the LM head's weight gradient) is in a program lowered for CPU
  # and absent from one lowered for TPU or GPU, from this same CPU host, through grad,
  # nn.scan and nn.remat. tests/test_tpu_aot.py compiles the real steps for a v5p slice.
  model, _ = _model(remat_policy="full")
  tokens = jnp.zeros((2, 8), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)["params"]

  def loss(p):
    out = model.apply({"params": p}, tokens)
    return out["logits"].sum() + out["scalar"].sum()

  traced = jax.jit(jax.grad(loss)).trace(params)
  text = {p: traced.lower(lowering_platforms=(p,)).as_text() for p in ("cpu", "tpu", "cuda")}
  assert "optimization_barrier" in text["cpu"]
  for platform in ("tpu", "cuda"):
    assert "optimization_barrier" not in text[platform], platform
    assert "dot_general" in text[platform]


@pytest.mark.parametrize("rows,d_in,d_out", [(64, 16, 48), (64, 48, 16)])
def test_weight_gradient_transposes_read_one_buffer(rows, d_in, d_out):
  # The operand a weight gradient transposes must reach the transpose as one buffer: when
  # XLA:CPU fuses its elementwise producers in (here a*b + c, in the model a LayerNorm or
  # a residual-stream sum), the transpose reads all of them in transposed order, 10-40x
  # slower at the 13M rung. Checked on the compiled program: every 2-D transpose fusion has
  # exactly one operand.
  import re
  from hh_jax.model.transformer import matmul
  if jax.default_backend() != "cpu":
    pytest.skip("the hand-written backward pass is the CPU path")
  rng = np.random.default_rng(0)
  a, b, c = (jnp.asarray(rng.normal(size=(rows, d_in)), jnp.float32) for _ in range(3))
  w = jnp.asarray(rng.normal(size=(d_in, d_out)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=(rows, d_out)), jnp.float32)
  e = jnp.asarray(rng.normal(size=(rows, d_out)), jnp.float32)

  def loss(w, a, b, c, dy, e):
    x = a * b + c  # [rows, d_in], fused into its consumers unless materialized
    return jnp.sum(matmul(x, w) * (dy * e + 1.0))  # the cotangent [rows, d_out] is fused too

  args = (w, a, b, c, dy, e)  # all arguments, or XLA folds the test's arithmetic away
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  hlo = grad.lower(*args).compile().as_text()
  bodies = dict(re.findall(r"^%(\S+) .*?\{\n(.*?)^\}", hlo, re.S | re.M))

  def transposes(body):  # a transpose op, or a copy out of a column-major operand
    return re.search(r"\] transpose\(|\{0,1\} parameter\(", body)

  fusions = re.findall(r"= f32\[\d+,\d+\]\S* fusion\(([^)]*)\), kind=kLoop, calls=%([\w.\-]+)", hlo)
  moving = [operands for operands, called in fusions if transposes(bodies[called])]
  assert moving, "expected the weight gradient to transpose one operand"
  for operands in moving:
    assert len(operands.split(",")) == 1, operands
  want = jax.grad(lambda w, a: jnp.sum(jnp.dot(a * b + c, w) * (dy * e + 1.0)), argnums=(0, 1))(w, a)
  for got, ref in zip(grad(*args), want):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field,value,message", [
    ("norm", "batchnorm", "model.norm='batchnorm'"),
    ("n_kv_heads", 3, "model.n_kv_heads=3 does not divide model.n_heads=8"),
    ("rope_scaling", "yarn", "model.rope_scaling='yarn'"),
    ("rotary_fraction", 0.1, "model.rotary_fraction=0.1 rotates 0"),
])
def test_bad_architecture_field_is_one_line(field, value, message):
  from hh_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from hh_jax.train import runner  # pylint: disable=g-import-not-at-top
  cfg = models.get("llama-test")
  setattr(cfg, field, value)
  with pytest.raises(UserError, match=message) as e:
    runner.validate_model(cfg)
  assert "\n" not in str(e.value)
