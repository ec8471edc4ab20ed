"""Preference-model pretraining (PMP) pairs from public dumps, binarized as in the paper.

Three sources, each read in the format its public dump uses:

* StackExchange `Posts.xml`: `<row>` elements with PostTypeId 1 (question: Title, Body,
  AcceptedAnswerId) and 2 (answer: ParentId, Score, Body). Score is the net vote count,
  which stands in for upvotes. An answer scores round(log2(1 + votes)) + 1 if accepted,
  -1 (+1 if accepted) when votes are negative; two answers to one question with
  different scores make a pair.
* Reddit, pushshift comment dumps (`RC_*.jsonl[.gz]`): one JSON object per line with
  `id`, `body`, `score`, `parent_id` ("t1_<comment>" or "t3_<submission>") and `link_id`.
  Sibling replies (same parent_id) with different karma make a pair. The parent text is
  the parent comment's body, or, for top-level comments, the submission's title and
  selftext from an optional pushshift submissions file (`RS_*.jsonl[.gz]`: `id`, `title`,
  `selftext`); replies whose parent is in neither are skipped.
* Wikipedia vandalism reverts, JSON lines defined here (see `WIKI_FIELDS`): one revert
  edit per line, `{"title": page title, "comment": the revert's edit summary,
  "vandalized": text before the revert, "restored": text after it}`. Only edits whose
  summary names vandalism (`VANDALISM_RE`: "vandal...", "rvv", "rv v") count; the
  restored text beats the vandalized text. Extract such records from a pages-meta-history
  dump by pairing each revert with its parent revision's text.

Binarization (Askell et al. 2021, PMP): a ranked pair "A beats B" becomes two pairs on
the same context, "GOOD: A" beats "BAD: A" and "BAD: B" beats "GOOD: B", so the PM
first learns to judge a label against the text, a bias that finetuning can unlearn.
"""
from __future__ import annotations

import dataclasses
import gzip
import html
import json
import math
import os
import random
import re
import xml.etree.ElementTree as ET
from typing import Iterable, Iterator, Mapping, Sequence

from hh_jax.data.hh_rlhf import MissingDataError
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.data.pairs import Pair
from hh_jax.errors import UserError

SOURCES = ("stackexchange", "reddit", "wikipedia")
WIKI_FIELDS = ("title", "comment", "vandalized", "restored")
VANDALISM_RE = re.compile(r"vandal|\brvv\b|\brv v\b", re.IGNORECASE)
REDDIT_GONE = ("", "[deleted]", "[removed]")

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t\r\f\v]+")


def _dialogue(human: str) -> str:
  return f"{HUMAN} {human}{ASSISTANT}"


def html_to_text(body: str) -> str:
  """Post bodies are HTML; the PM sees plain text with paragraph breaks kept."""
  text = re.sub(r"</p>|<br\s*/?>", "\n", body)
  text = html.unescape(_TAG.sub("", text))
  lines = [_SPACE.sub(" ", l).strip() for l in text.split("\n")]
  return "\n".join(l for l in lines if l)


def _require(path: str) -> None:
  if not os.path.isfile(path):
    raise MissingDataError(f"{path}: no such file; check the PMP data paths in the config")


def _ranked_pairs(context: str, scored: Sequence[tuple[str, float]], source: str,
                  min_gap: float = 0.0) -> list[Pair]:
  """All pairs of (text, score) whose scores differ (by >= min_gap), the higher chosen."""
  out = []
  for i in range(len(scored)):
    for j in range(i + 1, len(scored)):
      (a, sa), (b, sb) = scored[i], scored[j]
      if sa == sb or abs(sa - sb) < min_gap or a.strip() == b.strip():
        continue
      better, worse = (a, b) if sa > sb else (b, a)
      out.append(Pair(context, " " + better, " " + worse, 1, source))
  return out


# ---------------------------------------------------------------------------------------
# StackExchange.


def stackexchange_score(votes: int, accepted: bool) -> int:
  """The paper's answer score: round(log2(1 + votes)) (-1 if negative), +1 if accepted."""
  base = -1 if votes < 0 else round(math.log2(1 + votes))
  return base + int(accepted)


def stackexchange_pairs(path: str) -> list[Pair]:
  """Ranked (not yet binarized) pairs of answers to the same question, in question order."""
  _require(path)
  questions: dict[str, tuple[str, str | None]] = {}
  answers: dict[str, list[tuple[int, str, int]]] = {}
  try:
    for _, el in ET.iterparse(path, events=("end",)):
      if el.tag != "row":
        continue
      a = el.attrib
      kind = a.get("PostTypeId")
      if kind == "1" and "Id" in a:
        title = html.unescape(a.get("Title", "")).strip()
        body = html_to_text(a.get("Body", ""))
        questions[a["Id"]] = ("\n".join(x for x in (title, body) if x),
                              a.get("AcceptedAnswerId"))
      elif kind == "2" and {"Id", "ParentId", "Score"} <= a.keys():
        answers.setdefault(a["ParentId"], []).append(
            (int(a["Id"]), html_to_text(a.get("Body", "")), int(a["Score"])))
      el.clear()
  except ET.ParseError as e:
    raise UserError(f"{path}: not a StackExchange Posts.xml ({e}); "
                     "pass the Posts.xml file from the site's dump") from None
  except ValueError as e:
    raise UserError(f"{path}: a row has a non-integer Id/Score ({e}); "
                     "pass an unmodified Posts.xml") from None
  out = []
  for qid, (question, accepted) in questions.items():
    rows = sorted(answers.get(qid, ()))
    scored = [(body, stackexchange_score(votes, str(aid) == accepted))
              for aid, body, votes in rows if body]
    out += _ranked_pairs(_dialogue(question), scored, "stackexchange")
  return out


