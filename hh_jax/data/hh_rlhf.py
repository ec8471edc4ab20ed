"""Reader for the published hh-rlhf files: `{"chosen": ..., "rejected": ...}` per line.

The published transcripts repeat the whole dialogue in both fields; a preference model
compares two replies to one context, so each line is split into the shared context and
the two final Assistant replies. The real data has quirks that must not silently become
training signal, so each is skipped by a rule and counted, in this order:

1. differing_context: the two transcripts differ before their final Assistant turn;
2. empty_response: either final reply is blank;
3. identical: both final replies are the same text (after stripping whitespace).

A line that is not a JSON object with two string fields holding an Assistant turn (or
is not UTF-8, or is longer than `max_line_bytes`) is malformed: it is reported as
`file:line: reason` and skipped; if more than `max_bad_share` of a file's lines are
malformed the read stops with one clear line. A truncated or damaged .gz keeps the pairs
before the damage and says where it stopped (`report.truncated`); see `records`.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
from typing import Sequence

from hh_jax.data import records
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.data.pairs import Pair
from hh_jax.errors import UserError

SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
SPLITS = ("train", "test")
DEFAULT_MAX_BAD_SHARE = records.DEFAULT_MAX_BAD_SHARE


class MissingDataError(UserError, FileNotFoundError):
  """A data path that does not exist: `hh_jax.main` prints it as one line."""


@dataclasses.dataclass
class ReadReport:
  """What a read kept and skipped; `turns` is the histogram of kept pairs' Human turns."""
  lines: int = 0
  pairs: int = 0
  differing_context: int = 0
  empty_response: int = 0
  identical: int = 0
  malformed: list[str] = dataclasses.field(default_factory=list)
  turns: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  truncated: list[str] = dataclasses.field(default_factory=list)  # "file:line: why" per file

  def merge(self, other: "ReadReport") -> "ReadReport":
    return ReadReport(
        self.lines + other.lines, self.pairs + other.pairs,
        self.differing_context + other.differing_context,
        self.empty_response + other.empty_response, self.identical + other.identical,
        self.malformed + other.malformed, self.turns + other.turns,
        self.truncated + other.truncated)

  def summary(self) -> str:
    hist = ", ".join(f"{k}:{v}" for k, v in sorted(self.turns.items()))
    return (f"{self.lines} lines -> {self.pairs} pairs kept; skipped: "
            f"{self.differing_context} differing-context, {self.empty_response} empty, "
            f"{self.identical} identical, {len(self.malformed)} malformed; turns {{{hist}}}"
            + "".join(f"; damaged: {t}" for t in self.truncated)
            + (f"; first malformed: {self.malformed[0]}" if self.malformed else ""))


def split_transcript(text: str) -> tuple[str, str]:
  """(context ending in "\\n\\nAssistant:", final reply); raises ValueError without one."""
  i = text.rfind(ASSISTANT)
  if i < 0:
    raise ValueError("no '\\n\\nAssistant:' turn")
  cut = i + len(ASSISTANT)
  return text[:cut], text[cut:]


def count_turns(context: str) -> int:
  """Human turns in a context: the number of "\\n\\nHuman:" markers."""
  return context.count(HUMAN)


def parse_line(line: str | bytes) -> tuple[str, str, str, str]:
  """(chosen context, chosen reply, rejected context, rejected reply) or ValueError(reason)."""
  obj = records.json_object(line)
  out = []
  for key in ("chosen", "rejected"):
    value = records.string(obj, key)  # ValueError(reason) when missing or not a string
    try:
      out.extend(split_transcript(value))
    except ValueError as e:
      raise ValueError(f"{key!r} has {e}") from None
  return tuple(out)


