"""Small model configs covering every architecture field, shared by the model and sampler tests.

`gpt2` and `rotary` are the project's original shapes; `llama` (GQA, SwiGLU, RMSNorm, Llama
3.1 rope scaling, untied head, no biases), `qwen2` (q/k/v biases, tied head, MQA-like
groups of 4) and `pythia` (parallel residual, partial rotary, erf GELU, every bias, untied)
are the Hugging Face families `hh_jax.interop` imports.
"""
from configs import models

VARIANTS = ("gpt2", "rotary", "llama", "qwen2", "pythia")


def get(name: str):
  if name == "gpt2":
    return models.get("test")
  if name == "rotary":
    cfg = models.get("test")
    cfg.pos_embedding = "rotary"
    return cfg
  cfg = models.get("llama-test")
  if name == "qwen2":
    cfg.update(attn_bias="qkv", tie_embeddings=True, n_kv_heads=2, rope_scaling="none",
               rope_theta=1e6)
  elif name == "pythia":
    cfg.update(norm="layernorm", mlp="gelu_exact", n_kv_heads=8, attn_bias="all", mlp_bias=True,
               parallel_residual=True, rotary_fraction=0.5, rope_scaling="none",
               rope_theta=10000.0)
  elif name != "llama":
    raise ValueError(name)
  return cfg
