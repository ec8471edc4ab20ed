"""Train state as a pytree, born sharded on the mesh.

The state holds everything a resumed run needs besides the data position: step, params,
optimizer state and the RNG key. `create` builds it under `jax.jit(out_shardings=...)`, so
parameters are initialised directly into their shards and never exist whole on one host.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from hh_jax import checkpoint as ckpt_lib
from hh_jax.errors import UserError
from hh_jax.parallel import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32
  params: Any
  opt_state: Any
  rng: jax.Array  # [2] uint32, a raw PRNG key so it checkpoints as a plain array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)

  def apply_gradients(self, grads):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def _init_fn(model: nn.Module, tx, example_tokens, params_fn: Callable | None):
  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(init_rng, example_tokens)["params"]
    if params_fn is not None:
      params = params_fn(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=state_rng, tx=tx)
  return init


def abstract_and_shardings(model, tx, example_tokens, mesh):
  """Shape/dtype tree of the (unboxed) state and its NamedShardings, allocating nothing."""
  with mesh_lib.activate(mesh):
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # abstract, so a compile-only mesh works
    boxed = jax.eval_shape(_init_fn(model, tx, example_tokens, None), key)
    shardings = mesh_lib.logical_shardings(boxed, mesh)
  unboxed = nn.unbox(boxed)
  check_divisible(unboxed, shardings)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          unboxed, shardings)
  return abstract, shardings


def check_divisible(tree, shardings) -> None:
  """A mesh axis that does not divide the dimension it shards is a config error, said early."""
  def check(path, x, sharding):
    for dim, axes in zip(x.shape, sharding.spec):
      axes = (axes,) if isinstance(axes, str) else (axes or ())
      n = 1
      for a in axes:
        n *= sharding.mesh.shape[a]
      if dim % n:
        name = jax.tree_util.keystr(path)
        raise UserError(f"{name} has a dimension of {dim} that mesh axes {axes} ({n} devices) "
                        "cannot split; pick config.mesh sizes that divide the model's dimensions")
  jax.tree_util.tree_map_with_path(check, tree, shardings)


def restore_run_params(model, workdir: str, mesh, step: int | None = None):
  """`model`'s params read from another run's checkpoints, straight into their shards.

  Returns (params, missing): leaves the checkpoint lacks keep their fresh init and are named
  in `missing`, so a caller decides whether that is an error (a scorer) or expected.
  """
  example = jnp.zeros((mesh_lib.batch_size_divisor(mesh), 8), jnp.int32)
  abstract, _ = abstract_and_shardings(model, optax.identity(), example, mesh)
  return ckpt_lib.restore_params(os.path.join(workdir, "checkpoints"), abstract.params, step)


def create(model, tx, example_tokens, mesh, seed: int):
  """Initialises the state directly into its shards; returns (state, shardings)."""
  _, shardings = abstract_and_shardings(model, tx, example_tokens, mesh)
  init = _init_fn(model, tx, example_tokens, None)
  with mesh_lib.activate(mesh):
    state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(jax.random.PRNGKey(seed))
  return state, shardings
