"""The one entry point: `python -m hh_jax.main --config=configs/<stage>.py:<arg> --workdir=DIR`.

Each stage is a module with `run(config, workdir)`; `config.stage` picks it. A mistake the
user can fix (config, paths, data, checkpoints) ends in one line on stderr and exit code 2.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from hh_jax.errors import EX_TEMPFAIL, Preempted, UserError
from hh_jax.parallel import multihost

from hh_jax.stages import RENAMED_KEYS, STAGES, run  # noqa: F401  (main.run: the same)
from hh_jax.stages import renamed as _renamed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config file, e.g. configs/lm.py:size=tiny")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config")


def _main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass settings as --config.KEY=VALUE")
  if _WORKDIR.value is None:
    raise UserError("--workdir is required: pass --workdir=DIR")
  # Before anything touches a device: a multi-process run must see the global device list.
  multihost.initialize(_CONFIG.value.get("distributed"))
  run(_CONFIG.value, _WORKDIR.value)


def _fail(message: str) -> None:
  # One write, newline included: print() writes the text and the newline separately, and
  # orbax's threads, still logging a failed save, could land between the two.
  sys.stderr.flush()
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(2)


def main():
  logging.set_verbosity(logging.WARNING)
  try:
    app.run(_main, flags_parser=_parse_flags)
  except UserError as e:
    _fail(str(e))
  except Preempted as e:  # SIGTERM: a checkpoint is saved; EX_TEMPFAIL says "run again"
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(EX_TEMPFAIL)


def _parse_flags(argv):
  """absl parsing, with config-file and override mistakes reduced to one line."""
  for a in argv:
    key = a.split("=")[0][len("--config."):]
    if a.startswith("--config.") and key in RENAMED_KEYS:
      _fail(_renamed(key))
    if a.startswith("--config="):
      path = a[len("--config="):].split(":")[0]
      if not os.path.isfile(path):
        _fail(f"config file {path!r} does not exist; pass --config=configs/<stage>.py[:arg]")
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    key, hint = _unknown_key(e)
    culprit = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a.split("=")[0]]
    where = culprit[0] if culprit else f"--config...{key}"
    _fail(f"unknown config key in {where}: the config has no {key!r}"
          + (f" ({hint})" if hint else "") + "; check the spelling against the config file")
  except (flags.Error, ValueError, FileNotFoundError, ImportError) as e:
    line = _first_line(e)
    if isinstance(e, flags.IllegalFlagValueError) and line.startswith("flag --config."):
      # An override's bad value: absl's own line names the field, its cause does not.
      _fail(f"bad value in {line[len('flag '):]}; give a value of the field's type")
    _fail(_one_line(e))


def _first_line(e: Exception) -> str:
  return next((ln for ln in str(e).strip().splitlines() if ln.strip()), type(e).__name__)


def _unknown_key(e: Exception) -> tuple[str, str]:
  """(the key, ml_collections' "Did you mean ..." hint or '') of an unknown-key error.

  ml_collections raises KeyError("'key'\\nDid you mean ...?"), sometimes wrapped in an
  AttributeError whose text is that message's repr; the KeyError's own text is the clean one.
  """
  while not isinstance(e, KeyError) and e.__context__ is not None:
    e = e.__context__
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  key, _, hint = text.partition("\n")
  return key.strip("'\" "), " ".join(hint.split())


def _one_line(e: Exception) -> str:
  cause = e
  while cause.__cause__ is not None or cause.__context__ is not None:
    cause = cause.__cause__ or cause.__context__
  lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()] or [type(cause).__name__]
  text = lines[-1] if isinstance(cause, KeyError) else lines[0]
  if "--config" not in text and "config" not in text.lower():
    text = f"bad --config: {text}"
  return text


if __name__ == "__main__":
  from hh_jax import host_malloc
  host_malloc.ensure()  # a CPU run re-execs once with the allocator settings (see host_malloc)
  main()
