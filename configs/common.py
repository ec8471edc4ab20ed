"""Helpers shared by the stage configs: parsing the `:arg` string of --config."""
import ast

import ml_collections


def parse_arg(arg, **defaults):
  """Parses 'size=13m,runlocal=True' into a dict over `defaults`, typed like each default.

  An unknown key is a one-line error, so a typo never silently keeps the default.
  """
  out = dict(defaults)
  if not arg:
    return out
  for item in str(arg).split(","):
    if not item:
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; allowed: {', '.join(defaults)}")
    if not sep:
      value = "True"
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={value!r} must be true or false")
      out[key] = value.lower() in ("true", "1")
    elif isinstance(default, (int, float)):
      try:
        out[key] = type(default)(ast.literal_eval(value))
      except (ValueError, SyntaxError):
        raise ValueError(f"config argument {key}={value!r} must be a number") from None
    else:
      out[key] = value
  return out


def distributed():
  """Multi-process settings; empty means: the environment's, automatic on TPU VMs, or none.

  See hh_jax/parallel/multihost.py. Set all three to start a multi-host CPU/GPU job by hand.
  """
  return ml_collections.ConfigDict({"coordinator_address": "", "num_processes": 0,
                                    "process_id": -1, "timeout_s": 300})
