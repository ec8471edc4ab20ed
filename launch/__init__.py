"""Launchers: multi-process and TPU-pod runs of a stage, and sweeps of many stage runs.

Not library code: launchers read `configs/` (a sweep builds each stage's config from the
stage's own file), which `hh_jax/` never imports. See launch/README.md.
"""
