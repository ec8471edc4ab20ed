"""The layout's rules, read from the source with `ast` (nested and relative imports included).

The library (`hh_jax/`) never imports `configs/` or `launch/`: configs and launchers build on
the library, not the other way round. `hh_jax/model/` imports nothing from `hh_jax/train/`:
inference (sampling, scoring, export) reads a run's params without the training code.
`hh_jax/data/` (the synthetic world and its gold labelers among it) reaches nothing in
`hh_jax/rl/`, directly or through another module, and no two modules import each other by any
path: imports run one way.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def module_name(path: pathlib.Path, root: pathlib.Path = REPO) -> str:
  """The dotted name of `path` under `root` (a file elsewhere: its stem)."""
  rel = path.relative_to(root) if path.is_relative_to(root) else pathlib.Path(path.name)
  parts = list(rel.with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path, root: pathlib.Path = REPO) -> set[str]:
  """Every module `path` imports, absolute names; `from a import b` counts as a and a.b;
  a relative import (`from ..rl import x`) is resolved against the file's package."""
  name = module_name(path, root)
  package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package[:len(package) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module
      out.add(module)
      out.update(f"{module}.{a.name}" for a in node.names)
  return out


def import_graph(package_dir: pathlib.Path, root: pathlib.Path = REPO) -> dict[str, set[str]]:
  """{module: the package's modules it imports}, over every .py file under `package_dir`."""
  paths = {module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}
  return {m: (imported_modules(p, root) & paths.keys()) - {m} for m, p in paths.items()}


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
  """{module reached from `start`: the module that imported it}, breadth first."""
  seen, todo = {start: ""}, [start]
  while todo:
    m = todo.pop(0)
    for n in sorted(graph[m]):
      if n not in seen:
        seen[n] = m
        todo.append(n)
  return seen


def path_to(seen: dict[str, str], end: str) -> list[str]:
  out = [end]
  while seen[out[-1]]:
    out.append(seen[out[-1]])
  return out[::-1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Import circles: for each module, a path from one of its imports back to it."""
  out = []
  for m in sorted(graph):
    for n in sorted(graph[m]):
      seen = reachable(graph, n)
      if m in seen:
        out.append([m] + path_to(seen, m))
        break
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


def test_data_reaches_nothing_in_rl():
  graph = import_graph(REPO / "hh_jax")
  for m in sorted(x for x in graph if x.startswith("hh_jax.data")):
    seen = reachable(graph, m)
    bad = [path_to(seen, n) for n in seen if n.startswith("hh_jax.rl")]
    assert bad == [], f"{m} reaches hh_jax.rl: {' -> '.join(bad[0])}"


def test_imports_run_one_way():
  found = cycles(import_graph(REPO / "hh_jax"))
  assert found == [], "import circle(s): " + "; ".join(" -> ".join(c) for c in found)


def test_the_graph_sees_relative_transitive_and_circular_imports(tmp_path):
  pkg = tmp_path / "p"
  (pkg / "data").mkdir(parents=True)
  (pkg / "rl").mkdir()
  for d in (pkg, pkg / "data", pkg / "rl"):
    (d / "__init__.py").write_text("")
  (pkg / "data" / "a.py").write_text("from . import b\n")
  (pkg / "data" / "b.py").write_text("def f():\n  from ..rl import c\n")
  (pkg / "rl" / "c.py").write_text("import p.data.a\n")
  graph = import_graph(pkg, tmp_path)
  assert graph["p.data.a"] == {"p.data", "p.data.b"}
  assert "p.rl.c" in graph["p.data.b"]
  seen = reachable(graph, "p.data.a")
  assert path_to(seen, "p.rl.c") == ["p.data.a", "p.data.b", "p.rl.c"]
  assert ["p.data.a", "p.data.b", "p.rl.c", "p.data.a"] in cycles(graph)


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
