"""`python -m hh_jax.main` with the test rung's samples made informative
(`rl_runs.informative_samples`): a subprocess run that must equal an in-process run which had
the same patch (tests/test_pipeline.py's SIGKILL-and-rerun test).

Run as `python -m tests.informative_main --config=... --workdir=...` from the repository root.
"""
import pytest

from tests import rl_runs

if __name__ == "__main__":
  from hh_jax import host_malloc
  from hh_jax import main
  host_malloc.ensure()  # as hh_jax.main does: a CPU run re-execs (this module) once
  rl_runs.informative_samples(pytest.MonkeyPatch())
  main.main()
