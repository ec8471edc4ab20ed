"""hh_jax's SentencePiece tokenizer as a Hugging Face `tokenizer.json`.

`AutoTokenizer.from_pretrained(DIR)` then encodes text to the ids `Tokenizer.encode` gives,
with no sentencepiece at load time (vLLM and TGI read tokenizer.json directly). The mapping
follows how SentencePiece's BPE encodes (bpe_model.cc), not how it trains:

- identity normalization, no dummy prefix: the only rewrite is " " -> "▁";
- no pre-tokenizer: SentencePiece merges over the whole normalized string (its pieces never
  cross a word start only because training made none that do), so HF's BPE runs over the
  whole segment too;
- merges ranked by the merged piece's score, as SentencePiece picks the best-scoring
  adjacent pair; characters outside the vocabulary fall back to `<0xXX>` byte pieces;
- the dialogue markers (user-defined pieces) are added tokens matched in the raw text, as
  SentencePiece matches them before merging and never merges across them;
- control pieces (`<pad>`, `</s>`, `<eoc>`) are special tokens that text never produces:
  `split_special_tokens=True` in tokenizer_config.json, as SentencePiece encodes the string
  "<eoc>" as characters, never as the EOC id.

One known limit: where two different splits of one piece compete at adjacent positions
(`aa|a` vs `a|aa`), SentencePiece takes the leftmost and HF's rank order may not; the
project's tests compare dialogue text, unicode and runs of spaces and punctuation.
"""
from __future__ import annotations

import json
import os

from hh_jax.data import tokenizer as tok_lib
from hh_jax.errors import UserError

_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2  # TrainerSpec.model_type


def _model_proto(model_proto: bytes):
  try:
    from sentencepiece import sentencepiece_model_pb2
  except ImportError:  # the module needs protobuf
    raise UserError("exporting the tokenizer needs protobuf: pip install protobuf") from None
  m = sentencepiece_model_pb2.ModelProto()
  m.ParseFromString(model_proto)
  return m


def _merges(pieces) -> list[tuple[str, str]]:
  """Every (left, right) pair whose join is a normal piece, best-scoring join first."""
  vocab = {p.piece: i for i, p in enumerate(pieces)}
  normal = sorted((i for i, p in enumerate(pieces) if p.type == _NORMAL),
                  key=lambda i: (-pieces[i].score, i))
  merges = []
  for i in normal:
    piece = pieces[i].piece
    pairs = [(piece[:j], piece[j:]) for j in range(1, len(piece))
             if piece[:j] in vocab and piece[j:] in vocab]
    merges.extend(sorted(pairs, key=lambda lr: (vocab[lr[0]], vocab[lr[1]])))
  return merges


def tokenizer_json(model_proto: bytes) -> str:
  """The `tokenizer.json` text for a SentencePiece BPE model trained as hh_jax trains one."""
  m = _model_proto(model_proto)
  spec, norm = m.trainer_spec, m.normalizer_spec
  if spec.model_type != _BPE:
    raise UserError("only SentencePiece BPE tokenizers export (this one is not BPE); "
                    "retrain it with hh_jax.data.tokenizer.train")
  if norm.add_dummy_prefix or norm.remove_extra_whitespaces or norm.name != "identity":
    raise UserError("the tokenizer normalizes text (dummy prefix, extra-whitespace removal or "
                    f"{norm.name!r} rules); only hh_jax's identity-normalized tokenizers export")
  if not spec.byte_fallback:
    raise UserError("the tokenizer has no byte fallback; retrain it with hh_jax.data.tokenizer.train")
  pieces = list(m.pieces)
  added = [{"id": i, "content": p.piece, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": p.type in (_CONTROL, _UNKNOWN)}
           for i, p in enumerate(pieces) if p.type in (_CONTROL, _UNKNOWN, _USER_DEFINED)]
  unk = pieces[spec.unk_id].piece
  doc = {
      "version": "1.0",
      "truncation": None,
      "padding": None,
      "added_tokens": added,
      "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
      "pre_tokenizer": None,
      "post_processor": None,
      "decoder": {"type": "Sequence", "decoders": [
          {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
          {"type": "ByteFallback"}, {"type": "Fuse"}]},
      "model": {"type": "BPE", "dropout": None, "unk_token": unk,
                "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                "vocab": {p.piece: i for i, p in enumerate(pieces)},
                "merges": [list(lr) for lr in _merges(pieces)]},
  }
  return json.dumps(doc, ensure_ascii=False, indent=1)


def write(tok: tok_lib.Tokenizer, out_dir: str) -> None:
  """tokenizer.json + tokenizer_config.json + special_tokens_map.json, and the original
  tokenizer.model beside them (what `import` and hh_jax itself read)."""
  proto = _model_proto(tok.model_proto)
  piece = lambda i: proto.pieces[i].piece  # noqa: E731
  with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
    f.write(tokenizer_json(tok.model_proto))
  special = {"pad_token": piece(tok.pad_id), "eos_token": piece(tok.eos_id),
             "unk_token": piece(tok_lib.UNK_ID)}
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **special,
            "additional_special_tokens": [piece(tok.eoc_id)],
            "split_special_tokens": True, "clean_up_tokenization_spaces": False,
            "model_max_length": 1 << 30}
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=1)
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
    json.dump({**special, "additional_special_tokens": [piece(tok.eoc_id)]}, f, indent=1)
  tok.save(os.path.join(out_dir, tok_lib.FILENAME))


def write_hf(tok, out_dir: str) -> None:
  """An imported model's own tokenizer (`hf_text_tokenizer.HFTokenizer`) written back as the
  tokenizer.json it came from, with a tokenizer_config.json naming its EOS and pad tokens."""
  import tokenizers

  with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
    f.write(tok.tokenizer_json)
  tk = tokenizers.Tokenizer.from_str(tok.tokenizer_json)
  special = {"eos_token": tk.id_to_token(tok.eos_id), "pad_token": tk.id_to_token(tok.pad_id)}
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **special,
            "clean_up_tokenization_spaces": False, "model_max_length": 1 << 30}
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=1)
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
    json.dump(special, f, indent=1)
