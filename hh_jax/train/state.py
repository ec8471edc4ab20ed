"""Train state as a pytree, born sharded on the mesh.

The state holds everything a resumed run needs besides the data position: step, params,
optimizer state and the RNG key. `create` builds it under `jax.jit(out_shardings=...)`, so
parameters are initialised directly into their shards and never exist whole on one host.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from hh_jax.model import params as params_lib
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

  def apply_gradients_if_finite(self, grads, loss):
    """`apply_gradients`, or only `step + 1` when the loss or the gradient is not finite.

    Inside the jitted step, so a NaN batch (or a diverging run) never reaches the params or
    the optimizer moments, and a saved checkpoint never holds non-finite params; the step
    still advances, so the data position and a resumed run stay where they were.
    Returns (state, skipped: f32 0/1, for `nonfinite_steps` in the metrics).
    """
    ok = finite(loss, grads)
    new = self.apply_gradients(grads)
    kept = select(ok, (new.params, new.opt_state), (self.params, self.opt_state))
    return new.replace(params=kept[0], opt_state=kept[1]), 1.0 - ok.astype(jnp.float32)


def finite(loss, grads) -> jax.Array:
  """True when the loss and the gradient's global norm (so every element) are finite."""
  sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads))
  return jnp.isfinite(loss) & jnp.isfinite(sq)


def select(ok, new, old):
  """`new` where `ok`, else `old`, leaf by leaf (both trees of the same structure)."""
  return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _init_fn(model: nn.Module, tx, example_tokens):
  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(init_rng, example_tokens)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=state_rng, tx=tx)
  return init


def abstract_and_shardings(model, tx, example_tokens, mesh):
  """Shape/dtype tree of the (unboxed) state and its NamedShardings, allocating nothing."""
  with mesh_lib.activate(mesh):
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # abstract, so a compile-only mesh works
    boxed = jax.eval_shape(_init_fn(model, tx, example_tokens), key)
    shardings = mesh_lib.logical_shardings(boxed, mesh)
  unboxed = nn.unbox(boxed)
  params_lib.check_divisible(unboxed, shardings)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          unboxed, shardings)
  return abstract, shardings


def create(model, tx, example_tokens, mesh, seed: int):
  """Initialises the state directly into its shards; returns (state, shardings)."""
  _, shardings = abstract_and_shardings(model, tx, example_tokens, mesh)
  init = _init_fn(model, tx, example_tokens)
  with mesh_lib.activate(mesh):
    state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(jax.random.PRNGKey(seed))
  return state, shardings


def create_from_params(params, tx, shardings, mesh, seed: int):
  """A fresh state (step 0, new optimizer state) around `params` already in `shardings.params`.

  For a run that starts as another run's model (distillation's student is the LM itself);
  the RNG is `PRNGKey(seed)`, as that stage has always drawn it.
  """
  def init(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                      rng=jax.random.PRNGKey(seed), tx=tx)
  with mesh_lib.activate(mesh):
    return jax.jit(init, out_shardings=shardings)(params)
