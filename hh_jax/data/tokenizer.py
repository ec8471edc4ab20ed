"""A SentencePiece tokenizer that the project trains itself, so no stage ever downloads one.

The dialogue markers `\\n\\nHuman:` and `\\n\\nAssistant:` are single pieces: the preference
model, the sampler's stop condition and turn counting all look for them as one id. The
end-of-context (EOC) token is a control symbol: it is appended by id (where the PM reads
its score) and can never be produced by encoding user text.

The model file lives in the workdir (`tokenizer.model`); every later stage loads that file
instead of retraining, so ids mean the same thing across the whole pipeline.
"""
from __future__ import annotations

import io
from typing import Iterable, Sequence

import jax
import sentencepiece as spm

from hh_jax import files
from hh_jax.data import hf_text_tokenizer
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.parallel import multihost

EOC = "<eoc>"
PAD_ID = 0
UNK_ID = 1
EOS_ID = 2
FILENAME = "tokenizer.model"


class Tokenizer:
  """Thin wrapper over a SentencePieceProcessor with the ids hh_jax relies on."""

  def __init__(self, model_proto: bytes):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.model_proto = model_proto
    self.pad_id = PAD_ID
    self.eos_id = EOS_ID
    self.eoc_id = self._sp.piece_to_id(EOC)
    self.human_id = self._sp.piece_to_id(HUMAN)
    self.assistant_id = self._sp.piece_to_id(ASSISTANT)
    if self.eoc_id == UNK_ID or self.human_id == UNK_ID:
      raise ValueError("tokenizer model lacks the <eoc>/Human markers; "
                       "delete tokenizer.model from the workdir so it is retrained")

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, less the special ones and any past the last piece: a model's embedding
    may have more rows than the tokenizer has pieces (runlocal: 512 pieces, 2,048 rows), and
    an LM trained a few steps still samples those untrained rows; they are no text."""
    special, n = (self.pad_id, self.eoc_id, self.eos_id), self.vocab_size
    return self._sp.decode([int(i) for i in ids if int(i) not in special and 0 <= int(i) < n])

  def save(self, path: str) -> None:
    files.write_bytes(path, self.model_proto)

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    """The tokenizer at `path`: SentencePiece, or an imported model's Hugging Face tokenizer
    (`hf_text_tokenizer`, a JSON bundle under the same file name), told apart by content."""
    if not files.exists(path):
      raise FileNotFoundError(f"no tokenizer at {path}; run the LM stage in this workdir first "
                              "or point --config.tokenizer_path at an existing tokenizer.model")
    data = files.read_bytes(path)
    if hf_text_tokenizer.is_bundle(data):
      return hf_text_tokenizer.HFTokenizer(data)
    return cls(data)


def train(texts: Iterable[str], vocab_size: int) -> Tokenizer:
  """Trains a BPE model on `texts`; the vocabulary may come out smaller on a tiny corpus."""
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_writer=proto,
      vocab_size=vocab_size,
      hard_vocab_limit=False,
      model_type="bpe",
      user_defined_symbols=[HUMAN, ASSISTANT],
      control_symbols=[EOC],
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      allow_whitespace_only_pieces=True,
      split_by_whitespace=True,
      byte_fallback=True,
      character_coverage=1.0,
      pad_id=PAD_ID, unk_id=UNK_ID, eos_id=EOS_ID, bos_id=-1,
      max_sentence_length=1 << 16,
      num_threads=1,  # deterministic piece order, so a retrain reproduces the same ids
      minloglevel=2,
  )
  return Tokenizer(proto.getvalue())


def load_or_train(workdir: str, texts_fn, vocab_size: int, path: str | None = None) -> Tokenizer:
  """Loads `path` (or the workdir's tokenizer); trains and saves one from `texts_fn()` if absent."""
  if path:
    return Tokenizer.load(path)
  own = files.join(workdir, FILENAME)
  if files.exists(own):
    return Tokenizer.load(own)
  # One process trains and writes; the others wait and read that file, so every process of
  # a multi-host run holds the same ids.
  if jax.process_index() == 0:
    train(texts_fn(), vocab_size).save(own)
  multihost.sync("tokenizer_written")
  return Tokenizer.load(own)
