"""Random `--config.<key>=<value>` overrides: accepted, or one line on stderr and exit 2.

`hh_jax.main._parse_flags` is what `python -m hh_jax.main` parses with; it runs here in
process (on a fresh copy of its flag each time, see `test_guards_config.parse`), over the
real keys of configs/lm.py and over junk keys, with values of every shape. A subprocess run checks the same on the real
command line. `HH_JAX_FUZZ_EXAMPLES` sets the examples per test, as in test_fuzz_readers.py.
"""
import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings, strategies as st

from configs import lm as lm_config
from tests import test_guards_config as guards_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "lm.py")
EXAMPLES = int(os.environ.get("HH_JAX_FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def _keys(d, prefix=""):
  for k, v in d.items():
    if hasattr(v, "items"):
      yield from _keys(v, f"{prefix}{k}.")
    else:
      yield prefix + k


KEYS = sorted(_keys(lm_config.get_config("size=test").to_dict()))
VALUES = (st.text(max_size=30) | st.integers().map(str) | st.floats().map(str)
          | st.sampled_from(["True", "false", "None", "[1, 2]", "(1,", "{}", "'a'", "1e999",
                             "-0", "nan", "0x10", "", "=", "configs/lm.py", "\x00", "é"]))
JUNK_KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}(\.[A-Za-z_0-9]{1,8}){0,3}", fullmatch=True)


def _parse(argv):
  """(exit code or None, stderr) of parsing argv as `python -m hh_jax.main` would.

  Through `test_guards_config.parse`: a fresh copy of the entry point's flag and sys.argv
  set to the command line, so a good override is really applied (ml_collections reads the
  overrides from sys.argv; parsing another list would refuse every one as unknown).
  """
  code, err, _ = guards_config.parse("configs/lm.py:size=test", *argv)
  return code, err


def _check(code, err):
  if code is None:
    return
  assert code == 2, (code, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert "Traceback" not in err


@FUZZ
@given(pairs=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_real_keys_random_values(pairs):
  _check(*_parse([f"--config.{k}={v}" for k, v in pairs]))


@FUZZ
@given(key=JUNK_KEYS, value=VALUES)
def test_junk_keys(key, value):
  code, err = _parse([f"--config.{key}={value}"])
  if key in KEYS:
    _check(code, err)
  else:
    assert code == 2, (key, value, err)
    _check(code, err)


def test_known_mistakes_are_one_line():
  for argv, want in [(["--config.data.batch_size=abc"], "batch_size"),
                     (["--config.nope=1"], "config.nope"),
                     (["--config.model.d_model=[1"], "d_model")]:
    code, err = _parse(argv)
    _check(code, err)
    assert code == 2 and want in err, err


@settings(max_examples=max(2, EXAMPLES // 25), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(KEYS) | JUNK_KEYS, value=VALUES.filter(lambda v: "\x00" not in v))
def test_command_line(key, value):
  """The real entry point: nothing runs (no --workdir), and a bad override is one line."""
  out = subprocess.run([sys.executable, "-m", "hh_jax.main", f"--config={CONFIG}:size=test",
                        f"--config.{key}={value}"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120, check=False)
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
