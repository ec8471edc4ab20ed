"""Model FLOPs, written down once (as in nanoGPT / PaLM appendix B), for MFU everywhere."""


def param_count_non_embedding(cfg) -> int:
  d, L, m = cfg.d_model, cfg.n_layers, cfg.mlp_dim
  attn = 4 * d * cfg.n_heads * cfg.head_dim + 2 * cfg.n_heads * cfg.head_dim + d  # no key bias
  mlp = 2 * d * m + m + d
  return L * (attn + mlp + 4 * d) + 2 * d


def train_flops_per_token(cfg, seq_len: int) -> float:
  """6·N for the matmuls (fwd + bwd) plus attention scores and values, 12·L·d_attn·T."""
  n = param_count_non_embedding(cfg) + cfg.vocab_size * cfg.d_model  # tied head counts once
  attn = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
  return 6 * n + attn
