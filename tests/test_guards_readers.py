"""Every reader against an independent expectation: what it keeps, and how much it skipped.

The fuzz tests (test_fuzz_readers.py) compare a reader with itself, so a reader that drops
a good record both times passes them. Here each file is written line by line from a list
of the records it holds, good ones with the output the format defines (written out by hand,
not by calling the reader's own helpers) and bad ones with nothing, and the test asserts
the exact records that come back, in order, and the exact count of skipped lines the
one warning line names. A file is read plain and gzip-compressed, and with the line
reader's chunk size cut to a few bytes, so lines cross chunk boundaries.
"""
import gzip
import json
import os
import re

import pytest

from hh_jax.data import hh_rlhf, pmp, records
from hh_jax.data.pairs import Pair
from hh_jax.errors import UserError
from hh_jax.eval import capabilities, elo

H, A = "\n\nHuman:", "\n\nAssistant:"  # the hh-rlhf markers, spelled out


def _write(tmp_path, name, lines, gz=False, last_newline=True):
  """Writes `lines` (str or bytes) joined by newlines; returns the path."""
  data = b"\n".join(l if isinstance(l, bytes) else l.encode() for l in lines)
  data += b"\n" if last_newline else b""
  path = tmp_path / (name + (".gz" if gz else ""))
  path.write_bytes(gzip.compress(data) if gz else data)
  return str(path)


def _skipped(err: str, path: str):
  """(skipped, records) from the reader's one warning line for `path`; (0, None) without."""
  found = re.findall(rf"warning: {re.escape(path)}: skipped (\d+) of (\d+) records", err)
  assert len(found) <= 1, err
  return (int(found[0][0]), int(found[0][1])) if found else (0, None)


@pytest.fixture(params=["plain", "gz", "tiny-chunks"])
def mode(request, monkeypatch):
  """Each test reads its file plain, gzip-compressed, and plain in 5-byte chunks."""
  if request.param == "tiny-chunks":
    monkeypatch.setattr(records, "_CHUNK", 5)
  return request.param


# ---------------------------------------------------------------------------------------
# hh-rlhf.


def _hh(context, chosen, rejected):
  return json.dumps({"chosen": context + chosen, "rejected": context + rejected})


def test_hh_rlhf_keeps_every_good_pair_and_counts_each_skip(tmp_path, mode, capsys):
  c1 = f"{H} hi{A}"
  c2 = f"{H} first{A} ok{H} second{A}"  # two Human turns
  lines = [
      _hh(c1, " yes", " no"),                                   # 1 kept
      "",                                                       # blank: not a record
      _hh(c2, " sure", " never"),                               # 3 kept (2 turns)
      json.dumps({"chosen": c1 + " a", "rejected": f"{H} other{A} b"}),  # 4 differing context
      _hh(c1, "  ", " b"),                                      # 5 empty reply
      _hh(c1, " same", "same "),                                # 6 identical
      "not json",                                               # 7 malformed
      "[1, 2]",                                                 # 8 malformed
      json.dumps({"chosen": c1 + " a"}),                        # 9 malformed (no rejected)
      json.dumps({"chosen": 3, "rejected": c1}),                # 10 malformed
      json.dumps({"chosen": f"{H} no turn", "rejected": c1}),   # 11 malformed
      b"\xff\xfe bad utf-8",                                    # 12 malformed
      "   ",                                                    # blank
      _hh(f"{H} é?{A}", " same ü", " same ß"),                 # 14 kept: differ at the end
      _hh(c1, " last", " line"),                                # 15 kept, no final newline
  ]
  path = _write(tmp_path, "train.jsonl", lines, gz=mode == "gz", last_newline=False)
  pairs, rep = hh_rlhf.read_file(path, max_bad_share=1.0, source="s")
  assert pairs == [Pair(c1, " yes", " no", 1, "s"), Pair(c2, " sure", " never", 2, "s"),
                   Pair(f"{H} é?{A}", " same ü", " same ß", 1, "s"),
                   Pair(c1, " last", " line", 1, "s")]
  assert (rep.lines, rep.pairs, rep.differing_context, rep.empty_response, rep.identical) == (
      13, 4, 1, 1, 1)
  assert [m.split(": ")[0] for m in rep.malformed] == [f"{path}:{n}" for n in range(7, 13)]
  assert dict(rep.turns) == {1: 3, 2: 1}
  assert _skipped(capsys.readouterr().err, path) == (6, 13)