# ---------------------------------------------------------------------------------------
# Reddit.


def _jsonl(path: str) -> Iterator[tuple[int, dict]]:
  _require(path)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(f"{path}:{lineno}: not JSON ({e.msg}); "
                         "pass an uncompressed or .gz JSON-lines dump") from None
      if not isinstance(obj, dict):
        raise UserError(f"{path}:{lineno}: expected a JSON object per line")
      yield lineno, obj


def reddit_pairs(comments_path: str, submissions_path: str | None = None,
                 min_score_gap: int = 1) -> list[Pair]:
  """Ranked pairs of sibling comments whose karma differs by at least `min_score_gap`."""
  parents: dict[str, str] = {}
  if submissions_path:
    for _, s in _jsonl(submissions_path):
      if "id" in s:
        text = "\n".join(x for x in (s.get("title", ""), s.get("selftext", ""))
                         if x and x not in REDDIT_GONE)
        parents["t3_" + s["id"]] = text
  siblings: dict[str, list[tuple[str, int]]] = {}
  for lineno, c in _jsonl(comments_path):
    missing = [k for k in ("id", "body", "score", "parent_id") if k not in c]
    if missing:
      raise UserError(f"{comments_path}:{lineno}: missing {', '.join(missing)}; "
                       "pass a pushshift comments dump (RC_*.jsonl)")
    body = str(c["body"]).strip()
    parents["t1_" + str(c["id"])] = body if body not in REDDIT_GONE else ""
    if body not in REDDIT_GONE:
      siblings.setdefault(str(c["parent_id"]), []).append((body, int(c["score"])))
  out = []
  for parent_id, replies in siblings.items():
    parent = parents.get(parent_id, "")
    if not parent:
      continue
    out += _ranked_pairs(_dialogue(parent), replies, "reddit", min_score_gap)
  return out


# ---------------------------------------------------------------------------------------
# Wikipedia.


def wikipedia_pairs(path: str) -> list[Pair]:
  """Restored text beats vandalized text, for reverts whose summary names vandalism."""
  out = []
  for lineno, r in _jsonl(path):
    missing = [k for k in WIKI_FIELDS if not isinstance(r.get(k), str)]
    if missing:
      raise UserError(f"{path}:{lineno}: missing string field(s) {', '.join(missing)}; "
                       f"each line needs {', '.join(WIKI_FIELDS)} (see hh_jax/data/pmp.py)")
    if not VANDALISM_RE.search(r["comment"]):
      continue
    good, bad = r["restored"].strip(), r["vandalized"].strip()
    if not good or not bad or good == bad:
      continue
    context = _dialogue(f'What does the Wikipedia article "{r["title"]}" say?')
    out.append(Pair(context, " " + good, " " + bad, 1, "wikipedia"))
  return out


# ---------------------------------------------------------------------------------------
# Binarization and mixing.


def binarize(pairs: Iterable[Pair]) -> list[Pair]:
  """A beats B  ->  "GOOD: A" beats "BAD: A", and "BAD: B" beats "GOOD: B"."""
  out = []
  for p in pairs:
    out.append(Pair(p.context, " GOOD:" + p.chosen, " BAD:" + p.chosen, p.turns, p.source))
    out.append(Pair(p.context, " BAD:" + p.rejected, " GOOD:" + p.rejected, p.turns,
                    p.source))
  return out


@dataclasses.dataclass(frozen=True)
class Mixture:
  """Relative weights of the PMP sources; a zero weight leaves a source out."""
  stackexchange: float = 1.0
  reddit: float = 1.0
  wikipedia: float = 1.0

  def weights(self) -> dict[str, float]:
    return {s: float(getattr(self, s)) for s in SOURCES}


def mix(sources: Mapping[str, Sequence[Pair]], mixture: Mixture | Mapping[str, float],
        num: int, seed: int) -> list[Pair]:
  """`num` pairs drawn from the sources in proportion to the weights, shuffled.

  Counts per source are exact (largest remainder); within a source pairs are taken in
  a seeded order, and a small source is cycled (upsampled) rather than over-weighted.
  """
  weights = mixture.weights() if isinstance(mixture, Mixture) else dict(mixture)
  unknown = set(weights) - set(SOURCES)
  if unknown:
    raise UserError(f"unknown PMP source(s) {sorted(unknown)}; use {', '.join(SOURCES)}")
  if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
    raise UserError(f"PMP mixture weights must be >= 0 with a positive sum, got {weights}")
  active = [s for s in SOURCES if weights.get(s, 0) > 0]
  for s in active:
    if not sources.get(s):
      raise UserError(f"PMP mixture gives {s} weight {weights[s]:g} but there are no {s} "
                       "pairs; set its weight to 0 or give it data")
  total = sum(weights[s] for s in active)
  exact = {s: num * weights[s] / total for s in active}
  counts = {s: int(exact[s]) for s in active}
  by_remainder = sorted(active, key=lambda s: (counts[s] - exact[s], SOURCES.index(s)))
  for s in by_remainder[:num - sum(counts.values())]:
    counts[s] += 1
  rng = random.Random(f"pmp-mix/{seed}")
  out = []
  for s in active:
    data = sources[s]
    order: list[int] = []
    while len(order) < counts[s]:
      cycle = list(range(len(data)))
      rng.shuffle(cycle)
      order += cycle
    out += [data[i] for i in order[:counts[s]]]
  rng.shuffle(out)
  return out
