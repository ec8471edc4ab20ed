"""Fixtures for the data tests: a byte-level stand-in for the project tokenizer."""
import pytest


class ByteTokenizer:
  """Same interface as hh_jax.data.tokenizer.Tokenizer: one id per UTF-8 byte."""
  pad_id = 0
  eos_id = 2
  eoc_id = 1
  vocab_size = 259

  def encode(self, text: str) -> list[int]:
    return [b + 3 for b in text.encode("utf-8")]

  def decode(self, ids) -> str:
    return bytes(int(i) - 3 for i in ids if int(i) >= 3).decode("utf-8", errors="replace")


@pytest.fixture
def byte_tok():
  return ByteTokenizer()
