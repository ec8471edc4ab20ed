"""Model FLOPs, written down once (as in nanoGPT / PaLM appendix B), for MFU everywhere."""
from hh_jax.model import transformer


def param_count_non_embedding(cfg) -> int:
  d, L, m = cfg.d_model, cfg.n_layers, cfg.mlp_dim
  q, kv = cfg.n_heads * cfg.head_dim, transformer.kv_heads(cfg) * cfg.head_dim
  bias = transformer.arch(cfg, "attn_bias")
  attn = 2 * d * q + 2 * d * kv  # q, out; k, v
  attn += {"qvo": q + kv + d, "none": 0, "qkv": q + 2 * kv, "all": q + 2 * kv + d}[bias]
  n_in = 2 if transformer.arch(cfg, "mlp") == "swiglu" else 1
  mlp = (n_in + 1) * d * m + (n_in * m + d if transformer.arch(cfg, "mlp_bias") else 0)
  norm = 2 * d if transformer.arch(cfg, "norm") == "layernorm" else d  # scale (+ bias)
  return L * (attn + mlp + 2 * norm) + norm


def train_flops_per_token(cfg, seq_len: int) -> float:
  """6·N for the matmuls (fwd + bwd) plus attention scores and values, 12·L·d_attn·T."""
  # The LM head's GEMM; the embedding lookup (the same table when tied) is no matmul.
  n = param_count_non_embedding(cfg) + cfg.vocab_size * cfg.d_model
  attn = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
  return 6 * n + attn
