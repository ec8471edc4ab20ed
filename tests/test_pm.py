"""The PM objective: padding-invariant scores, the right gradient sign, sharded == 1 device."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import models
from hh_jax.data import pairs as pairs_lib
from hh_jax.model.transformer import Transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.train import optimizer, pm, runner, state as state_lib

LR = 1e-2
EPS = 1e-4  # see tests/test_sharding.py: keeps Adam from amplifying reduction-order noise
PARAM_ATOL = 1e-3 * LR


class CharTok:
  """Characters as ids: enough of a tokenizer for encode_pairs."""
  pad_id, eoc_id = 0, 3

  def encode(self, text):
    return [4 + (ord(ch) % 500) for ch in text]


def _cfg(lm=False, size="test"):
  cfg = models.get(size)
  cfg.heads = ("lm", "scalar") if lm else ("scalar",)
  return cfg


def _pairs():
  return [pairs_lib.Pair("\n\nHuman: hi\n\nAssistant:", " hello there", " go away", 1),
          pairs_lib.Pair("\n\nHuman: how do I open my lock?\n\nAssistant:", " use the key",
                         " no", 1),
          pairs_lib.Pair("\n\nHuman: a\n\nAssistant: b\n\nHuman: c?\n\nAssistant:", " yes",
                         " maybe not today", 2),
          pairs_lib.Pair("\n\nHuman: tell me\n\nAssistant:", " sure", " never ever", 1)] * 2


def _params(cfg, seed=0):
  model = Transformer(cfg)
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((2, 8), jnp.int32))["params"]
  return model, jax.tree.map(np.asarray, nn.unbox(params))


def _rewards(model, params, batch):
  # jit: one compilation per shape instead of one per op of an eager apply.
  fn = jax.jit(lambda p, t, m, e: pm.rewards(p, model, t, m, e)[0])
  return np.asarray(fn(params, batch["tokens"], batch["mask"], batch["eoc_pos"]))


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_score_unchanged_by_extra_padding(pos):
  cfg = _cfg()
  cfg.pos_embedding = pos
  model, params = _params(cfg)
  tight = pairs_lib.encode_pairs(_pairs(), CharTok(), 72, "right")  # longest is 64
  ref = _rewards(model, params, tight)  # [batch, 2]
  for seq_len, side in ((120, "right"), (72, "left"), (120, "left")):
    got = _rewards(model, params, pairs_lib.encode_pairs(_pairs(), CharTok(), seq_len, side))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=f"{seq_len} {side}")


@pytest.mark.parametrize("lm_weight,center_weight", [(0.0, 0.0), (0.5, 0.1)])
def test_gradient_pushes_chosen_above_rejected(lm_weight, center_weight):
  cfg = _cfg(lm=bool(lm_weight))
  model, params = _params(cfg, seed=1)
  batch = {k: jnp.asarray(v) for k, v in
           pairs_lib.encode_pairs(_pairs(), CharTok(), 72).items() if k != "turns"}
  n = float(batch["tokens"].shape[0])
  loss = lambda p: pm.loss_fn(p, batch, model, num_pairs=n, num_lm_tokens=100.0,  # noqa: E731
                              lm_weight=lm_weight, center_weight=center_weight)[0]
  r0 = _rewards(model, params, batch)
  # The loss falls as the margin grows: dL/dmargin = −σ(−margin) < 0 for every pair.
  pref = lambda m: jnp.sum(-jax.nn.log_sigmoid(m))  # noqa: E731
  margin_grad = jax.grad(pref)(jnp.asarray(r0[:, 0] - r0[:, 1]))
  assert np.all(np.asarray(margin_grad) < 0)
  loss = jax.jit(loss)
  grads = jax.jit(jax.grad(loss))(params)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  r1 = _rewards(model, stepped, batch)
  assert np.mean(r1[:, 0] - r1[:, 1]) > np.mean(r0[:, 0] - r0[:, 1]) + 1e-4
  assert float(loss(stepped)) < float(loss(params))


def _optim():
  return ml_collections.ConfigDict(dict(
      learning_rate=LR, warmup_steps=0, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=EPS,
      weight_decay=0.1, grad_clip_norm=1.0))


def _one_step(shape, accum=1, lm_weight=0.5, size="test"):
  cfg = _cfg(lm=True, size=size)
  mesh_cfg = ml_collections.ConfigDict(dict(zip(("data", "fsdp", "tensor"), shape)))
  mesh = mesh_lib.make_mesh(mesh_cfg, devices=jax.devices()[:int(np.prod(shape))])
  model = Transformer(cfg)
  tx = optimizer.make(_optim(), 10)
  state, shardings = state_lib.create(model, tx, jnp.zeros((16, 72), jnp.int32), mesh, seed=0)
  batch = {k: v for k, v in pairs_lib.encode_pairs(_pairs(), CharTok(), 72).items()
           if k in pm.BATCH_NDIMS}
  step_fn = pm.make_train_step(model, lm_weight=lm_weight, center_weight=0.1,
                               accum_steps=accum)
  with mesh_lib.activate(mesh):
    step, batch_sh = runner.compile_step(step_fn, shardings, mesh, pm.BATCH_NDIMS)
    state, metrics = step(state, runner.to_global(batch, batch_sh))
  return jax.device_get(metrics), jax.device_get(state.params)


@pytest.fixture(scope="module")
def reference():
  return _one_step((1, 1, 1))


@pytest.mark.parametrize("shape,accum", [((8, 1, 1), 1), ((2, 2, 2), 2)])
def test_sharded_step_equals_single_device(shape, accum, reference):
  assert len(jax.devices()) == 8
  ref_metrics, ref_params = reference
  metrics, params = _one_step(shape, accum)
  for k in ("loss", "accuracy", "margin", "reward_mean", "reward_std", "lm_loss"):
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-5, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=PARAM_ATOL),
               params, ref_params)


def test_llama_family_sharded_step_equals_single_device():
  """The PM step on a GQA + SwiGLU + RMSNorm + rope config, kv heads split over tensor=4."""
  ref_metrics, ref_params = _one_step((1, 1, 1), size="llama-test")
  metrics, params = _one_step((1, 2, 4), 2, size="llama-test")
  for k in ("loss", "accuracy", "margin", "lm_loss"):
    np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=1e-5, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=PARAM_ATOL),
               params, ref_params)


def test_metrics_are_means():
  r = jnp.array([[1.0, 0.0], [0.0, 2.0]])  # [batch, 2]
  margin = r[:, 0] - r[:, 1]
  aux = {"pref_loss": jnp.sum(-jax.nn.log_sigmoid(margin)), "accuracy": jnp.float32(1.0),
         "margin": jnp.sum(margin), "reward_sum": jnp.sum(r), "reward_sq": jnp.sum(r * r)}
  m = jax.device_get(pm.summarize(jnp.float32(0.0), aux, 2.0))
  assert m["accuracy"] == 0.5 and m["margin"] == -0.5
  np.testing.assert_allclose(m["reward_mean"], 0.75)
  np.testing.assert_allclose(m["reward_std"], np.std([1.0, 0.0, 0.0, 2.0]), rtol=1e-6)
