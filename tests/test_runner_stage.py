"""The stage skeleton: lazy files, init from given params, resume with the data position."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import lm as lm_config
from hh_jax import checkpoint
from hh_jax.model.transformer import Transformer
from hh_jax.train import runner


class _Position:
  """A data iterator's resumable position, as the stages' iterators expose it."""

  def __init__(self):
    self.state = {"position": 0}

  def get_state(self):
    return dict(self.state)

  def set_state(self, state):
    self.state = dict(state)


def _stage(workdir):
  c = lm_config.get_config("size=test,runlocal=True")
  c.train.async_checkpointing = False
  return runner.open_stage(c, str(workdir)), Transformer(c.model), c


def test_fresh_stage_writes_nothing_until_asked(tmp_path):
  stage, _, _ = _stage(tmp_path / "run")
  assert stage.mesh.size == jax.device_count()
  stage.close()
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []


def test_init_params_then_resume_with_the_data_position(tmp_path):
  stage, model, c = _stage(tmp_path / "run")
  tx = optax.sgd(0.1)
  example = jnp.zeros((c.data.batch_size, 8), jnp.int32)  # [batch, seq]
  ref, _, _ = stage.init_or_restore(model, tx, example)  # the model's own init
  given = jax.tree.map(lambda x: x + 1.0, ref.params)  # params another run holds
  state, shardings, resumed = stage.init_or_restore(model, tx, example, init_params=given)
  assert not resumed and int(state.step) == 0
  for a, b in zip(jax.tree.leaves(checkpoint.to_host(state.params)),
                  jax.tree.leaves(checkpoint.to_host(given))):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.leaves(shardings.params)[0] == jax.tree.leaves(state.params)[0].sharding
  stage.checkpointer.save(5, state.replace(step=jnp.asarray(5, jnp.int32)), {"position": 7})
  stage.close()

  again, model, _ = _stage(tmp_path / "run")
  batches = _Position()
  state, _, resumed = again.init_or_restore(model, tx, example, batches=batches,
                                            init_params=ref.params)  # ignored on a resume
  assert resumed and int(state.step) == 5 and batches.state == {"position": 7}
  for a, b in zip(jax.tree.leaves(checkpoint.to_host(state.params)),
                  jax.tree.leaves(checkpoint.to_host(given))):
    np.testing.assert_array_equal(a, b)
  again.close()
