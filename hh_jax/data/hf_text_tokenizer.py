"""A Hugging Face `tokenizer.json` behind hh_jax's tokenizer interface, for imported models.

An imported model keeps the tokenizer it was trained with (`tokenizers`, no sentencepiece
retraining). The run stores it where every stage looks for a tokenizer, the workdir's
`tokenizer.model`, as a JSON bundle: the `tokenizer.json` text plus the ids hh_jax needs
(EOS ids from the HF generation config, pad). `Tokenizer.load` tells the two formats apart
by the file's first byte, so stages copy, compare and load it as they do a SentencePiece
model (a PM's tokenizer equals its policy's byte for byte).

Ids hh_jax relies on, for a tokenizer that has no `<eoc>` or single-piece dialogue markers:

- `eos_id`: the first EOS id; `eos_ids`: all of them (Llama-3 instruct ends turns with
  `<|eot_id|>` and text with `<|end_of_text|>`); the sampler stops on any
  (`sampling.stop_ids_for`);
- `eoc_id`: EOS, appended by id where a PM reads its score;
- `human_id` / `assistant_id`: `\\n\\nHuman:` is several pieces here, so no single id marks
  it. They are the id of "\\n\\n" when that is one piece (true of GPT-2, Llama-3, Qwen2
  and Pythia's byte-level BPEs), where the next `Human:` turn of plain
  `Human:`/`Assistant:` prompting begins, so a reply stops there; else EOS.
- text is encoded without special tokens (no BOS): hh_jax concatenates encoded segments.
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

from hh_jax import files

FORMAT = "hh_jax-hf-tokenizer/1"


def is_bundle(data: bytes) -> bool:
  return data.lstrip()[:1] == b"{"


def bundle(tokenizer_json: str, eos_ids: Sequence[int], pad_id: int | None = None) -> bytes:
  """The bytes a run stores as its tokenizer file."""
  eos = [int(i) for i in eos_ids]
  doc = {"format": FORMAT, "eos_ids": eos, "pad_id": int(eos[0] if pad_id is None else pad_id),
         "tokenizer_json": tokenizer_json}
  return json.dumps(doc, sort_keys=True).encode()


class HFTokenizer:
  """`tokenizers.Tokenizer` with `hh_jax.data.tokenizer.Tokenizer`'s attributes and methods."""

  def __init__(self, data: bytes):
    try:
      import tokenizers
    except ImportError:
      raise ValueError("this run's tokenizer is a Hugging Face tokenizer.json: "
                       "pip install tokenizers") from None
    doc = json.loads(data)
    if doc.get("format") != FORMAT:
      raise ValueError(f"tokenizer file format {doc.get('format')!r}; expected {FORMAT!r}")
    self.model_proto = data  # what `save` writes and stages compare, as for SentencePiece
    self.tokenizer_json = doc["tokenizer_json"]
    self._tk = tokenizers.Tokenizer.from_str(self.tokenizer_json)
    self.eos_ids = tuple(int(i) for i in doc["eos_ids"])
    self.eos_id = self.eoc_id = self.eos_ids[0]
    self.pad_id = int(doc["pad_id"])
    newline = self._tk.encode("\n\n", add_special_tokens=False).ids
    self.human_id = self.assistant_id = newline[0] if len(newline) == 1 else self.eos_id

  @property
  def vocab_size(self) -> int:
    return self._tk.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self._tk.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tk.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    drop = {self.pad_id, *self.eos_ids}
    return self._tk.decode([int(i) for i in ids if int(i) not in drop], skip_special_tokens=True)

  def save(self, path: str) -> None:
    files.write_bytes(path, self.model_proto)
