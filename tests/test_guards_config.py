"""Config overrides are applied, or refused in one line: never accepted and dropped.

`parse` runs `hh_jax.main._parse_flags` in process on a fresh copy of the entry point's own
`--config` flag (its settings, such as refusing new attributes, are the entry point's),
with `sys.argv` set to the command line: ml_collections reads the overrides from
`sys.argv`, so parsing any other list in process would register none of them and refuse
every override as an unknown flag, good or bad alike.
"""
import contextlib
import copy
import io
import os
import sys

import ml_collections
import pytest
from absl import flags

from configs import common
from hh_jax import main, stages
from hh_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(config, *overrides):
  """(exit code or None, stderr, parsed config or None), as `python -m hh_jax.main` parses."""
  argv = ["hh_jax.main", f"--config={os.path.join(ROOT, config)}", *overrides]
  fresh = flags.FlagValues()
  # main's own flag (its parser, its settings), registering its per-field flags in `fresh`.
  flag = copy.deepcopy(flags.FLAGS["config"], {id(flags.FLAGS): fresh})
  assert flag.flag_values is fresh
  fresh["config"] = flag
  saved = flags.FLAGS, sys.argv
  flags.FLAGS, sys.argv = fresh, argv
  err = io.StringIO()
  try:
    with contextlib.redirect_stderr(err):
      main._parse_flags(argv)  # pylint: disable=protected-access
  except SystemExit as e:
    return e.code, err.getvalue(), None
  finally:
    flags.FLAGS, sys.argv = saved
  return None, err.getvalue(), fresh["config"].value


def refused(config, overrides, *want):
  code, err, cfg = parse(config, *overrides)
  assert code == 2, (overrides, cfg)
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  for w in want:
    assert w in lines[0], (w, lines[0])
  return lines[0]


def test_a_good_override_is_applied():
  code, err, cfg = parse("configs/ppo.py:size=test",
                         "--config.train.total_steps=3", "--config.optim.learning_rate=0.5",
                         "--config.ppo.clip=0.25", "--config.train.async_checkpointing=false",
                         "--config.model.dtype=bfloat16")
  assert code is None, err
  assert (cfg.train.total_steps, cfg.optim.learning_rate, cfg.ppo.clip,
          cfg.train.async_checkpointing, cfg.model.dtype) == (3, 0.5, 0.25, False, "bfloat16")
  assert isinstance(cfg.train.total_steps, int)


@pytest.mark.parametrize("override,name", [
    ("--config.ppo.tain.total_steps=3", "tain"),      # a typo in a section name
    ("--config.tain.total_steps=3", "tain"),
    ("--config.train.total_step=3", "total_step"),    # a typo in a field name
    ("--config.ppo.cilp=0.1", "cilp"),
    ("--config.nope=1", "nope"),
])
def test_an_unknown_key_is_one_line_naming_it(override, name):
  line = refused("configs/ppo.py:size=test", [override], name)
  assert "\\n" not in line  # no escaped second line of a KeyError's text


@pytest.mark.parametrize("override,name", [
    ("--config.train.total_steps=3.5", "total_steps"),   # an int field
    ("--config.train.total_steps=abc", "total_steps"),
    ("--config.optim.learning_rate=fast", "learning_rate"),  # a float field
    ("--config.train.async_checkpointing=maybe", "async_checkpointing"),  # a bool field
    ("--config.train=3", "train"),                       # a section
])
def test_a_wrong_type_is_one_line_naming_the_field(override, name):
  refused("configs/ppo.py:size=test", [override], name)


@pytest.mark.parametrize("old,new", sorted(stages.RENAMED_KEYS.items()))
def test_a_renamed_key_on_the_command_line_names_the_new_one(old, new):
  refused("configs/rs.py", [f"--config.{old}=/tmp/x"],
          f"--config.{old} is now --config.{new}; pass that instead")


@pytest.mark.parametrize("old,new", sorted(stages.RENAMED_KEYS.items()))
def test_a_renamed_key_in_a_config_is_refused_before_the_stage_runs(old, new):
  section, field = old.split(".")
  config = ml_collections.ConfigDict({"stage": "rs", section: {field: "/tmp/x"}})
  with pytest.raises(UserError, match=rf"^--config\.{old} is now --config\.{new}; pass that"):
    stages.run(config, "/nonexistent")


# ---------------------------------------------------------------------------------------
# The `:arg` after the config file's name.


def test_parse_arg_types_each_value_like_its_default():
  got = common.parse_arg("size=13m,iterations=3,lr=0.5,frac=1,runlocal", size="tiny",
                         iterations=2, lr=1.0, frac=0.25, runlocal=False)
  assert got == {"size": "13m", "iterations": 3, "lr": 0.5, "frac": 1.0, "runlocal": True}
  assert type(got["iterations"]) is int and type(got["frac"]) is float
  assert common.parse_arg("", size="tiny") == {"size": "tiny"}
  for value, want in [("false", False), ("False", False), ("0", False), ("true", True),
                      ("1", True)]:
    assert common.parse_arg(f"runlocal={value}", runlocal=not want) == {"runlocal": want}


@pytest.mark.parametrize("arg,match", [
    ("sizee=13m", r"unknown config argument 'sizee'; allowed: size, iterations, runlocal"),
    ("iterations=2.5", r"iterations='2.5' must be an integer"),
    ("iterations=True", r"iterations='True' must be an integer"),
    ("iterations=two", r"iterations='two' must be an integer"),
    ("runlocal=maybe", r"runlocal='maybe' must be true or false"),
])
def test_parse_arg_refuses_what_it_cannot_apply(arg, match):
  with pytest.raises(ValueError, match=match):
    common.parse_arg(arg, size="tiny", iterations=2, runlocal=False)


def test_parse_arg_mistakes_are_one_line_on_the_command_line():
  refused("configs/online.py:iterations=2.5", [], "iterations='2.5'")
  refused("configs/lm.py:size=test,sizee=x", [], "unknown config argument 'sizee'")
