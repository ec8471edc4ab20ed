"""hh_jax: the HH-RLHF recipe (Bai et al. 2022) in JAX/Flax, from LM pretraining to RLHF.

Importing it changes nothing in the process: the CPU allocator settings are applied by
the CPU entry points only (`hh_jax.host_malloc.ensure`).
"""
