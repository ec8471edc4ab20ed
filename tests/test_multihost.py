"""A 2-process × 4-device run (gloo) equals the 1-process × 8-device run, and its checkpoint
restores in one process.

The two processes are started by `launch/local_multiprocess.py` on a free port, with a
timeout, and killed (by process group) on failure, so a hung collective cannot hang pytest.
"""
import os
import sys

import jax
import numpy as np
import pytest

from hh_jax import checkpoint as ckpt_lib
from hh_jax import metrics as metrics_lib
from hh_jax.errors import UserError
from hh_jax.parallel import multihost
from hh_jax.train import state as state_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "launch"))
import local_multiprocess  # noqa: E402
import multihost_worker as worker  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240


def _two_process_run(out):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  codes, logs = local_multiprocess.launch(
      [sys.executable, os.path.join(REPO, "tests", "multihost_worker.py"), str(out)],
      num_processes=2, devices_per_process=4, timeout_s=TIMEOUT_S, env=env, cwd=REPO,
      echo=False)
  if codes != [0, 0]:
    tails = "\n".join(f"--- process {i} (exit {c}) ---\n{log[-3000:]}"
                      for i, (c, log) in enumerate(zip(codes, logs)))
    pytest.fail(f"2-process run failed: {codes}\n{tails}")


# One test, not three sharing a fixture: xdist would run the 2-process job once per worker.
def test_two_processes_match_one_process_and_their_checkpoint_restores(tmp_path):
  _two_process_run(tmp_path)
  got = np.load(tmp_path / "result.npz")

  # Same loss and updated params as one process with the same 8-device mesh.
  assert jax.process_count() == 1 and jax.device_count() == 8
  metrics, state = worker.one_step()
  np.testing.assert_allclose(got["loss"], metrics["loss"], rtol=1e-5)
  ref = worker.flat(jax.device_get(state.params))
  assert set(ref) == set(got.files) - {"loss"}
  for name, want in ref.items():
    np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)

  # Only process 0 wrote metrics.
  assert [r["step"] for r in metrics_lib.read_metrics(str(tmp_path))] == [1]

  # The checkpoint both processes wrote restores in one process, onto another layout.
  mesh = worker.make_mesh((1, 4, 2))
  model, tx = worker.model_and_tx()
  abstract, shardings = state_lib.abstract_and_shardings(model, tx, worker.example_tokens(), mesh)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"))
  try:
    restored, data_state = ckpt.restore(abstract)
  finally:
    ckpt.close()
  assert int(restored.step) == 1 and data_state == {"position": 1}
  wi = restored.params["layers"]["mlp"]["wi"]["kernel"]
  assert wi.sharding == shardings.params["layers"]["mlp"]["wi"]["kernel"]
  for name, value in worker.flat(jax.device_get(restored.params)).items():
    np.testing.assert_array_equal(value, got[name], err_msg=name)


@pytest.mark.parametrize("cfg,env,mode", [
    ({}, {}, "single"),
    ({}, {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:8476", "JAX_NUM_PROCESSES": "4",
          "JAX_PROCESS_ID": "3"}, "explicit"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 0},
     {"JAX_PROCESS_ID": "1"}, "explicit"),
])
def test_settings_from_config_then_environment(cfg, env, mode, monkeypatch):
  monkeypatch.setattr(multihost, "_on_cloud_tpu_vm", lambda: False)
  s = multihost.settings(cfg, env)
  assert s["mode"] == mode
  if cfg:
    assert (s["coordinator_address"], s["process_id"]) == ("h:1", 0)  # config wins
  elif env:
    assert (s["num_processes"], s["process_id"]) == (4, 3)


@pytest.mark.parametrize("cfg,msg", [
    ({"coordinator_address": "h:1", "num_processes": 2}, "process_id"),
    ({"coordinator_address": "h", "num_processes": 2, "process_id": 0}, "has no port"),
    ({"num_processes": 2, "process_id": 0}, "no coordinator address"),
])
def test_bad_distributed_settings_are_user_errors(cfg, msg):
  with pytest.raises(UserError, match=msg):
    multihost.settings(cfg, {})
