"""Property-based tests: random bytes, random JSON and cut files fed to every reader.

Whatever the input, a reader returns records or raises `UserError` with a one-line
message; nothing else escapes. Good records mixed into junk are still read, and a
truncated .gz gives a prefix of the file's records. CI runs `HH_JAX_FUZZ_EXAMPLES`
(default 50) examples per test; the long run (24 tests, >= 10,000 examples in all) is

    HH_JAX_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest -q -p no:xdist \
        tests/test_fuzz_readers.py --hypothesis-show-statistics
"""
import gzip
import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hh_jax.data import hh_rlhf, lm_data, pmp
from hh_jax.errors import UserError

FIX = os.path.join(os.path.dirname(__file__), "data", "fixtures")
EXAMPLES = int(os.environ.get("HH_JAX_FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def _lines(name):
  with open(os.path.join(FIX, name), "rb") as f:
    return [l for l in f.read().split(b"\n") if l.strip()]


def _hh(i):
  return json.dumps({"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes {i}",
                     "rejected": f"\n\nHuman: q{i}\n\nAssistant: no {i}"}).encode()


# name -> (file suffix, reader(path, max_bad_share), the good lines of a clean file).
READERS = {
    "hh_rlhf": (".jsonl", lambda p, s: hh_rlhf.read_file(p, s)[0], [_hh(i) for i in range(6)]),
    "posts_xml": (".xml", lambda p, s: pmp.stackexchange_pairs(p, s), _lines("Posts.xml")),
    "reddit": (".jsonl", lambda p, s: pmp.reddit_pairs(
        p, os.path.join(FIX, "RS_tiny.jsonl"), max_bad_share=s), _lines("RC_tiny.jsonl")),
    "wikipedia": (".jsonl", lambda p, s: pmp.wikipedia_pairs(p, s), _lines("wiki_reverts.jsonl")),
    "text_jsonl": (".jsonl", lambda p, s: lm_data.read_text_files([p], s),
                   [json.dumps({"text": f"doc {i}"}).encode() for i in range(6)]),
    "text_txt": (".txt", lambda p, s: lm_data.read_text_files([p], s),
                 [f"line {i}".encode() for i in range(6)]),
}
NAMES = sorted(READERS)


def _read(name, data: bytes, suffix=None, share=0.01):
  """The reader's output, or None after a one-line UserError; anything else fails."""
  suffix = suffix or READERS[name][0]
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "f" + suffix)
    with open(path, "wb") as f:
      f.write(data)
    try:
      return READERS[name][1](path, share)
    except UserError as e:
      msg = str(e)
      assert msg and "\n" not in msg, repr(msg)
      assert path in msg, msg  # names the file
      return None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["chosen", "rejected", "text", "id", "body", "score", "parent_id",
                         "title", "comment", "vandalized", "restored", "x"]), kids, max_size=6),
    max_leaves=12)
JUNK_LINE = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" "))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.binary(max_size=3000), gz=st.booleans())
def test_random_bytes(name, data, gz):
  _read(name, data, READERS[name][0] + (".gz" if gz else ""))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(values=st.lists(JSON, max_size=8))
def test_random_json(name, values):
  _read(name, b"\n".join(json.dumps(v).encode() for v in values) + b"\n")


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(junk=st.lists(JUNK_LINE, max_size=6), where=st.lists(st.integers(0, 100), max_size=6))
def test_good_records_survive_junk(name, junk, where):
  good = READERS[name][2]
  clean = _read(name, b"\n".join(good) + b"\n")
  mixed = list(good)
  for j, w in zip(junk, where):
    mixed.insert(w % (len(mixed) + 1), j)
  got = _read(name, b"\n".join(mixed) + b"\n", share=1.0)
  if name == "text_txt":  # one document: the good lines, junk lines that decode kept too
    assert got is not None and all(l.decode() in got[0] for l in good)
  else:
    assert got == clean


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(cut=st.floats(0.0, 1.0))
def test_truncated_gzip_gives_a_prefix(name, cut):
  good = READERS[name][2] * (30 if name in ("hh_rlhf", "text_jsonl", "text_txt") else 1)
  if name == "hh_rlhf":
    good = [_hh(i) for i in range(len(good))]
  full = gzip.compress(b"\n".join(good) + b"\n")
  got = _read(name, full[:int(cut * len(full))], READERS[name][0] + ".gz", share=1.0)
  if got is None or name in ("posts_xml", "reddit"):
    return  # cut in the header (one line), or pairs built across rows: no prefix order
  clean = _read(name, b"\n".join(good) + b"\n", share=1.0)
  if name == "text_txt":
    assert clean[0].startswith(got[0]) if got else True
  else:
    assert got == clean[:len(got)]
