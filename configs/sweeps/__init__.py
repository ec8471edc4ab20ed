"""Sweep configs: each expands into many stage runs (see launch/sweeps/plan.py)."""
