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

Dumps are dirty: every reader skips a bad line or row (not UTF-8, wrong JSON types, an
absurdly long line, junk) with a `file:line: reason`, keeps what a truncated .gz held
before the damage, and stops with one line when more than `max_bad_share` of a file's
records are bad (`hh_jax.data.records`). StackExchange rows are read one line at a
time, as the dumps write them (one `<row ... />` per line), so one broken row costs one
row, not the file.

Binarization (Askell et al. 2021, PMP): a ranked pair "A beats B" becomes two pairs on
the same context, "GOOD: A" beats "BAD: A" and "BAD: B" beats "GOOD: B", so the PM
first learns to judge a label against the text, a bias that finetuning can unlearn.
"""
from __future__ import annotations

import dataclasses
import html
import math
import os
import random
import re
import xml.etree.ElementTree as ET
from typing import Iterable, Iterator, Mapping, Sequence

from hh_jax.data import records
from hh_jax.data.hh_rlhf import MissingDataError, hold_out_contexts
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.data.pairs import Pair
from hh_jax.errors import UserError

SOURCES = ("stackexchange", "reddit", "wikipedia")
WIKI_FIELDS = ("title", "comment", "vandalized", "restored")
VANDALISM_RE = re.compile(r"vandal|\brvv\b|\brv v\b", re.IGNORECASE)
REDDIT_GONE = ("", "[deleted]", "[removed]")
DEFAULT_MAX_BAD_SHARE = records.DEFAULT_MAX_BAD_SHARE

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


_POSTS_FRAME = re.compile(r"<\?xml\b.*\?>|</?posts\b[^>]*>")


def _posts_row(raw: bytes) -> dict | None:
  """The attributes of one `<row ... />` line, None for the file's frame, ValueError(why)."""
  line = records.text(raw).strip().lstrip("\ufeff")
  if _POSTS_FRAME.fullmatch(line):
    return None
  if not line.startswith("<row"):
    raise ValueError(f"not a <row ... /> element ({line[:30]!r})")
  try:
    return ET.fromstring(line).attrib
  except ET.ParseError as e:
    raise ValueError(f"not a well-formed <row ... /> ({e})") from None


def _int_attr(a: dict, key: str) -> int:
  try:
    return records.integer(a, key)
  except ValueError:
    raise ValueError(f"{key}={a[key]!r:.30} is not an integer") from None


def stackexchange_pairs(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE,
                        max_line_bytes: int = records.MAX_LINE_BYTES) -> list[Pair]:
  """Ranked (not yet binarized) pairs of answers to the same question, in question order."""
  _require(path)
  questions: dict[str, tuple[str, str | None]] = {}
  answers: dict[str, list[tuple[int, str, int]]] = {}
  skips = records.Skips(path, max_bad_share)
  for lineno, raw in records.lines(path, skips, max_line_bytes):
    try:
      a = _posts_row(raw)
      if a is None:
        skips.records -= 1  # the <?xml ?> and <posts> frame are not records
        continue
      kind = a.get("PostTypeId")
      if kind == "1" and "Id" in a:
        title = html.unescape(a.get("Title", "")).strip()
        body = html_to_text(a.get("Body", ""))
        questions[a["Id"]] = ("\n".join(x for x in (title, body) if x),
                              a.get("AcceptedAnswerId"))
      elif kind == "2":
        missing = [k for k in ("Id", "ParentId", "Score") if k not in a]
        if missing:
          raise ValueError(f"an answer row without {', '.join(missing)}")
        answers.setdefault(a["ParentId"], []).append(
            (_int_attr(a, "Id"), html_to_text(a.get("Body", "")), _int_attr(a, "Score")))
    except ValueError as e:
      skips.bad(lineno, str(e))
  skips.finish("pass the Posts.xml of a StackExchange dump (one <row ... /> per line)")
  out = []
  for qid, (question, accepted) in questions.items():
    rows = sorted(answers.get(qid, ()))
    scored = [(body, stackexchange_score(votes, str(aid) == accepted))
              for aid, body, votes in rows if body]
    out += _ranked_pairs(_dialogue(question), scored, "stackexchange")
  return out


# ---------------------------------------------------------------------------------------
# Reddit.


def _jsonl(path: str, skips: records.Skips, max_line_bytes: int) -> Iterator[tuple[int, dict]]:
  """(line number, object) of each line that is a JSON object; the rest go to `skips`."""
  _require(path)
  for lineno, raw in records.lines(path, skips, max_line_bytes):
    try:
      yield lineno, records.json_object(raw)
    except ValueError as e:
      skips.bad(lineno, str(e))


def reddit_pairs(comments_path: str, submissions_path: str | None = None,
                 min_score_gap: int = 1, max_bad_share: float = DEFAULT_MAX_BAD_SHARE,
                 max_line_bytes: int = records.MAX_LINE_BYTES) -> list[Pair]:
  """Ranked pairs of sibling comments whose karma differs by at least `min_score_gap`."""
  parents: dict[str, str] = {}
  if submissions_path:
    skips = records.Skips(submissions_path, max_bad_share)
    for lineno, s in _jsonl(submissions_path, skips, max_line_bytes):
      try:
        sid = records.string(s, "id")
        text = "\n".join(x for x in (records.string(s, "title", optional=True),
                                     records.string(s, "selftext", optional=True))
                         if x and x not in REDDIT_GONE)
      except ValueError as e:
        skips.bad(lineno, str(e))
        continue
      parents["t3_" + sid] = text
    skips.finish("pass a pushshift submissions dump (RS_*.jsonl)")
  siblings: dict[str, list[tuple[str, int]]] = {}
  skips = records.Skips(comments_path, max_bad_share)
  for lineno, c in _jsonl(comments_path, skips, max_line_bytes):
    try:
      cid, body = records.string(c, "id"), records.string(c, "body").strip()
      score, parent_id = records.integer(c, "score"), records.string(c, "parent_id")
    except ValueError as e:
      skips.bad(lineno, str(e))
      continue
    parents["t1_" + cid] = body if body not in REDDIT_GONE else ""
    if body not in REDDIT_GONE:
      siblings.setdefault(parent_id, []).append((body, score))
  skips.finish("pass a pushshift comments dump (RC_*.jsonl)")
  out = []
  for parent_id, replies in siblings.items():
    parent = parents.get(parent_id, "")
    if not parent:
      continue
    out += _ranked_pairs(_dialogue(parent), replies, "reddit", min_score_gap)
  return out


