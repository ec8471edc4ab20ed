"""LM trunk -> PM through orbax partial restore; a mismatched checkpoint is a one-line error."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import models
from hh_jax import checkpoint as ckpt_lib
from hh_jax.errors import UserError
from hh_jax.model.transformer import Transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.train import state as state_lib

EXAMPLE = jnp.zeros((8, 16), jnp.int32)


def _mesh(shape=(2, 2, 2)):
  return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(zip(("data", "fsdp", "tensor"),
                                                               shape))))


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory):
  """A saved LM train state (test rung, LM head only) and its params on the host."""
  directory = str(tmp_path_factory.mktemp("lm") / "checkpoints")
  cfg = models.get("test")
  state, _ = state_lib.create(Transformer(cfg), optax.adamw(1e-3), EXAMPLE, _mesh(), seed=3)
  ckpt = ckpt_lib.Checkpointer(directory, async_save=False)
  ckpt.save(7, state, {"position": 7})
  ckpt.close()
  return directory, ckpt_lib.to_host(state.params)


def _pm_abstract(cfg, mesh):
  cfg.heads = ("scalar",)
  abstract, _ = state_lib.abstract_and_shardings(Transformer(cfg), optax.identity(), EXAMPLE,
                                                 mesh)
  return abstract.params


def test_lm_trunk_restores_into_pm_with_fresh_head(lm_checkpoint):
  directory, lm_params = lm_checkpoint
  mesh = _mesh((1, 2, 4))  # another mesh than the one it was saved from
  abstract = _pm_abstract(models.get("test"), mesh)
  restored, missing = ckpt_lib.restore_params(directory, abstract)
  assert sorted(missing) == ["scalar_head/bias", "scalar_head/kernel"]
  wi = restored["layers"]["mlp"]["wi"]["kernel"]
  assert wi.sharding.spec == abstract["layers"]["mlp"]["wi"]["kernel"].sharding.spec
  jax.tree.map(np.testing.assert_array_equal, ckpt_lib.to_host(restored), lm_params)

  cfg = models.get("test")
  cfg.heads = ("scalar",)
  fresh, _ = state_lib.create(Transformer(cfg), optax.identity(), EXAMPLE, mesh, seed=0)
  merged = ckpt_lib.merge_params(fresh.params, restored)
  np.testing.assert_array_equal(np.asarray(merged["embedding"]), lm_params["embedding"])
  np.testing.assert_array_equal(np.asarray(merged["scalar_head"]["kernel"]),
                                np.asarray(fresh.params["scalar_head"]["kernel"]))


@pytest.mark.parametrize("field,value,shapes", [
    ("vocab_size", 256, ("(512, 32)", "(256, 32)")),
    ("d_model", 64, ("(512, 32)", "(512, 64)")),
])
def test_mismatched_restore_is_one_line(lm_checkpoint, field, value, shapes):
  directory, _ = lm_checkpoint
  cfg = models.get("test")
  cfg[field] = value
  if field == "d_model":
    cfg.head_dim, cfg.mlp_dim = value // cfg.n_heads, 4 * value
  with pytest.raises(UserError) as err:
    ckpt_lib.restore_params(directory, _pm_abstract(cfg, _mesh()))
  msg = str(err.value)
  assert "\n" not in msg
  assert directory in msg and all(s in msg for s in shapes), msg


def test_missing_checkpoint_is_one_line(tmp_path):
  with pytest.raises(UserError, match="no checkpoint"):
    ckpt_lib.restore_params(str(tmp_path / "nothing"), {})
