"""One LM train step gives the same loss and params on every mesh of 8 virtual devices."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import models
from hh_jax.errors import UserError
from hh_jax.model.transformer import Transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.train import lm, optimizer, runner, state as state_lib

MESHES = [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 2, 4)]
LR = 1e-2
# Adam's update lr·g/(|g| + eps) has slope ≤ lr/eps in g, so with eps = 1e-4 the ~1e-9 that
# gradients differ by between reduction orders moves a param by ≤ 1e-7, while a wrong shard
# would move it by ~lr. (With eps = 1e-8 a near-zero gradient flips whole updates.)
EPS = 1e-4
PARAM_ATOL = 1e-3 * LR


def _optim():
  return ml_collections.ConfigDict(dict(
      learning_rate=LR, warmup_steps=0, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=EPS,
      weight_decay=0.1, grad_clip_norm=1.0))


def _batch():
  rng = np.random.default_rng(0)
  window = rng.integers(3, 512, size=(8, 17)).astype(np.int32)  # [batch, seq + 1]
  return {"inputs": window[:, :-1], "targets": window[:, 1:], "mask": np.ones((8, 16), np.int32)}


def _one_step(shape, accum=1, size="test"):
  cfg = models.get(size)
  mesh_cfg = ml_collections.ConfigDict(dict(zip(("data", "fsdp", "tensor"), shape)))
  n = int(np.prod(shape))
  mesh = mesh_lib.make_mesh(mesh_cfg, devices=jax.devices()[:n])
  model = Transformer(cfg)
  tx = optimizer.make(_optim(), 10)
  example = jnp.zeros((8, 16), jnp.int32)
  state, shardings = state_lib.create(model, tx, example, mesh, seed=0)
  with mesh_lib.activate(mesh):
    step, batch_sh = runner.compile_step(lm.make_train_step(model, accum), shardings, mesh,
                                         lm.BATCH_NDIMS)
    state, metrics = step(state, runner.to_global(_batch(), batch_sh))
  return jax.device_get(metrics), jax.device_get(state.params)


@pytest.fixture(scope="module")
def reference():
  return _one_step((1, 1, 1))


@pytest.mark.parametrize("shape", MESHES[1:])
def test_sharded_step_equals_single_device(shape, reference):
  assert len(jax.devices()) == 8
  ref_metrics, ref_params = reference
  metrics, params = _one_step(shape)
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=PARAM_ATOL),
               params, ref_params)


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 2, 4)])
def test_llama_family_sharded_step_equals_single_device(shape):
  """GQA (8 query heads over 4 kv heads, split by tensor=4), SwiGLU, RMSNorm, llama3 rope."""
  ref_metrics, ref_params = _one_step((1, 1, 1), size="llama-test")
  metrics, params = _one_step(shape, size="llama-test")
  assert params["layers"]["attn"]["key"]["kernel"].shape[2] == 4  # [layers, embed, kv_heads, kv]
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=PARAM_ATOL),
               params, ref_params)


def test_gradient_accumulation_matches_one_big_batch(reference):
  ref_metrics, ref_params = reference
  metrics, params = _one_step((2, 1, 1), accum=2)
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=PARAM_ATOL),
               params, ref_params)


def test_params_are_born_sharded():
  cfg = models.get("test")
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
  state, _ = state_lib.create(Transformer(cfg), optimizer.make(_optim(), 10),
                              jnp.zeros((8, 16), jnp.int32), mesh, seed=0)
  wi = state.params["layers"]["mlp"]["wi"]["kernel"]  # [layers, embed, mlp]
  assert wi.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert wi.addressable_shards[0].data.shape == (2, 16, 64)


@pytest.mark.parametrize("mesh,msg", [
    ({"data": 3, "fsdp": 1, "tensor": 1}, "uses 3 devices but 8 are present"),
    ({"data": -1, "fsdp": 3, "tensor": 1}, "does not divide the 8 devices"),
    ({"data": -1, "fsdp": -1, "tensor": 1}, "at most one of them -1"),
])
def test_bad_mesh_is_user_error(mesh, msg):
  with pytest.raises(UserError, match=msg):
    mesh_lib.make_mesh(ml_collections.ConfigDict(mesh))
