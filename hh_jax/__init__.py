"""hh_jax: the HH-RLHF recipe (Bai et al. 2022) in JAX/Flax, from LM pretraining to RLHF."""
from hh_jax import host_malloc as _host_malloc

_host_malloc.tune()  # before XLA's first allocation; see host_malloc for why
