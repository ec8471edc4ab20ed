"""Every process a test starts has a deadline and is stopped: checked on the tests' source.

A test that waits on a child without a timeout hangs the suite when the child hangs, and a
child started with a bare `subprocess.Popen` keeps running (training, holding a port) when
its test fails before the wait. So in tests/*.py:

* `subprocess.run`/`call`/`check_call`/`check_output` pass `timeout=`;
* `.communicate(...)` and `.wait(...)` pass a timeout;
* `subprocess.Popen` appears only in `procs.running` (which kills what is left on leaving
  its block) and in the places listed in `OWN_CLEANUP`, each of which stops its children
  in a `finally`;
* `local_multiprocess.launch` gets `timeout_s=`.
"""
import ast
import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
RUNS = {"run", "call", "check_call", "check_output"}
# file -> why its Popen is stopped without procs.running.
OWN_CLEANUP = {
    "procs.py": "running() itself",
    "gcs_emulator.py": "Emulator.__init__ stops the server if it does not come up; the "
                       "conftest fixture calls stop() after the test",
    "feedback_fakes.py": "Server stops the feedback server if it does not come up, and its "
                         "tests use it as a context manager or call stop() in a finally",
    "test_preemption.py": "the two-process test kills both process groups in a finally",
}


def _files():
  return sorted(p for p in TESTS.rglob("*.py") if p.name != "test_guards_procs.py")


def _calls(path):
  """(receiver's source, method, keyword names, positional args, line) of `x.f(...)` calls,
  leaving out a script's `if __name__ == "__main__":` block (run by hand, until Ctrl-C)."""
  tree = ast.parse(path.read_text(), filename=str(path))
  skip = set()
  for node in tree.body:
    if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
      skip |= {id(n) for n in ast.walk(node)}
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and id(node) not in skip):
      yield (ast.unparse(node.func.value), node.func.attr, {k.arg for k in node.keywords},
             node.args, node.lineno)


def _process(receiver: str) -> bool:
  """Whether `receiver.wait()` waits on a child process, by the names the tests use."""
  return "proc" in receiver or receiver in ("p", "reference", "server")


def problems(path) -> list[str]:
  out = []
  for owner, name, keywords, args, line in _calls(path):
    where = f"{path.name}:{line}"
    if owner == "subprocess" and name in RUNS and "timeout" not in keywords:
      out.append(f"{where}: subprocess.{name} without timeout=")
    if owner == "subprocess" and name == "Popen" and path.name not in OWN_CLEANUP:
      out.append(f"{where}: a bare subprocess.Popen; use procs.running")
    if name in ("communicate", "wait") and _process(owner) and "timeout" not in keywords \
        and not args:
      out.append(f"{where}: .{name}() without a timeout")
    if owner == "local_multiprocess" and name == "launch" and "timeout_s" not in keywords:
      out.append(f"{where}: local_multiprocess.launch without timeout_s=")
  return out


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_every_started_process_has_a_timeout_and_is_stopped(path):
  assert problems(path) == []


def test_the_check_finds_each_kind_of_problem(tmp_path):
  bad = tmp_path / "test_example.py"
  bad.write_text(
      "import subprocess\n"
      "subprocess.run(['x'], check=True)\n"
      "p = subprocess.Popen(['x'])\n"
      "p.communicate()\n"
      "p.wait()\n"
      "local_multiprocess.launch(['x'], num_processes=2)\n"
      "subprocess.run(['x'], timeout=5)\n"
      "p.communicate(timeout=5)\n"
      "ckpt.wait()\n"  # not a process
      "if __name__ == '__main__':\n"
      "  server.wait()\n")  # a script's own main: runs until Ctrl-C
  assert problems(bad) == [
      "test_example.py:2: subprocess.run without timeout=",
      "test_example.py:3: a bare subprocess.Popen; use procs.running",
      "test_example.py:4: .communicate() without a timeout",
      "test_example.py:5: .wait() without a timeout",
      "test_example.py:6: local_multiprocess.launch without timeout_s="]


def test_running_stops_the_child_when_the_block_fails():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from tests import procs  # pylint: disable=g-import-not-at-top
  started = time.monotonic()
  with pytest.raises(RuntimeError, match="the test failed"):
    with procs.running([sys.executable, "-c", "import time; time.sleep(600)"],
                       stdout=subprocess.PIPE) as proc:
      raise RuntimeError("the test failed")
  assert proc.returncode is not None and proc.returncode < 0  # killed, and reaped
  assert proc.stdout.closed
  assert time.monotonic() - started < 60
