"""The layout's two rules, read from the source with `ast` (nested imports included).

The library (`hh_jax/`) never imports `configs/` or `launch/`: configs and launchers build on
the library, not the other way round. `hh_jax/model/` imports nothing from `hh_jax/train/`:
inference (sampling, scoring, export) reads a run's params without the training code.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, absolute names; `from a import b` counts as a and a.b."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


def _under(names: set[str], package: str) -> list[str]:
  return sorted(n for n in names if n == package or n.startswith(package + "."))


def _modules(folder: str) -> list[pathlib.Path]:
  return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("hh_jax"), ids=lambda p: str(p.relative_to(REPO)))
def test_library_imports_no_configs_or_launchers(path):
  names = imported_modules(path)
  assert _under(names, "configs") == [] and _under(names, "launch") == []


@pytest.mark.parametrize("path", _modules("hh_jax/model"), ids=lambda p: str(p.relative_to(REPO)))
def test_model_imports_nothing_from_train(path):
  assert _under(imported_modules(path), "hh_jax.train") == []


def test_the_checks_see_nested_and_from_imports(tmp_path):
  src = tmp_path / "m.py"
  src.write_text("def f():\n  from configs import lm\n  from hh_jax import train\n"
                 "import configs.sweeps.pm_ladder as x\n")
  names = imported_modules(src)
  assert _under(names, "configs") == ["configs", "configs.lm", "configs.sweeps.pm_ladder"]
  assert _under(names, "hh_jax.train") == ["hh_jax.train"]


@pytest.mark.parametrize("path", _modules("hh_jax"), ids=lambda p: str(p.relative_to(REPO)))
def test_dialogue_markers_are_defined_once(path):
  """Only hh_jax/data/markers.py binds a name to the `\\n\\nHuman:`/`\\n\\nAssistant:` strings."""
  if path == REPO / "hh_jax" / "data" / "markers.py":
    return
  bound = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
           and node.value.value in ("\n\nHuman:", "\n\nAssistant:")]
  assert bound == [], f"import HUMAN/ASSISTANT from hh_jax.data.markers (lines {bound})"