# ---------------------------------------------------------------------------------------
# PMP: StackExchange, Reddit, Wikipedia.


def test_stackexchange_pairs_are_the_hand_ranked_ones(tmp_path, mode, capsys):
  # Question 1 (answer 11 accepted): answer 10 has 3 votes -> round(log2 4) = 2; answer 11
  # has 0 votes, accepted -> 0 + 1 = 1; answer 12 has -2 votes -> -1. Question 2's two
  # answers both score 1 (1 vote -> round(log2 2) = 1): no pair.
  lines = [
      '<?xml version="1.0" encoding="utf-8"?>',
      "<posts>",
      '  <row Id="1" PostTypeId="1" AcceptedAnswerId="11" Title="Why &amp; how?" '
      'Body="&lt;p&gt;Tell me.&lt;/p&gt;" />',
      '  <row Id="10" PostTypeId="2" ParentId="1" Score="3" Body="&lt;p&gt;ten&lt;/p&gt;" />',
      '  <row Id="12" PostTypeId="2" ParentId="1" Score="-2" Body="twelve" />',
      '  <row Id="11" PostTypeId="2" ParentId="1" Score="0" Body="eleven" />',
      '  <row Id="13" PostTypeId="2" ParentId="1" Score="many" Body="bad score" />',  # bad
      '  <row Id="14" PostTypeId="2" Body="no parent" />',                           # bad
      "  junk between rows",                                                        # bad
      '  <row Id="15" PostTypeId="2" ParentId="1" Score="1" Body="unclosed"',        # bad
      b'  <row Id="16" PostTypeId="2" ParentId="1" Score="1" Body="\xff" />',        # bad
      '  <row Id="2" PostTypeId="1" Title="Second" Body="" />',
      '  <row Id="20" PostTypeId="2" ParentId="2" Score="1" Body="a" />',
      '  <row Id="21" PostTypeId="2" ParentId="2" Score="1" Body="b" />',
      "</posts>",
  ]
  path = _write(tmp_path, "Posts.xml", lines, gz=mode == "gz")
  got = pmp.stackexchange_pairs(path, max_bad_share=1.0)
  ctx = f"{H} Why & how?\nTell me.{A}"
  assert got == [Pair(ctx, " ten", " eleven", 1, "stackexchange"),
                 Pair(ctx, " ten", " twelve", 1, "stackexchange"),
                 Pair(ctx, " eleven", " twelve", 1, "stackexchange")]
  # 15 lines, 3 of them the XML frame: 12 records, 5 bad.
  assert _skipped(capsys.readouterr().err, path) == (5, 12)


def test_reddit_pairs_are_the_hand_ranked_siblings(tmp_path, mode, capsys):
  subs = [json.dumps({"id": "s1", "title": "Title", "selftext": "Body text"}),
          json.dumps({"id": "s2", "title": "[deleted]", "selftext": "[removed]"}),
          json.dumps({"title": "no id"}),                                   # bad
          "{broken"]                                                        # bad
  def c(cid, parent, score, body):
    return json.dumps({"id": cid, "parent_id": parent, "score": score, "body": body,
                       "link_id": "t3_s1"})
  comments = [
      c("c1", "t3_s1", 5, "top one"),
      c("c2", "t3_s1", 1, "top two"),
      c("c3", "t1_c1", 2, "reply a"),
      c("c4", "t1_c1", "2", "reply b"),        # a decimal string is an integer
      c("c5", "t1_c1", 9, "[deleted]"),        # gone: no sibling
      c("c6", "t1_c1", -3, "reply c"),
      c("c7", "t3_s2", 4, "orphan x"),         # parent text gone: no pair
      c("c8", "t3_s2", 1, "orphan y"),
      c("c9", "t3_s1", 3.5, "half"),           # bad: score not an integer
      json.dumps({"id": "c10", "parent_id": "t3_s1", "score": 1}),  # bad: no body
      "[]",                                    # bad
      b"\x00\x01",                             # bad
  ]
  sp = _write(tmp_path, "RS.jsonl", subs, gz=mode == "gz")
  cp = _write(tmp_path, "RC.jsonl", comments, gz=mode == "gz")
  got = pmp.reddit_pairs(cp, sp, min_score_gap=1, max_bad_share=1.0)
  top, reply = f"{H} Title\nBody text{A}", f"{H} top one{A}"
  assert got == [Pair(top, " top one", " top two", 1, "reddit"),
                 Pair(reply, " reply a", " reply c", 1, "reddit"),
                 Pair(reply, " reply b", " reply c", 1, "reddit")]
  err = capsys.readouterr().err
  assert _skipped(err, sp) == (2, 4)
  assert _skipped(err, cp) == (4, 12)


