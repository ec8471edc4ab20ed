"""PMP builders: each fixture in its public dump format becomes the expected pairs."""
import os
import xml.etree.ElementTree as ET

import pytest

from hh_jax.data import pmp, synthetic_pairs
from hh_jax.data import labelers
from hh_jax.data.pairs import Pair

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
H, A = "\n\nHuman:", "\n\nAssistant:"


def test_stackexchange_score_formula():
  assert pmp.stackexchange_score(0, False) == 0
  assert pmp.stackexchange_score(7, False) == 3       # round(log2 8)
  assert pmp.stackexchange_score(3, True) == 3        # round(log2 4) + 1
  assert pmp.stackexchange_score(2, False) == 2       # round(1.585)
  assert pmp.stackexchange_score(-2, False) == -1
  assert pmp.stackexchange_score(-2, True) == 0


def test_stackexchange_fixture_pairs():
  pairs = pmp.stackexchange_pairs(os.path.join(FIX, "Posts.xml"))
  q1 = f"{H} Is my starter dead?\nMy sourdough starter smells like acetone. Is it dead?{A}"
  q5 = f"{H} Can I freeze bread?\nHow long does bread keep in the freezer?{A}"
  # Q1 scores: id2 = 3, id3 = 2 + 1 (accepted) = 3 (a tie: no pair), id4 = -1.
  # Q8 has one answer; the PostTypeId=5 row is ignored.
  assert pairs == [
      Pair(q1, " It is hungry, not dead. Feed it twice a day.", " Throw it away.", 1,
           "stackexchange"),
      Pair(q1, " Discard half, feed it & keep it warm.", " Throw it away.", 1, "stackexchange"),
      Pair(q5, " Yes, for up to three months.\nWrap it well.", " Yes.", 1, "stackexchange"),
  ]


def test_binarized_stackexchange_pairs():
  pairs = pmp.stackexchange_pairs(os.path.join(FIX, "Posts.xml"))
  binary = pmp.binarize(pairs)
  assert len(binary) == 2 * len(pairs) == 6
  good, bad = " It is hungry, not dead. Feed it twice a day.", " Throw it away."
  assert (binary[0].chosen, binary[0].rejected) == (" GOOD:" + good, " BAD:" + good)
  assert (binary[1].chosen, binary[1].rejected) == (" BAD:" + bad, " GOOD:" + bad)
  assert all(b.context == pairs[i // 2].context for i, b in enumerate(binary))


def test_reddit_fixture_pairs():
  rc, rs = os.path.join(FIX, "RC_tiny.jsonl"), os.path.join(FIX, "RS_tiny.jsonl")
  pairs = pmp.reddit_pairs(rc, rs)
  top = f"{H} What is a good first houseplant?{A}"
  c1 = f"{H} A pothos. It survives almost anything.{A}"
  # [deleted] is dropped; c4/c5 tie; t3_zzz has no known parent text.
  assert pairs == [
      Pair(top, " A pothos. It survives almost anything.", " Cactus", 1, "reddit"),
      Pair(c1, " Pothos are toxic to cats though.", " Why a pothos and not a snake plant?", 1,
           "reddit"),
      Pair(c1, " Pothos are toxic to cats though.", " Snake plants need even less light.", 1,
           "reddit"),
  ]
  assert len(pmp.reddit_pairs(rc)) == 2  # no submissions file: top-level replies skipped
  assert len(pmp.reddit_pairs(rc, rs, min_score_gap=10)) == 1
  binary = pmp.binarize(pairs)
  assert binary[0] == Pair(top, " GOOD: A pothos. It survives almost anything.",
                           " BAD: A pothos. It survives almost anything.", 1, "reddit")
  assert binary[1] == Pair(top, " BAD: Cactus", " GOOD: Cactus", 1, "reddit")


def test_wikipedia_fixture_pairs():
  pairs = pmp.wikipedia_pairs(os.path.join(FIX, "wiki_reverts.jsonl"))
  # The "Undid ... unsourced" edit is not a vandalism revert; the Paris one changes nothing.
  assert pairs == [
      Pair(f'{H} What does the Wikipedia article "Ada Lovelace" say?{A}',
           " Ada Lovelace was an English mathematician and writer.",
           " Ada Lovelace was a pop singer LOL.", 1, "wikipedia"),
      Pair(f'{H} What does the Wikipedia article "Photosynthesis" say?{A}',
           " Photosynthesis converts light energy into chemical energy.",
           " Plants eat pizza.", 1, "wikipedia"),
  ]
  binary = pmp.binarize(pairs)
  assert [b.chosen[:6] for b in binary] == [" GOOD:", " BAD: ", " GOOD:", " BAD: "]


def test_mixture_counts_and_determinism():
  src = {"stackexchange": [Pair("c", f" s{i}", " x", 1) for i in range(5)],
         "reddit": [Pair("c", f" r{i}", " x", 1) for i in range(50)],
         "wikipedia": [Pair("c", f" w{i}", " x", 1) for i in range(50)]}
  out = pmp.mix(src, pmp.Mixture(stackexchange=2, reddit=1, wikipedia=1), 40, seed=3)
  kinds = [p.chosen[1] for p in out]
  assert (kinds.count("s"), kinds.count("r"), kinds.count("w")) == (20, 10, 10)
  assert len({p.chosen for p in out if p.chosen[1] == "s"}) == 5  # small source cycled
  assert out == pmp.mix(src, pmp.Mixture(2, 1, 1), 40, seed=3)
  only = pmp.mix(src, {"reddit": 1.0}, 7, seed=0)
  assert all(p.chosen.startswith(" r") for p in only) and len(only) == 7


def test_mixture_errors_are_one_line():
  with pytest.raises(ValueError, match="no stackexchange pairs; set its weight to 0"):
    pmp.mix({"reddit": [Pair("c", " a", " b", 1)]}, pmp.Mixture(), 4, 0)
  with pytest.raises(ValueError, match="unknown PMP source"):
    pmp.mix({}, {"twitter": 1.0}, 4, 0)


def test_bad_inputs_raise_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such file"):
    pmp.stackexchange_pairs(str(tmp_path / "missing.xml"))
  bad = tmp_path / "Posts.xml"
  bad.write_text("<posts><row Id='1'")
  with pytest.raises(ValueError, match=r"Posts.xml: 1 of 1 records malformed.*"
                     r"Posts.xml:1: not a <row ... /> element"):
    pmp.stackexchange_pairs(str(bad))
  wiki = tmp_path / "w.jsonl"
  wiki.write_text('{"title": "X", "comment": "rvv"}\n')
  with pytest.raises(ValueError, match=r"w.jsonl:1: missing string field\(s\) vandalized"):
    pmp.wikipedia_pairs(str(wiki))


def test_synthetic_stackexchange_roundtrip(tmp_path):
  xml = synthetic_pairs.stackexchange_posts_xml(40, seed=0)
  assert xml == synthetic_pairs.stackexchange_posts_xml(40, seed=0)
  path = tmp_path / "Posts.xml"
  path.write_text(xml, encoding="utf-8")
  rows = ET.parse(path).getroot().findall("row")
  questions = [r for r in rows if r.get("PostTypeId") == "1"]
  assert len(questions) == 40
  pairs = pmp.stackexchange_pairs(str(path))
  assert len(pairs) > 40
  # Votes track quality loosely: the chosen answer mostly has the higher gold score.
  agree = sum(labelers.gold_score(p.context, p.chosen) > labelers.gold_score(
      p.context, p.rejected) for p in pairs) / len(pairs)
  assert 0.6 < agree < 0.98, agree
