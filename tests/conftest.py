"""Test-wide set-up: 8 virtual CPU devices, so sharding is exercised without a TPU.

The flag must be set before jax is imported anywhere, which is why it lives here.
"""
import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same small steps many times (a resumed run recompiles what the first
# run compiled); a persistent cache shared by the xdist workers pays for each compile once.
# Set through the environment, so the stage subprocesses of the kill-and-rerun tests (which
# pass os.environ on) share it too: their reference, killed and rerun processes compile the
# same programs. A kill mid-write leaves a torn entry, which JAX's zlib check turns into a
# warning and a recompile.
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.get("HH_JAX_TEST_CACHE",
                                                         "/tmp/hh_jax_test_jax_cache")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HH_SAMPLE = SHARED / "data" / "hh-rlhf"


@pytest.fixture
def hh_sample_dir():
  """The real hh-rlhf sample beside the checkout; tests that need it skip without it."""
  if not (HH_SAMPLE / "harmless-base" / "train.jsonl.gz").exists():
    pytest.skip(f"../shared/data/hh-rlhf not found at {HH_SAMPLE}; "
                "run the tests from a checkout that has ../shared beside it")
  return HH_SAMPLE


@pytest.fixture
def gcs_emulator():
  """An in-memory GCS (fake-gcs-server) with an empty bucket `bucket`, stopped afterwards.

  Runs reach it through `emulator.env` (STORAGE_EMULATOR_HOST and friends); tests skip
  with the reason when the bundled binary cannot start.
  """
  from tests import gcs_emulator as gcs_lib  # pylint: disable=g-import-not-at-top
  try:
    emulator = gcs_lib.Emulator()
  except RuntimeError as e:
    pytest.skip(f"GCS emulator unavailable: {e}")
  yield emulator
  emulator.stop()