# ---------------------------------------------------------------------------------------
# Wikipedia.


def wikipedia_pairs(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE,
                    max_line_bytes: int = records.MAX_LINE_BYTES) -> list[Pair]:
  """Restored text beats vandalized text, for reverts whose summary names vandalism."""
  out = []
  skips = records.Skips(path, max_bad_share)
  for lineno, r in _jsonl(path, skips, max_line_bytes):
    missing = [k for k in WIKI_FIELDS if not isinstance(r.get(k), str)]
    if missing:
      skips.bad(lineno, f"missing string field(s) {', '.join(missing)}")
      continue
    if not VANDALISM_RE.search(r["comment"]):
      continue
    good, bad = r["restored"].strip(), r["vandalized"].strip()
    if not good or not bad or good == bad:
      continue
    context = _dialogue(f'What does the Wikipedia article "{r["title"]}" say?')
    out.append(Pair(context, " " + good, " " + bad, 1, "wikipedia"))
  skips.finish(f"each line needs string fields {', '.join(WIKI_FIELDS)} (see "
               "hh_jax/data/pmp.py)")
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


def _weights(sources: Mapping[str, Sequence[Pair]],
             mixture: Mixture | Mapping[str, float]) -> dict[str, float]:
  """The positive weights, checked: known sources, each with pairs to draw from."""
  weights = mixture.weights() if isinstance(mixture, Mixture) else dict(mixture)
  unknown = set(weights) - set(SOURCES)
  if unknown:
    raise UserError(f"unknown PMP source(s) {sorted(unknown)}; use {', '.join(SOURCES)}")
  if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
    raise UserError(f"PMP mixture weights must be >= 0 with a positive sum, got {weights}")
  active = {s: weights[s] for s in SOURCES if weights.get(s, 0) > 0}
  for s, w in active.items():
    if not sources.get(s):
      raise UserError(f"PMP mixture gives {s} weight {w:g} but there are no {s} "
                       "pairs; set its weight to 0 or give it data")
  return active


def mixture_counts(sources: Mapping[str, Sequence[Pair]],
                   mixture: Mixture | Mapping[str, float], num: int) -> dict[str, int]:
  """Pairs per source in a mixture of `num`: exact shares by largest remainder."""
  weights = _weights(sources, mixture)
  total = sum(weights.values())
  exact = {s: num * w / total for s, w in weights.items()}
  counts = {s: int(exact[s]) for s in weights}
  by_remainder = sorted(weights, key=lambda s: (counts[s] - exact[s], SOURCES.index(s)))
  for s in by_remainder[:num - sum(counts.values())]:
    counts[s] += 1
  return counts


def mix(sources: Mapping[str, Sequence[Pair]], mixture: Mixture | Mapping[str, float],
        num: int, seed: int) -> list[Pair]:
  """`num` pairs drawn from the sources in proportion to the weights, shuffled.

  Counts per source are exact (largest remainder); within a source pairs are taken in
  a seeded order, and a small source is cycled (upsampled) rather than over-weighted.
  Hold evaluation pairs out *before* mixing (`hold_out`): a cycled pair appears many times.
  """
  counts = mixture_counts(sources, mixture, num)
  rng = random.Random(f"pmp-mix/{seed}")
  out = []
  for s, count in counts.items():
    data = sources[s]
    order: list[int] = []
    while len(order) < count:
      cycle = list(range(len(data)))
      rng.shuffle(cycle)
      order += cycle
    out += [data[i] for i in order[:count]]
  rng.shuffle(out)
  return out


def hold_out(sources: Mapping[str, Sequence[Pair]], mixture: Mixture | Mapping[str, float],
             num: int, fraction: float, seed: int
             ) -> tuple[dict[str, list[Pair]], list[Pair]]:
  """(train pairs per source, held-out pairs), split before any upsampling.

  Whole contexts (a question, a Reddit parent, a Wikipedia page) go to one side, so no
  pair text, and after binarization no labelled reply, is on both sides even where one
  answer is in several pairs. Each source holds out about `fraction` of what a mixture
  of `num` would draw from it (whole contexts, so it may overshoot by one context), but
  never more than `fraction` of its own pairs (a small, cycled source gives few), and
  always keeps at least one context for training (`hh_rlhf.hold_out_contexts`).
  """
  if not 0 <= fraction < 1:
    raise UserError(f"data.eval_fraction={fraction:g}; use a share in [0, 1)")
  counts = mixture_counts(sources, mixture, num)
  train: dict[str, list[Pair]] = {s: list(p) for s, p in sources.items()}
  held: list[Pair] = []
  for s, count in counts.items():
    h, train[s] = hold_out_contexts(sources[s], round(fraction * min(count, len(sources[s]))),
                                    f"pmp-heldout/{seed}/{s}")
    held += h
  random.Random(f"pmp-heldout/{seed}").shuffle(held)
  return train, held
