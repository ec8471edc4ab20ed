"""Every reader against the faults real dumps have: each bad record costs one record.

Truncated gzip, invalid UTF-8, wrong JSON types, absurdly long lines and binary junk are
skipped with a `file:line` reason; past `max_bad_share` a read stops with one line.
"""
import gzip
import json
import os

import pytest

from hh_jax.data import hh_rlhf, lm_data, pmp, records
from hh_jax.errors import UserError

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def _hh(i):
  return json.dumps({"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes {i}",
                     "rejected": f"\n\nHuman: q{i}\n\nAssistant: no {i}"}).encode()


def _gz(path, data: bytes):
  with gzip.open(path, "wb") as f:
    f.write(data)
  return path


def test_truncated_gzip_keeps_the_pairs_before_the_damage(tmp_path, capsys):
  good = [_hh(i) for i in range(2000)]
  full = _gz(tmp_path / "full.jsonl.gz", b"\n".join(good) + b"\n").read_bytes()
  cut = tmp_path / "train.jsonl.gz"
  cut.write_bytes(full[:len(full) // 2])
  pairs, rep = hh_rlhf.read_file(str(cut))
  assert 0 < len(pairs) < 2000
  assert [p.chosen for p in pairs] == [f" yes {i}" for i in range(len(pairs))]  # a prefix
  assert len(rep.truncated) == 1 and "truncated file" in rep.truncated[0]
  assert rep.truncated[0].startswith(f"{cut}:{len(pairs) + 1}: ")
  assert "damaged:" in rep.summary()
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "truncated" in err  # one warning line, no traceback


def test_gzip_with_a_damaged_block_and_trailing_junk(tmp_path):
  data = b"\n".join(_hh(i) for i in range(3000)) + b"\n"
  raw = bytearray(_gz(tmp_path / "a.gz", data).read_bytes())
  raw[len(raw) // 2:len(raw) // 2 + 64] = b"\xff" * 64  # a corrupt block mid-stream
  path = tmp_path / "bad.jsonl.gz"
  path.write_bytes(bytes(raw))
  # Deflate decodes the damaged block into garbage lines before the CRC check fails: too
  # many to train on, so one line that says both what was malformed and where it broke.
  with pytest.raises(UserError) as e:
    hh_rlhf.read_file(str(path))
  assert "\n" not in str(e.value) and "records malformed" in str(e.value)
  assert "damaged: " in str(e.value) and "incorrect data check" in str(e.value)
  pairs, rep = hh_rlhf.read_file(str(path), max_bad_share=0.5)
  assert rep.truncated and [p.chosen for p in pairs] == [f" yes {i}" for i in range(len(pairs))]
  assert len(pairs) > 1000  # the lines before the damaged block
  # Two members then zero padding read as one stream; garbage after them is reported.
  two = tmp_path / "two.jsonl.gz"
  two.write_bytes(gzip.compress(_hh(0) + b"\n") + gzip.compress(_hh(1) + b"\n") + b"\0" * 10)
  pairs, rep = hh_rlhf.read_file(str(two))
  assert len(pairs) == 2 and not rep.truncated
  two.write_bytes(two.read_bytes() + b"garbage")
  pairs, rep = hh_rlhf.read_file(str(two))
  assert len(pairs) == 2 and rep.truncated


def test_each_dirty_line_is_skipped_with_its_reason(tmp_path):
  lines = [_hh(i) for i in range(20)]
  lines[2] = b"\xff\xfe not utf-8"
  lines[4] = b'[{"chosen": "x"}]'
  lines[6] = b'{"chosen": 1, "rejected": "x"}'
  lines[8] = b'{"chosen": null, "rejected": "x"}'
  lines[10] = b"x" * 5000
  lines[12] = b"\x00\x01\x02\x89PNG\r\x1a"
  lines[14] = b"[" * 4000  # deeper than json can nest
  lines[16] = b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": 3' + b"1" * 5000 + b"}"
  path = tmp_path / "train.jsonl"
  path.write_bytes(b"\n".join(lines) + b"\n")
  pairs, rep = hh_rlhf.read_file(str(path), max_bad_share=0.5, max_line_bytes=4096)
  assert [p.chosen for p in pairs] == [f" yes {i}" for i in range(20)
                                       if i not in (2, 4, 6, 8, 10, 12, 14, 16)]
  reasons = {int(r.split(":")[1]): r.split(": ", 1)[1] for r in rep.malformed}
  assert reasons[3].startswith("not UTF-8 (byte 0xff at column 1)")
  assert reasons[5] == "expected a JSON object, got list"
  assert reasons[7] == "'chosen' is int, not a string"
  assert reasons[9] == "'chosen' is null, not a string"
  assert reasons[11] == "line longer than 4096 bytes"
  assert reasons[13].startswith("binary data") or reasons[13].startswith("not UTF-8")
  assert "nested too deeply" in reasons[15]
  assert "\n" not in reasons[17] and len(reasons) == 8
  with pytest.raises(UserError) as e:  # 8 of 20 is more than the default 1%
    hh_rlhf.read_file(str(path), max_line_bytes=4096)
  assert "\n" not in str(e.value) and f"8 of 20 records malformed" in str(e.value)
  assert f"(first: {path}:3: not UTF-8" in str(e.value)


def test_a_line_longer_than_memory_allows_is_never_held(tmp_path):
  path = tmp_path / "train.jsonl"
  with open(path, "wb") as f:
    f.write(_hh(0) + b"\n" + b"y" * (3 * records._CHUNK) + b"\n" + _hh(1))  # no final newline
  pairs, rep = hh_rlhf.read_file(str(path), max_bad_share=0.5, max_line_bytes=1000)
  assert len(pairs) == 2 and rep.malformed == [f"{path}:2: line longer than 1000 bytes"]


def test_posts_xml_keeps_every_good_row(tmp_path):
  with open(os.path.join(FIX, "Posts.xml"), "rb") as f:
    rows = f.read().split(b"\n")
  clean = pmp.stackexchange_pairs(os.path.join(FIX, "Posts.xml"))
  dirty = rows[:3] + [b'  <row Id="99" PostTypeId="2" ParentId="1" Score="lots" Body="x" />',
                      b"\xc3\x28 binary", b'  <row Id="98" PostTypeId="2" Body="no parent" />',
                      b"  <row Id=\"97\" PostTypeId=\"2\" ParentId=\"1\" Score=\"1\" Body=\"&#0;\" />",
                      b'{"json": "in an xml file"}', b'<row Id="96"'] + rows[3:]
  path = tmp_path / "Posts.xml"
  path.write_bytes(b"\n".join(dirty))
  assert pmp.stackexchange_pairs(str(path), max_bad_share=0.5) == clean
  with pytest.raises(UserError) as e:
    pmp.stackexchange_pairs(str(path))
  msg = str(e.value)
  assert "\n" not in msg and "6 of 16 records malformed" in msg
  assert f"(first: {path}:4: Score='lots' is not an integer)" in msg
  # Truncated mid-row (a cut download): the rows before the cut still count.
  cut = tmp_path / "cut.xml"
  cut.write_bytes(b"\n".join(rows)[:-300])
  assert pmp.stackexchange_pairs(str(cut), max_bad_share=0.5) == clean


def test_reddit_and_wikipedia_skip_wrong_types(tmp_path):
  rc, rs = os.path.join(FIX, "RC_tiny.jsonl"), os.path.join(FIX, "RS_tiny.jsonl")
  clean = pmp.reddit_pairs(rc, rs)
  with open(rc, "rb") as f:
    comments = f.read().rstrip(b"\n").split(b"\n")
  junk = [b'{"id": 5, "body": "x", "score": 1, "parent_id": "t3_abc"}',
          b'{"id": "z1", "body": null, "score": 1, "parent_id": "t3_abc"}',
          b'{"id": "z2", "body": "x", "score": "many", "parent_id": "t3_abc"}',
          b'{"id": "z3", "body": "x", "score": 1.5, "parent_id": "t3_abc"}',
          b'"just a string"', b"\xff\xff"]
  path = tmp_path / "RC.jsonl.gz"
  _gz(path, b"\n".join(comments[:2] + junk + comments[2:]) + b"\n")
  assert pmp.reddit_pairs(str(path), rs, max_bad_share=0.9) == clean
  with pytest.raises(UserError, match=r"RC.jsonl.gz: 6 of \d+ records malformed.*"
                     r"RC.jsonl.gz:3: 'id' is int, not a string"):
    pmp.reddit_pairs(str(path), rs)
  # Integral floats and decimal strings are scores too (some dumps write them so).
  ok = tmp_path / "RC2.jsonl"
  ok.write_bytes(b"\n".join(c.replace(b'"score": 42', b'"score": "42"').replace(
      b'"score": 3,', b'"score": 3.0,') for c in comments))
  assert pmp.reddit_pairs(str(ok), rs) == clean
  wiki = os.path.join(FIX, "wiki_reverts.jsonl")
  with open(wiki, "rb") as f:
    good = f.read().rstrip(b"\n").split(b"\n")
  bad = [b'{"title": ["X"], "comment": "rvv", "vandalized": "a", "restored": "b"}', b"[]"]
  w = tmp_path / "w.jsonl"
  w.write_bytes(b"\n".join(bad + good))
  assert pmp.wikipedia_pairs(str(w), max_bad_share=0.5) == pmp.wikipedia_pairs(wiki)


def test_text_corpus_skips_bad_lines_not_documents(tmp_path):
  txt = tmp_path / "a.txt"
  txt.write_bytes(b"first line\n\nsecond \xff line\nthird line\n")
  jl = tmp_path / "b.jsonl.gz"
  _gz(jl, b'{"text": "doc one"}\n{"text": 7}\n[1]\n{"chosen": "doc two"}\n{"other": 1}\n')
  docs = lm_data.read_text_files([str(txt), str(jl)], max_bad_share=0.9)
  assert docs == ["first line\n\nthird line", "doc one", "doc two"]
  with pytest.raises(UserError) as e:
    lm_data.read_text_files([str(jl)])
  assert "\n" not in str(e.value) and "3 of 5 records malformed" in str(e.value)
  assert f"(first: {jl}:2: 'text' is int, not a string)" in str(e.value)
  with pytest.raises(UserError, match="does not exist"):
    lm_data.read_text_files([str(tmp_path / "nope.txt")])
