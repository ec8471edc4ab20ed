"""One way to chain stages: `init.workdir` is the run a stage starts or samples from,
`pm.workdir` the PM it consults; the old per-stage keys are refused by name."""
import os
import subprocess
import sys

import ml_collections
import pytest

from configs import distill as distill_config, pm_eval as eval_config, ppo as ppo_config
from configs import pm as pm_config, rs as rs_config
from hh_jax import main
from hh_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_stage_names_its_sources_the_same_way():
  for cfg in (distill_config.get_config("init=/lm"), rs_config.get_config("policy=/lm,pm=/pm"),
              pm_config.get_config(), ppo_config.get_config("init=/lm,pm=/pm")):
    assert "workdir" in cfg.init
  assert rs_config.get_config("policy=/lm,pm=/pm").pm.workdir == "/pm"
  assert eval_config.get_config().pm.workdir == ""
  assert distill_config.get_config("init=/lm").init.workdir == "/lm"


@pytest.mark.parametrize("old,new", [("distill.init_workdir", "init.workdir"),
                                     ("rs.policy_workdir", "init.workdir"),
                                     ("rs.pm_workdir", "pm.workdir"),
                                     ("eval.pm_workdir", "pm.workdir")])
def test_old_upstream_keys_name_the_new_one(old, new, tmp_path):
  stage = {"distill": "distill", "rs": "rs", "eval": "pm_eval"}[old.split(".")[0]]
  proc = subprocess.run([sys.executable, "-m", "hh_jax.main", f"--config=configs/{stage}.py",
                         f"--config.{old}=/x", f"--workdir={tmp_path}"], cwd=REPO,
                        capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": ""},
                        timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: --config.{old} is now --config.{new}; pass that instead")
  section, field = old.split(".")
  c = ml_collections.ConfigDict({"stage": stage, section: {field: "/x"}})
  with pytest.raises(UserError, match=f"--config.{new}"):
    main.run(c, str(tmp_path))