def test_wikipedia_pairs_keep_every_vandalism_revert(tmp_path, mode, capsys):
  def r(title, comment, vandalized, restored):
    return json.dumps({"title": title, "comment": comment, "vandalized": vandalized,
                       "restored": restored})
  lines = [
      r("Cat", "Reverted vandalism by X", "cats are bad", " cats purr "),
      r("Dog", "rvv", "dogs xx", "dogs bark"),
      r("Fox", "rv v", "foxes !!", "foxes run"),
      r("Owl", "copy edit", "owls a", "owls b"),         # not vandalism: no pair, not bad
      r("Bee", "vandal", "same", " same"),               # identical after strip: no pair
      r("Ant", "rvv", "", "ants dig"),                   # empty side: no pair
      json.dumps({"title": "Elk", "comment": "rvv", "vandalized": "x"}),  # bad
      json.dumps({"title": 1, "comment": "rvv", "vandalized": "x", "restored": "y"}),  # bad
      "null",                                            # bad
  ]
  path = _write(tmp_path, "wiki.jsonl", lines, gz=mode == "gz")
  got = pmp.wikipedia_pairs(path, max_bad_share=1.0)
  ctx = lambda t: f'{H} What does the Wikipedia article "{t}" say?{A}'  # noqa: E731
  assert got == [Pair(ctx("Cat"), " cats purr", " cats are bad", 1, "wikipedia"),
                 Pair(ctx("Dog"), " dogs bark", " dogs xx", 1, "wikipedia"),
                 Pair(ctx("Fox"), " foxes run", " foxes !!", 1, "wikipedia")]
  assert _skipped(capsys.readouterr().err, path) == (3, 9)


# ---------------------------------------------------------------------------------------
# Elo judgments.


def test_read_judgments_keeps_every_game(tmp_path, mode, capsys):
  def j(a, b, w, **extra):
    return json.dumps({"model_a": a, "model_b": b, "winner": w, **extra})
  lines = [j("p", "q", "a"), j("q", "r", "B"), j("p", "r", " tie ", context="c"),
           j("p", "p", "a"),                    # bad: same model
           j("p", "q", "draw"),                 # bad: winner
           j("", "q", "a"),                     # bad: empty name
           json.dumps({"model_a": "p", "winner": "a"}),  # bad: no model_b
           j("p", "q", "a", context=3),         # bad: context not a string
           "", j("r", "p", "b")]
  path = _write(tmp_path, "judgments.jsonl", lines, gz=mode == "gz")
  got = elo.read_judgments(path, max_bad_share=1.0)
  assert [(g.model_a, g.model_b, g.score_a) for g in got] == [
      ("p", "q", 1.0), ("q", "r", 0.0), ("p", "r", 0.5), ("r", "p", 0.0)]
  assert _skipped(capsys.readouterr().err, path) == (5, 9)


# ---------------------------------------------------------------------------------------
# Capability items.


