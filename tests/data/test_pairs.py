"""Pair batching: shapes, truncation, padding, resumable order, per-process slices."""
import json

import jax
import numpy as np
import pytest

from hh_jax.data import pairs as pairs_lib
from hh_jax.data import synthetic, synthetic_pairs
from hh_jax.data.pairs import Pair


def _pairs(n):
  return [Pair(f"\n\nHuman: q{i}\n\nAssistant:", f" good {i}", f" no {i}", 1 + i % 3)
          for i in range(n)]


def test_batch_layout_right_padding(byte_tok):
  b = pairs_lib.encode_pairs(_pairs(3), byte_tok, seq_len=64)
  assert b["tokens"].shape == (3, 2, 64) and b["tokens"].dtype == np.int32
  assert b["mask"].shape == (3, 2, 64) and b["eoc_pos"].shape == (3, 2)
  assert b["turns"].tolist() == [1, 2, 3]
  text = "\n\nHuman: q0\n\nAssistant: good 0"
  n = len(text.encode())
  assert b["tokens"][0, 0, :n].tolist() == byte_tok.encode(text)
  assert b["tokens"][0, 0, n] == byte_tok.eoc_id and b["eoc_pos"][0, 0] == n
  assert b["mask"][0, 0].sum() == n + 1 and b["tokens"][0, 0, n + 1:].max() == 0
  assert b["eoc_pos"][0, 1] == n - 2  # " no 0" is two bytes shorter
  rows = np.arange(3)[:, None], np.arange(2)[None, :]
  assert (b["tokens"][rows[0], rows[1], b["eoc_pos"]] == byte_tok.eoc_id).all()


def test_left_padding_puts_eoc_last(byte_tok):
  b = pairs_lib.encode_pairs(_pairs(2), byte_tok, seq_len=64, pad_side="left")
  assert (b["eoc_pos"] == 63).all() and (b["tokens"][:, :, -1] == byte_tok.eoc_id).all()
  right = pairs_lib.encode_pairs(_pairs(2), byte_tok, seq_len=64)
  for i in range(2):
    for j in range(2):
      assert (b["tokens"][i, j][b["mask"][i, j] == 1].tolist()
              == right["tokens"][i, j][right["mask"][i, j] == 1].tolist())


def test_truncation_keeps_the_end_and_eoc(byte_tok):
  long = Pair("\n\nHuman: " + "blah " * 100 + "\n\nAssistant:", " the reply", " other", 1)
  b = pairs_lib.encode_pairs([long], byte_tok, seq_len=16)
  assert b["mask"].all() and (b["eoc_pos"] == 15).all()
  assert byte_tok.decode(b["tokens"][0, 0, :15]) == "ssistant: the reply"[-15:]
  assert b["tokens"][0, 0, 15] == byte_tok.eoc_id
  with pytest.raises(ValueError, match="seq_len must be at least 2"):
    pairs_lib.encode_pairs([long], byte_tok, seq_len=1)


def test_with_the_project_tokenizer():
  tokenizer = pytest.importorskip("hh_jax.data.tokenizer")
  tok = tokenizer.train(synthetic.lm_corpus(200, seed=0), vocab_size=400)
  data = synthetic_pairs.comparisons(4, seed=0)
  b = pairs_lib.encode_pairs(data, tok, seq_len=48)
  rows = np.arange(4)[:, None], np.arange(2)[None, :]
  assert (b["tokens"][rows[0], rows[1], b["eoc_pos"]] == tok.eoc_id).all()
  full = tok.encode(data[0].context + data[0].chosen)
  kept = b["tokens"][0, 0, :b["eoc_pos"][0, 0]].tolist()
  assert kept == full[-len(kept):]


def _run(it, n):
  return [next(it) for _ in range(n)]


def test_resumed_iterator_equals_uninterrupted(byte_tok):
  data = _pairs(37)
  kw = dict(batch_size=8, seq_len=32, seed=5, process_index=0, process_count=1)
  straight = _run(pairs_lib.PairIterator(data, byte_tok, **kw), 11)  # crosses 2 epochs
  first = pairs_lib.PairIterator(data, byte_tok, **kw)
  head = _run(first, 6)
  state = json.loads(json.dumps(first.get_state()))  # survives a JSON checkpoint
  assert state["position"] == 6
  resumed = pairs_lib.PairIterator(data, byte_tok, **kw)
  resumed.set_state(state)
  for a, b in zip(head + _run(resumed, 5), straight):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_order_is_a_function_of_seed_and_epoch(byte_tok):
  data = _pairs(16)
  it = pairs_lib.PairIterator(data, byte_tok, batch_size=4, seq_len=24, seed=1,
                              process_index=0, process_count=1, num_epochs=2)
  batches = list(it)
  assert len(batches) == 8 and it.steps_per_epoch == 4
  seen = [int(t) for b in batches[:4] for t in b["turns"]]
  order = pairs_lib.epoch_order(16, seed=1, epoch=0)
  assert seen == [data[i].turns for i in order]
  assert not np.array_equal(order, pairs_lib.epoch_order(16, seed=1, epoch=1))
  with pytest.raises(ValueError, match="resume with the same data config"):
    it.set_state({"position": 3, "seed": 2})


def test_processes_take_disjoint_slices_of_each_global_batch(byte_tok):
  data = _pairs(24)
  kw = dict(batch_size=8, seq_len=24, seed=0)
  whole = _run(pairs_lib.PairIterator(data, byte_tok, process_index=0, process_count=1, **kw),
               4)
  parts = [_run(pairs_lib.PairIterator(data, byte_tok, process_index=i, process_count=4, **kw),
                4) for i in range(4)]
  for step in range(4):
    for k in whole[step]:
      np.testing.assert_array_equal(np.concatenate([p[step][k] for p in parts]),
                                    whole[step][k])
  with pytest.raises(ValueError, match="not divisible"):
    pairs_lib.PairIterator(data, byte_tok, batch_size=6, seq_len=8, process_index=0,
                           process_count=4)


def test_to_global_shards_the_batch_axis(byte_tok):
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  it = pairs_lib.PairIterator(_pairs(16), byte_tok, batch_size=8, seq_len=24)
  local = next(it)
  glob = pairs_lib.to_global(local, sharding)
  assert glob["tokens"].shape == (8, 2, 24) and glob["turns"].shape == (8,)
  for k in local:
    np.testing.assert_array_equal(np.asarray(glob[k]), local[k])
  assert len(glob["tokens"].sharding.device_set) == len(devices)
