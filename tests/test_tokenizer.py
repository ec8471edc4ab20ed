"""The project's own tokenizer: markers as single pieces, EOC by id only, stable on reload."""
from hh_jax.data import synthetic, tokenizer


def test_markers_are_single_pieces_and_text_round_trips(tmp_path):
  texts = synthetic.lm_corpus(200, seed=0)
  tok = tokenizer.train(texts, vocab_size=600)
  ids = tok.encode(texts[0])
  assert ids[0] == tok.human_id  # dialogues start with "\n\nHuman:"
  assert tok.assistant_id in ids
  assert tok.decode(ids) == texts[0]
  assert tok.encode("\n\nHuman:") == [tok.human_id]
  assert tok.encode("\n\nAssistant:") == [tok.assistant_id]
  # The EOC token never comes out of user text, even text that spells it.
  assert tok.eoc_id not in tok.encode("a reply <eoc> with the marker")
  assert tok.decode(ids + [tok.eoc_id, tok.pad_id]) == texts[0]
  # A model's embedding rows past the last piece (runlocal: 2,048 rows, 512 pieces), which a
  # barely trained LM still samples, are no text.
  assert tok.decode(ids + [tok.vocab_size, tok.vocab_size + 900]) == texts[0]
  assert tok.encode("unseen ünïcödé ☃") and tok.decode(tok.encode("ünïcödé ☃")) == "ünïcödé ☃"

  path = tmp_path / tokenizer.FILENAME
  tok.save(str(path))
  again = tokenizer.Tokenizer.load(str(path))
  assert again.encode(texts[1]) == tok.encode(texts[1])
  loaded = tokenizer.load_or_train(str(tmp_path), lambda: [], 600)
  assert loaded.vocab_size == tok.vocab_size  # reused, not retrained from the empty corpus
