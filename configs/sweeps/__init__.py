"""Sweep configs: each expands into many stage runs (see hh_jax/eval/pm_scaling.py)."""