def test_capability_jsonl_readers_keep_every_item(tmp_path, mode, capsys):
  gz = mode == "gz"
  lam = _write(tmp_path, "lambada.jsonl", [
      json.dumps({"text": "the cat sat on the mat"}), json.dumps({"text": "oneword"}),  # bad
      json.dumps({"text": "a b "}), json.dumps({"txt": "x y"})], gz=gz)              # bad
  assert capabilities.read_lambada(lam, 1.0) == [
      capabilities.Item("the cat sat on the", (" mat",), 0), capabilities.Item("a", (" b",), 0)]
  hs = _write(tmp_path, "hellaswag.jsonl", [
      json.dumps({"ctx": "He opens ", "endings": ["a door", " a box"], "label": 1}),
      json.dumps({"ctx": "x", "endings": ["a", "b"], "label": 2}),           # bad: index
      json.dumps({"ctx": "x", "endings": ["a", "  "], "label": 0}),          # bad: empty
      json.dumps({"ctx": "She", "endings": ["runs", "sits"], "label": "0"})], gz=gz)
  assert capabilities.read_hellaswag(hs, 1.0) == [
      capabilities.Item("He opens", (" a door", " a box"), 1),
      capabilities.Item("She", (" runs", " sits"), 0)]
  arc = _write(tmp_path, "arc.jsonl", [
      json.dumps({"question": {"stem": "2+2?", "choices": [
          {"label": "A", "text": "3"}, {"label": "B", "text": "4"}]}, "answerKey": "B"}),
      json.dumps({"question_stem": "Sky?", "choices": {"text": ["blue", "red"],
                                                       "label": ["1", "2"]}, "answerKey": "1"}),
      json.dumps({"question": {"stem": "q", "choices": [{"label": "A", "text": "x"}]},
                  "answerKey": "C"}),                                        # bad: key
      json.dumps({"answerKey": "A"})], gz=gz)                                # bad
  assert capabilities.read_arc(arc, 1.0) == [
      capabilities.Item("Question: 2+2?\nAnswer:", (" 3", " 4"), 1),
      capabilities.Item("Question: Sky?\nAnswer:", (" blue", " red"), 0)]
  err = capsys.readouterr().err
  for p in (lam, hs, arc):
    assert _skipped(err, p) == (2, 4), p


def test_mmlu_csv_keeps_every_row(tmp_path, capsys):
  path = tmp_path / "high_school_math_test.csv"
  path.write_text('"What is 1+1?",1,2,3,4,B\n'
                  "\n"
                  '"Pick, with a comma",w,x,y,z,d\n'
                  "too,few,fields\n"                     # bad
                  "q,a,b,c,d,E\n"                        # bad: answer
                  '"multi\nline",a,b,c,d,A\n', encoding="utf-8")
  got = capabilities.read_mmlu(str(path), 1.0)
  pre = "The following is a question about high school math.\n\nQuestion: "
  assert got == [capabilities.Item(pre + "What is 1+1?\nAnswer:", (" 1", " 2", " 3", " 4"), 1),
                 capabilities.Item(pre + "Pick, with a comma\nAnswer:", (" w", " x", " y", " z"),
                                   3),
                 capabilities.Item(pre + "multi\nline\nAnswer:", (" a", " b", " c", " d"), 0)]
  err = capsys.readouterr().err
  assert _skipped(err, str(path)) == (2, 5)
  assert f"{path}:4: 3 fields" in err  # the line number a person finds the row at


def test_text_corpus_keeps_every_document_and_line(tmp_path, mode, capsys):
  from hh_jax.data import lm_data  # pylint: disable=g-import-not-at-top
  gz = mode == "gz"
  jl = _write(tmp_path, "docs.jsonl", [
      json.dumps({"text": "doc one"}), json.dumps({"chosen": f"{H} hi{A} yo"}),
      json.dumps({"text": 5}),                             # bad
      "", json.dumps({"text": "doc three\nwith a newline"}), "{"], gz=gz)  # bad
  txt = _write(tmp_path, "book.txt", ["first line", "", "  indented", b"\xff bad", "last"],
               gz=gz, last_newline=False)
  assert lm_data.read_text_files([jl, txt], max_bad_share=1.0) == [
      "doc one", f"{H} hi{A} yo", "doc three\nwith a newline",
      "first line\n\n  indented\nlast"]  # a .txt is one document; its blank line kept
  err = capsys.readouterr().err
  assert _skipped(err, jl) == (2, 5)
  assert _skipped(err, txt) == (1, 4)


# ---------------------------------------------------------------------------------------
# records.lines itself.


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_lines_yields_every_line_whatever_the_chunking(tmp_path, monkeypatch, chunk):
  monkeypatch.setattr(records, "_CHUNK", chunk)
  body = b"one\n\ntwo\r\n  \nthree\n" + b"x" * 12 + b"\nfour"
  path = tmp_path / "f.txt"
  path.write_bytes(body)
  skips = records.Skips(str(path))
  got = list(records.lines(str(path), skips, max_line_bytes=10))
  # Blank lines left out (numbers kept), the 12-byte line over the 10-byte limit skipped
  # and counted, the last line read without its newline; \r is the caller's business.
  assert got == [(1, b"one"), (3, b"two\r"), (5, b"three"), (7, b"four")]
  assert skips.records == 5
  assert skips.reasons == [f"{path}:6: line longer than 10 bytes"]
  blank = records.Skips(str(path))
  assert [n for n, _ in records.lines(str(path), blank, 10, keep_blank=True)] == [1, 2, 3, 4, 5, 7]
  assert blank.records == 5  # blank lines yielded, not counted as records


