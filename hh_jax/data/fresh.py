"""Evaluation prompts that no training set of the same run holds, and the files that show it.

An evaluation on prompts a model trained on measures memory, not the policy. So every set
of contexts a run uses is recorded in the workdir of the stage that used it, as digests of
the normalised text (`normalise`: whitespace runs to one space, lower case):

* `train_contexts.json`: what a stage trained on (the PM's comparisons, the PPO and online
  prompt pools, the rejection-sampling prompts);
* `eval_contexts.json`: what an evaluation scored (PPO's end-of-run evaluation, the online
  held-out splits and Elo prompts, the report's Elo prompts and capability items), each
  with `excluded`: how many drawn candidates it passed over because a training set had them.

Each entry is `{name: {"size", "digests", ...}}`. Whoever draws second avoids the other
kind (`draw`): an evaluation avoids every training context recorded in the run, and a
training pool drawn after an evaluation (the online loop's later iterations) avoids its
contexts, so the two never meet whatever the order. "The run" is the outermost directory
above a workdir that holds `RUN_MARKER` (the pipeline and the online loop write one: their
stages live below them), plus the upstream workdirs a stage names (`pm.workdir`,
`init.workdir`). The synthetic world is large enough (`synthetic.prompt_stream`) that an
evaluation passes over a few candidates at most.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable, Sequence

import jax

from hh_jax import files

TRAIN = "train"
EVAL = "eval"
FILES = {TRAIN: "train_contexts.json", EVAL: "eval_contexts.json"}
RUN_MARKER = "run_contexts_root"  # a directory whose stages form one run
_SKIP_DIRS = {"checkpoints", "jax_cache", "tb", "tensorboard", "responses", "report_responses"}


def normalise(context: str) -> str:
  """The text two contexts are compared by: whitespace runs as one space, lower case."""
  return " ".join(context.split()).lower()


def digest(context: str) -> str:
  """A short, stable name of a context's normalised text."""
  return hashlib.sha256(normalise(context).encode("utf-8")).hexdigest()[:24]


def record(workdir: str, kind: str, name: str, contexts: Sequence[str], **extra) -> dict:
  """Adds (or replaces) set `name` of `kind` ("train"/"eval") in the workdir's file; `extra`
  (e.g. excluded=, candidates=, shortened=) is stored beside the digests. Returns the entry."""
  digests = sorted({digest(c) for c in contexts})
  entry = {"size": len(digests), **extra, "digests": digests}
  if jax.process_index() == 0:
    path = files.join(workdir, FILES[kind])
    data = files.read_json(path) if files.exists(path) else {}
    data[name] = entry
    files.makedirs(workdir)
    files.write_json(path, data, indent=1, sort_keys=True)
  return entry


def mark_run(workdir: str) -> None:
  """Makes `workdir` the root of a run: its stages' recorded sets are one run's."""
  path = files.join(workdir, RUN_MARKER)
  if jax.process_index() == 0 and not files.exists(path):
    files.makedirs(workdir)
    files.write_text(path, "stages below this directory avoid each other's contexts\n")


def run_dirs(workdir: str, upstream: Iterable[str] = ()) -> list[str]:
  """The directories whose recorded sets a stage in `workdir` must keep apart from its own:
  the outermost marked ancestor (or the workdir itself) and each upstream workdir."""
  workdir = files.abspath(workdir)
  root, here = workdir, workdir
  while True:
    if files.exists(files.join(here, RUN_MARKER)):
      root = here
    parent = here.rstrip("/").rsplit("/", 1)[0]
    if not parent or parent == here or parent.endswith(":/") or parent.endswith(":"):
      break
    here = parent
  out = [root]
  for u in upstream:
    u = files.abspath(u) if u else ""
    if u and not any(u == d or u.startswith(d.rstrip("/") + "/") for d in out):
      out.append(u)
  return out


def upstream(config) -> list[str]:
  """The runs a stage's config names as its sources (`init.workdir`, `pm.workdir`,
  `pm.test_workdir`): their recorded sets belong to the stage's run too."""
  out = []
  for section, field in (("init", "workdir"), ("pm", "workdir"), ("pm", "test_workdir")):
    value = (config.get(section) or {}).get(field, "")
    if value:
      out.append(str(value))
  return out


def _files_under(directory: str, filename: str) -> list[str]:
  """Every `filename` under `directory` (checkpoint and cache trees skipped)."""
  if not files.is_remote(directory):
    found = []
    for here, dirs, names in os.walk(directory):
      dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
      if filename in names:
        found.append(os.path.join(here, filename))
    return found
  found, todo = [], [directory]
  while todo:
    d = todo.pop()
    if not files.isdir(d):
      continue
    for name in files.listdir(d):
      path = files.join(d, name)
      if name == filename:
        found.append(path)
      elif name not in _SKIP_DIRS and files.isdir(path):
        todo.append(path)
  return found


def read_sets(dirs: Iterable[str], kind: str) -> dict[str, dict]:
  """{"<file path>:<set name>": entry} of every recorded set of `kind` under `dirs`."""
  out = {}
  for d in dirs:
    if not files.exists(d):
      continue
    for path in _files_under(d, FILES[kind]):
      for name, entry in files.read_json(path).items():
        out[f"{path}:{name}"] = entry
  return out


def recorded(dirs: Iterable[str], kind: str, own: str | None = None) -> set[str]:
  """The digests of every set of `kind` recorded under `dirs`, less those in the file of
  directory `own` (a stage's own workdir: a resumed stage draws what it drew before)."""
  skip = files.join(files.abspath(own), FILES[kind]) if own else None
  return {x for key, e in read_sets(dirs, kind).items() if key.rsplit(":", 1)[0] != skip
          for x in e["digests"]}


def draw(candidates: Iterable, n: int | None, avoid: set[str], text=lambda c: c
         ) -> tuple[list, int]:
  """(the first `n` candidates whose `text` is in no set of `avoid` and not already kept,
  how many were passed over because `avoid` held them). n None: every candidate."""
  kept, seen, excluded = [], set(), 0
  if n is not None and n <= 0:
    return kept, excluded
  for c in candidates:  # read no further than needed: a candidate may be costly to make
    d = digest(text(c))
    if d in avoid:
      excluded += 1
    elif d not in seen:
      seen.add(d)
      kept.append(c)
      if n is not None and len(kept) >= n:
        break
  return kept, excluded


__all__ = ["normalise", "digest", "record", "mark_run", "run_dirs", "read_sets", "recorded",
           "draw", "upstream", "FILES", "TRAIN", "EVAL"]