def read_file(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE,
              source: str = "", max_line_bytes: int = records.MAX_LINE_BYTES,
              ) -> tuple[list[Pair], ReadReport]:
  """Reads one .jsonl or .jsonl.gz file; see the module docstring for what is skipped."""
  if not os.path.isfile(path):
    raise MissingDataError(f"{path}: no such file; point the reader at an hh-rlhf directory "
                            "holding <subset>/<split>.jsonl.gz")
  pairs: list[Pair] = []
  rep = ReadReport()
  skips = records.Skips(path, max_bad_share)
  rep.malformed = skips.reasons  # the same list: filled as the lines are read
  for lineno, raw in records.lines(path, skips, max_line_bytes):
    try:
      cc, rc, cr, rr = parse_line(raw)
    except ValueError as e:
      skips.bad(lineno, str(e))
      continue
    if cc != cr:
      rep.differing_context += 1
    elif not rc.strip() or not rr.strip():
      rep.empty_response += 1
    elif rc.strip() == rr.strip():
      rep.identical += 1
    else:
      turns = count_turns(cc)
      rep.turns[turns] += 1
      rep.pairs += 1
      pairs.append(Pair(cc, rc, rr, turns, source))
  rep.lines = skips.records
  rep.truncated = [skips.truncated] if skips.truncated else []
  skips.finish("fix or re-download the file")  # raises past max_bad_share, else warns
  return pairs, rep


def hold_out_contexts(pairs: Sequence[Pair], num_held: int, salt: str
                      ) -> tuple[list[Pair], list[Pair]]:
  """(held, train): whole contexts, in a permutation seeded by `salt`, until >= num_held.

  A context's pairs all go to one side, so no pair text (and no reply read against its
  context) is on both; the train side always keeps at least one context. Both sides keep
  the input order.
  """
  groups: dict[str, int] = {}
  for p in pairs:
    groups[p.context] = groups.get(p.context, 0) + 1
  contexts = list(groups)
  random.Random(salt).shuffle(contexts)
  taken, n = 0, 0
  while n < num_held and taken < len(contexts) - 1:
    n += groups[contexts[taken]]
    taken += 1
  out = set(contexts[:taken])
  return [p for p in pairs if p.context in out], [p for p in pairs if p.context not in out]


def find_file(root: str, subset: str, split: str) -> str:
  """The `<root>/<subset>/<split>.jsonl[.gz]` file; one clear error when it is missing."""
  if subset not in SUBSETS:
    raise UserError(f"unknown hh-rlhf subset {subset!r}; use one of {', '.join(SUBSETS)}")
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
  for ext in (".jsonl.gz", ".jsonl"):
    path = os.path.join(root, subset, split + ext)
    if os.path.isfile(path):
      return path
  raise MissingDataError(f"no {subset}/{split}.jsonl.gz (or .jsonl) under {root}; "
                          "point data.hh_dir at the directory that holds the subsets")


def read(root: str, subsets: Sequence[str] = ("harmless-base",), split: str = "train",
         max_bad_share: float = DEFAULT_MAX_BAD_SHARE) -> tuple[list[Pair], ReadReport]:
  """All pairs of `split` from the given subsets, in file order, and the merged report."""
  pairs: list[Pair] = []
  rep = ReadReport()
  for subset in subsets:
    p, r = read_file(find_file(root, subset, split), max_bad_share, f"{subset}/{split}")
    pairs += p
    rep = rep.merge(r)
  return pairs, rep


def to_line(pair: Pair) -> str:
  """One comparison as a line of the published format (`read_file` reads it back)."""
  return json.dumps({"chosen": pair.context + pair.chosen,
                     "rejected": pair.context + pair.rejected}) + "\n"


def write_file(path: str, pairs: Sequence[Pair]) -> int:
  """Writes comparisons as hh-rlhf jsonl (local or gs://); returns how many were written.

  Every producer of new comparisons (the online loop's labeler, rejection sampling) writes
  this format, so a PM run trains on them like on the published files.
  """
  from hh_jax import files  # pylint: disable=g-import-not-at-top
  files.write_text(path, "".join(to_line(p) for p in pairs))
  return len(pairs)