def test_lines_reads_every_gzip_member(tmp_path):
  path = tmp_path / "f.jsonl.gz"
  path.write_bytes(gzip.compress(b"a\nb") + gzip.compress(b"c\n") + gzip.compress(b"d\n")
                   + b"\0" * 8)  # zero padding after the last member, as some tools write
  skips = records.Skips(str(path))
  assert list(records.lines(str(path), skips)) == [(1, b"a"), (2, b"bc"), (3, b"d")]
  assert (skips.records, skips.reasons, skips.truncated) == (3, [], "")


def test_truncated_gzip_keeps_exactly_the_complete_lines(tmp_path):
  lines = [f"line {i:04d}".encode() for i in range(2000)]
  full = gzip.compress(b"\n".join(lines) + b"\n")
  path = tmp_path / "f.txt.gz"
  path.write_bytes(full[:len(full) // 2])
  skips = records.Skips(str(path))
  got = list(records.lines(str(path), skips))
  assert 0 < len(got) < 2000
  assert got == [(i + 1, lines[i]) for i in range(len(got))]  # a prefix, nothing dropped
  assert skips.truncated.startswith(f"{path}:{len(got) + 1}: ")
  assert f"kept the {len(got)} complete lines" in skips.truncated


# ---------------------------------------------------------------------------------------
# The bad-share limit.


@pytest.mark.parametrize("share,records_,at_limit", [
    (0.01, 100, 1), (0.05, 40, 2), (0.29, 100, 29), (0.57, 100, 57), (0.25, 8, 2),
    (0.1, 30, 3), (0.0, 50, 0)])
def test_bad_share_at_the_limit_passes_one_more_fails(share, records_, at_limit):
  ok = records.Skips("f", share)
  ok.records = records_
  for i in range(at_limit):
    ok.bad(i + 1, "bad")
  ok.check()  # exactly `share` of the records bad: allowed
  ok.bad(records_, "bad")
  first = 1 if at_limit else records_
  with pytest.raises(UserError, match=rf"^f: {at_limit + 1} of {records_} records malformed, "
                     rf"more than max_bad_share={share:g} \(first: f:{first}: bad\); fix the file "
                     "or raise max_bad_share$"):
    ok.check()


@pytest.mark.parametrize("bad,raises", [(1, False), (2, True)])
def test_bad_share_through_a_reader(tmp_path, bad, raises):
  # 100 records, 1% allowed: 1 bad line passes with 99 pairs, 2 stop the read.
  lines = [_hh(f"{H} q{i}{A}", f" y{i}", f" n{i}") for i in range(100 - bad)]
  lines[10:10] = ["junk"] * bad
  path = _write(tmp_path, "t.jsonl", lines)
  if raises:
    with pytest.raises(UserError, match=r"2 of 100 records malformed, more than max_bad_share=0.01"):
      hh_rlhf.read_file(path)
  else:
    pairs, rep = hh_rlhf.read_file(path)
    assert len(pairs) == 99 and rep.lines == 100 and len(rep.malformed) == 1


def test_damaged_gzip_keeps_every_line_before_the_damage(tmp_path):
  # A bad checksum at the very end: zlib raises on the one call that decompresses the
  # whole (small) file, so the lines come only from re-feeding it a little at a time.
  lines = [f"line {i:04d}".encode() for i in range(2000)]
  full = bytearray(gzip.compress(b"\n".join(lines) + b"\n"))
  full[-8] ^= 0xFF  # the CRC32 in the member's trailer
  path = tmp_path / "f.txt.gz"
  path.write_bytes(bytes(full))
  skips = records.Skips(str(path))
  assert list(records.lines(str(path), skips)) == [(i + 1, l) for i, l in enumerate(lines)]
  assert skips.truncated.startswith(f"{path}:2001: damaged gzip data (")
  assert skips.truncated.endswith("kept the 2000 complete lines before it")
