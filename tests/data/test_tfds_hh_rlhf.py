"""The TFDS builder writes ArrayRecord from the shared sample and reads it back, TF-free."""
import importlib.util
import sys

import pytest

from hh_jax.data import hh_rlhf
from hh_jax.data import tfds_hh_rlhf


def test_tensorflow_is_absent():
  assert importlib.util.find_spec("tensorflow") is None, (
      "tensorflow is installed; hh_jax must run without it")
  with pytest.raises(ImportError):
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


def _key(p):
  return (p.context, p.chosen, p.rejected, p.turns)


def test_build_and_read_back_array_record(hh_sample_dir, tmp_path):
  builder = tfds_hh_rlhf.build(str(hh_sample_dir), str(tmp_path), subset="harmless-base")
  files = sorted(p.name for p in (tmp_path / "hh_rlhf" / "harmless-base" / "1.0.0").iterdir())
  assert any(f.startswith("hh_rlhf-train.array_record") for f in files), files
  assert builder.info.splits["train"].num_examples == 1735
  assert builder.info.splits["test"].num_examples == 256
  for split in ("train", "test"):
    expected, _ = hh_rlhf.read(str(hh_sample_dir), ("harmless-base",), split)
    got = tfds_hh_rlhf.load_pairs(str(tmp_path), "harmless-base", split)
    assert sorted(map(_key, got)) == sorted(map(_key, expected))
  source = tfds_hh_rlhf.data_source(str(tmp_path), split="test")
  assert len(source) == 256 and isinstance(source[0]["context"], bytes)
  assert "tensorflow" not in sys.modules


def test_missing_manual_dir_is_one_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no harmless-base/train.jsonl.gz"):
    tfds_hh_rlhf.build(str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(ValueError, match="give manual_dir"):
    tfds_hh_rlhf.build(None, str(tmp_path / "out"))
