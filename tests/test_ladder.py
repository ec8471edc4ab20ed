"""Every rung's non-embedding parameter count is within 10% of its name (52B included)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import models
from hh_jax.model import flops
from hh_jax.model.transformer import Transformer

EMBEDDING_PARAMS = ("embedding", "pos_embedding")


def _abstract_params(size):
  cfg = models.get(size)
  model = Transformer(cfg)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  return cfg, jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)["params"]


@pytest.mark.parametrize("size", list(models.NOMINAL_PARAMS))
def test_non_embedding_params_match_name(size):
  cfg, params = _abstract_params(size)
  flat = traverse_util.flatten_dict(params)
  non_emb = sum(int(np.prod(v.value.shape if hasattr(v, "value") else v.shape))
                for k, v in flat.items() if k[0] not in EMBEDDING_PARAMS)
  nominal = models.NOMINAL_PARAMS[size]
  assert abs(non_emb - nominal) / nominal < 0.10, (size, non_emb, nominal)
  # The FLOP formula counts the same parameters the model has.
  assert flops.param_count_non_embedding(cfg) == non_emb


@pytest.mark.parametrize("size", models.SIZES)
def test_ladder_keeps_paper_shape(size):
  cfg = models.get(size)
  if size in models.NOMINAL_PARAMS:
    assert cfg.d_model == 128 * cfg.n_layers
  assert cfg.mlp_dim == 4 * cfg.d_model
  assert cfg.n_heads * cfg.head_dim == cfg.d_model


def test_unknown_size_is_one_line():
  with pytest.raises(ValueError, match="unknown model size 'huge'; use one of"):
    models.get("huge")


def test_llama_rungs_have_the_llama_shape():
  """llama3-8b is Meta-Llama-3-8B: 8,030,261,248 parameters (untied 128,256-token head)."""
  cfg, params = _abstract_params("llama3-8b")
  flat = traverse_util.flatten_dict(params)
  total = sum(int(np.prod(v.value.shape if hasattr(v, "value") else v.shape)) for v in flat.values())
  assert total == 8_030_261_248
  non_emb = sum(int(np.prod(v.value.shape if hasattr(v, "value") else v.shape))
                for k, v in flat.items() if k[0] not in EMBEDDING_PARAMS + ("lm_head",))
  assert flops.param_count_non_embedding(cfg) == non_emb
  for size in models.LLAMA:
    cfg = models.get(size)
    assert (cfg.norm, cfg.mlp, cfg.tie_embeddings, cfg.pos_embedding) == (
        "rmsnorm", "swiglu", False, "rotary")
    assert cfg.n_heads % cfg.n_kv_heads == 0 and cfg.n_kv_heads < cfg.n_heads
