"""The size ladder: one place that says what each model size is.

Rungs follow the paper (Bai et al. 2022, appendix): d_model = 128 · n_layer, MLP width
4 · d_model, so non-embedding parameters ≈ 12 · n_layer · d_model². The laptop rungs
(`SMALL`) exist so the whole pipeline runs on a CPU in seconds; `nano`, `test` and `micro`
(3k, 25k and 100k non-embedding parameters) are the three rungs of the local sweep test
(configs/sweeps/pm_ladder.py), spread over 1.5 decades with the same 512-piece vocabulary.

Beside them, the Llama family (`LLAMA`): RMSNorm, SwiGLU, grouped-query attention, rotary
positions with a large theta (and Llama 3.1's rope scaling on the laptop rungs, so the tests
run it), no biases, an untied LM head. `llama-test` and `llama-tiny` are laptop rungs;
`llama3-8b` is Meta-Llama-3-8B's shape (8,030,261,248 parameters), for the memory plan.
"""
import ml_collections

# name -> (n_layers, d_model, n_heads, vocab_size, max_len)
_LADDER = {
    "nano": (1, 16, 2, 512, 128),
    "test": (2, 32, 4, 512, 128),
    "micro": (2, 64, 4, 512, 128),
    "tiny": (2, 128, 4, 2048, 256),
    "13m": (4, 512, 8, 8192, 1024),
    "42m": (6, 768, 12, 65536, 1024),
    "197m": (10, 1280, 20, 65536, 2048),
    "810m": (16, 2048, 32, 65536, 2048),
    "2.7b": (24, 3072, 48, 65536, 2048),
    "13b": (40, 5120, 40, 65536, 2048),
    "52b": (64, 8192, 64, 65536, 2048),
}

# name -> (n_layers, d_model, n_heads, n_kv_heads, mlp_dim, vocab_size, max_len, rope)
_LLAMA_ROPE_TEST = {"rope_theta": 500000.0, "rope_scaling": "llama3", "rope_factor": 8.0,
                    "rope_low_freq_factor": 1.0, "rope_high_freq_factor": 4.0,
                    "rope_original_max_len": 256}  # 256: one of head_dim 8's frequencies lands in the smoothed band
_LLAMA = {
    "llama-test": (2, 64, 8, 4, 128, 512, 128, _LLAMA_ROPE_TEST),
    "llama-tiny": (2, 128, 8, 2, 352, 2048, 256, _LLAMA_ROPE_TEST),
    "llama3-8b": (32, 4096, 32, 8, 14336, 128256, 8192,
                  {"rope_theta": 500000.0, "rope_scaling": "none"}),
}

SIZES = tuple(_LADDER)  # the paper's ladder
LLAMA = tuple(_LLAMA)  # family=llama, beside it
# Rungs whose stage configs use laptop-scale defaults (batch, sequence, steps, learning rate).
SMALL = ("nano", "test", "micro", "tiny", "llama-test", "llama-tiny")
# Rungs whose layers are unrolled by default (model.scan_layers=False), on every platform.
# Chosen from CPU timings: at 4-6 layers an unrolled stack compiles in seconds and runs
# faster on XLA:CPU (no per-layer slicing of stacked weights and activations: the 13m PM
# step measured 3.11 s unrolled vs 3.49 s scanned on a 2-core CPU). Nothing here looks at
# the platform: a TPU run of these rungs is unrolled too unless it passes
# --config.model.scan_layers=True (untimed on TPU).
# Every other rung is scanned, compile time flat in depth; the laptop rungs (`SMALL`) are
# scanned too, so the tests run the path the pod rungs use.
UNROLLED = ("13m", "42m")
# Nominal non-embedding parameter counts, what each rung's name promises.
NOMINAL_PARAMS = {"13m": 13e6, "42m": 42e6, "197m": 197e6, "810m": 810e6,
                  "2.7b": 2.7e9, "13b": 13e9, "52b": 52e9}


def get(size: str) -> ml_collections.ConfigDict:
  """The model config of one rung; an unknown name is a one-line error."""
  key = str(size).lower()
  if key in _LLAMA:
    return _llama(key)
  if key not in _LADDER:
    raise ValueError(f"unknown model size {size!r}; use one of: {', '.join(SIZES + LLAMA)}")
  n_layers, d_model, n_heads, vocab, max_len = _LADDER[key]
  c = ml_collections.ConfigDict()
  c.size = key
  c.n_layers = n_layers
  c.d_model = d_model
  c.n_heads = n_heads
  c.head_dim = d_model // n_heads
  c.mlp_dim = 4 * d_model
  c.vocab_size = vocab
  c.max_len = max_len
  c.pos_embedding = "learned"  # or "rotary"
  c.dtype = "float32"  # compute dtype; params stay float32
  c.remat_policy = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
  c.scan_layers = key not in UNROLLED  # nn.scan over one block; see UNROLLED
  c.heads = ("lm",)  # any of "lm", "scalar"
  c.layer_norm_eps = 1e-5
  c.init_std = 0.02
  return c


def _llama(key: str) -> ml_collections.ConfigDict:
  """A Llama-family rung: the paper rung's fields with the Llama architecture's values."""
  n_layers, d_model, n_heads, n_kv_heads, mlp_dim, vocab, max_len, rope = _LLAMA[key]
  c = get("test")
  c.update(size=key, n_layers=n_layers, d_model=d_model, n_heads=n_heads,
           head_dim=d_model // n_heads, mlp_dim=mlp_dim, vocab_size=vocab, max_len=max_len,
           pos_embedding="rotary", scan_layers=True, layer_norm_eps=1e-5)
  # The architecture fields (hh_jax.model.transformer.ARCH_DEFAULTS), set on every rung so
  # a run's config.json spells them out.
  c.norm = "rmsnorm"
  c.mlp = "swiglu"
  c.n_kv_heads = n_kv_heads
  c.attn_bias = "none"
  c.mlp_bias = False
  c.tie_embeddings = False
  c.parallel_residual = False
  c.rotary_fraction = 1.0
  c.rope_theta = 10000.0
  c.rope_scaling = "none"
  c.rope_factor = 8.0
  c.rope_low_freq_factor = 1.0
  c.rope_high_freq_factor = 4.0
  c.rope_original_max_len = 8192
  c.update(rope)
  return c
