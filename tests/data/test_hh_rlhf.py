"""The hh-rlhf reader against the real shared sample and hand-made broken files."""
import collections
import gzip
import json

import pytest

from hh_jax.data import hh_rlhf

A = "\n\nAssistant:"
# Counted by hand from ../shared/data/hh-rlhf/harmless-base (and re-derived below).
TRAIN = dict(lines=1744, pairs=1735, differing_context=5, empty_response=4, identical=0)
TRAIN_TURNS = {1: 490, 2: 428, 3: 461, 4: 261, 5: 53, 6: 16, 7: 14, 8: 4, 9: 3, 10: 1, 11: 2,
               12: 1, 18: 1}
TEST = dict(lines=256, pairs=256, differing_context=0, empty_response=0, identical=0)
TEST_TURNS = {1: 79, 2: 69, 3: 62, 4: 38, 5: 6, 6: 1, 8: 1}


def _independent_counts(path):
  """The same rules in plain json/str code, sharing nothing with the reader."""
  c = collections.Counter()
  turns = collections.Counter()
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      d = json.loads(line)
      c["lines"] += 1
      ch, rj = d["chosen"], d["rejected"]
      ctx_c, ctx_r = ch[:ch.rindex(A) + len(A)], rj[:rj.rindex(A) + len(A)]
      rep_c, rep_r = ch[len(ctx_c):], rj[len(ctx_r):]
      if ctx_c != ctx_r:
        c["differing_context"] += 1
      elif rep_c.strip() == "" or rep_r.strip() == "":
        c["empty_response"] += 1
      elif rep_c.strip() == rep_r.strip():
        c["identical"] += 1
      else:
        c["pairs"] += 1
        turns[ctx_c.count("\n\nHuman:")] += 1
  return c, turns


@pytest.mark.parametrize("split,expected,expected_turns",
                         [("train", TRAIN, TRAIN_TURNS), ("test", TEST, TEST_TURNS)])
def test_shared_sample_counts(hh_sample_dir, split, expected, expected_turns):
  pairs, rep = hh_rlhf.read(str(hh_sample_dir), ("harmless-base",), split)
  got = {k: getattr(rep, k) for k in expected}
  assert got == expected
  assert dict(rep.turns) == expected_turns
  assert rep.malformed == []
  assert len(pairs) == rep.pairs
  counts, turns = _independent_counts(hh_sample_dir / "harmless-base" / f"{split}.jsonl.gz")
  assert got == {k: counts[k] for k in expected}
  assert dict(rep.turns) == dict(turns)
  assert collections.Counter(p.turns for p in pairs) == rep.turns


def test_pairs_restore_the_published_transcripts(hh_sample_dir):
  pairs, _ = hh_rlhf.read(str(hh_sample_dir), ("harmless-base",), "test")
  with gzip.open(hh_sample_dir / "harmless-base" / "test.jsonl.gz", "rt") as f:
    first = json.loads(f.readline())
  p = pairs[0]
  assert p.context + p.chosen == first["chosen"]
  assert p.context + p.rejected == first["rejected"]
  assert p.context.endswith(A) and p.source == "harmless-base/test"


def test_split_transcript_keeps_the_last_assistant_turn():
  ctx, reply = hh_rlhf.split_transcript("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d")
  assert (ctx, reply) == ("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", " d")
  assert hh_rlhf.count_turns(ctx) == 2


def _write(tmp_path, lines, name="train.jsonl"):
  d = tmp_path / "harmless-base"
  d.mkdir(exist_ok=True)
  (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
  return d / name


def _good(i):
  return json.dumps({"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes",
                     "rejected": f"\n\nHuman: q{i}\n\nAssistant: no"})


def test_malformed_lines_reported_with_file_and_line(tmp_path):
  lines = [_good(i) for i in range(200)]
  lines[3] = '{"chosen": "\\n\\nHuman: x\\n\\nAssistant: y"'
  lines[10] = json.dumps({"chosen": "\n\nHuman: x\n\nAssistant: y"})
  path = _write(tmp_path, lines)
  pairs, rep = hh_rlhf.read_file(str(path), max_bad_share=0.05)
  assert rep.lines == 200 and rep.pairs == 198 and len(pairs) == 198
  assert rep.malformed[0].startswith(f"{path}:4: not JSON")
  assert rep.malformed[1] == f"{path}:11: missing key 'rejected'"


def test_too_many_bad_lines_stop_with_one_line(tmp_path):
  lines = [_good(i) for i in range(10)] + ["[1, 2]", json.dumps({"chosen": 1, "rejected": 2})]
  path = _write(tmp_path, lines)
  with pytest.raises(ValueError) as e:
    hh_rlhf.read_file(str(path), max_bad_share=0.1)
  msg = str(e.value)
  assert "\n" not in msg and "2 of 12 records malformed" in msg and "max_bad_share" in msg
  _, rep = hh_rlhf.read_file(str(path), max_bad_share=0.2)
  assert rep.malformed[1] == f"{path}:12: 'chosen' is int, not a string"


def test_skip_rules_count_each_case(tmp_path):
  def line(c_ctx, c, r_ctx, r):
    return json.dumps({"chosen": f"\n\nHuman: {c_ctx}\n\nAssistant:{c}",
                       "rejected": f"\n\nHuman: {r_ctx}\n\nAssistant:{r}"})
  path = _write(tmp_path, [line("a", " x", "b", " y"), line("a", " ", "a", " y"),
                           line("a", " same", "a", "same "), line("a", " x", "a", " y")])
  pairs, rep = hh_rlhf.read_file(str(path))
  assert (rep.differing_context, rep.empty_response, rep.identical, rep.pairs) == (1, 1, 1, 1)
  assert "1 differing-context, 1 empty, 1 identical" in rep.summary()


def test_missing_files_and_names_raise_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no harmless-base/train.jsonl.gz"):
    hh_rlhf.read(str(tmp_path))
  with pytest.raises(ValueError, match="unknown hh-rlhf subset"):
    hh_rlhf.read(str(tmp_path), ("harmless",))
  (tmp_path / "harmless-base").mkdir()
  (tmp_path / "harmless-base" / "train.jsonl.gz").write_bytes(b"not gzip")
  with pytest.raises(ValueError, match="cannot read"):
    hh_rlhf.read(str(tmp_path))


def test_user_errors_are_the_kind_main_prints_as_one_line(tmp_path):
  from hh_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError):
    hh_rlhf.read(str(tmp_path))
  with pytest.raises(FileNotFoundError):
    hh_rlhf.read_file(str(tmp_path / "nope.jsonl"))
