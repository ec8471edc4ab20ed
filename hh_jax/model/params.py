"""A model's params as a sharded pytree: their abstract shapes and shardings, and a run's params.

This lives beside the model, not in train/, so that sampling, scoring, distillation's
teacher and PPO's policy read a run's params without importing the training code: the
dependency points train -> model (`train/state.py` builds the full state's shardings from
`check_divisible` here), never model -> train.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hh_jax import checkpoint as ckpt_lib
from hh_jax import files
from hh_jax.data import tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.model import transformer
from hh_jax.parallel import mesh as mesh_lib


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


def abstract_params(model: nn.Module, example_tokens, mesh):
  """(ShapeDtypeStructs carrying their shardings, NamedShardings) of `model`'s params; allocates nothing."""
  def init(rng):
    return model.init(rng, example_tokens)["params"]
  with mesh_lib.activate(mesh):
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # abstract, so a compile-only mesh works
    boxed = jax.eval_shape(init, key)
    shardings = mesh_lib.logical_shardings(boxed, mesh)
  unboxed = nn.unbox(boxed)
  check_divisible(unboxed, shardings)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          unboxed, shardings)
  return abstract, shardings


def restore_run_params(model: nn.Module, workdir: str, mesh, step: int | None = None):
  """`model`'s params read from another run's checkpoints, straight into their shards.

  Returns (params, missing): leaves the checkpoint lacks keep their fresh init and are named
  in `missing`, so a caller decides whether that is an error (a scorer) or expected.
  """
  example = jnp.zeros((mesh_lib.batch_size_divisor(mesh), 8), jnp.int32)  # [batch, 8]
  abstract, _ = abstract_params(model, example, mesh)
  return ckpt_lib.restore_params(files.join(workdir, "checkpoints"), abstract, step)


# What a stage keeps of its own model config when it takes the model from the run it starts from.
STAGE_MODEL_FIELDS = ("heads", "dtype", "remat_policy")


def model_from_run(model_cfg, workdir: str):
  """`model_cfg` replaced by `workdir`'s model (its heads, dtype and remat kept), or as it is.

  Only for a run whose config.json spells out the architecture fields (an import, a Llama
  rung, or a stage started from either): its shapes cannot be guessed from a ladder rung,
  so a stage with `init.workdir` on it needs no --config.model.* flags. A run of the
  paper's rungs is left to the stage's own config, as before.
  """
  path = files.join(files.abspath(workdir), "config.json")
  if not files.exists(path):
    return model_cfg  # the stage says what is missing where it reads the run
  config = files.read_json(path)
  src = dict(config.get("model") or {})
  if "source" not in config and "norm" not in src:
    return model_cfg
  own = model_cfg.to_dict()
  src.update({k: own[k] for k in STAGE_MODEL_FIELDS if k in own})
  src["heads"] = tuple(src.get("heads", ("lm",)))
  return ml_collections.ConfigDict(src)


def load_lm(workdir: str, mesh=None, step: int | None = None):
  """(model config, params, tokenizer) of the LM head of a run (lm, distill, ppo policy).

  Only the params are read (orbax partial restore straight into their shards on `mesh`);
  the model config comes from the run's config.json, with the LM head alone.
  """
  workdir = files.abspath(workdir)
  config = ckpt_lib.read_run_config(workdir, "point --workdir at an LM or policy run")
  model_cfg = ml_collections.ConfigDict(config["model"])
  model_cfg.heads = ("lm",)
  mesh = mesh if mesh is not None else mesh_lib.one_device_mesh()
  params, missing = restore_run_params(transformer.Transformer(model_cfg), workdir, mesh, step)
  if missing:
    raise UserError(f"{workdir} checkpoint lacks {', '.join(missing)}; it is not an LM/policy run")
  tok = tok_lib.Tokenizer.load(files.join(workdir, tok_lib.FILENAME))
  return model_cfg, params, tok
