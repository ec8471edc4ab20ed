"""Sampler invariants: cache == full recompute, log-probs == the training forward pass,
stop tokens, left padding, sharding, reproducibility, bucketing."""
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_variants
from configs import models
from hh_jax.model import sampling, transformer
from hh_jax.parallel import mesh as mesh_lib


@pytest.fixture(scope="module")
def setup():
  cfg = models.get("test")
  cfg.init_std = 0.3  # a random model that does not just repeat its input token
  model = transformer.Transformer(cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(3, cfg.vocab_size, size=n)) for n in (5, 11, 16, 2, 9, 13, 7, 1)]
  return cfg, model, params, prompts


def _full(model, params, prompts, settings, key, bucket=16):
  tokens, mask = sampling.left_pad(prompts, bucket, len(prompts))
  fn = jax.jit(functools.partial(sampling.sample_full_recompute, model, settings=settings))
  return jax.device_get(fn(params, tokens, mask, key=key))


@pytest.mark.parametrize("variant", model_variants.VARIANTS)
def test_prefill_and_decode_logits_equal_the_full_forward(variant):
  cfg = model_variants.get(variant)
  model = transformer.Transformer(cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  rng = np.random.default_rng(1)
  prompts = [list(rng.integers(3, cfg.vocab_size, size=n)) for n in (3, 8)]
  tokens, mask = sampling.left_pad(prompts, 8, 2)  # [2, 8], row 0 left-padded by 5
  new = rng.integers(3, cfg.vocab_size, size=(2, 3)).astype(np.int32)  # [2, 3]
  cache = transformer.init_cache(cfg, 2, 11)
  apply = jax.jit(lambda t, m, c: model.apply({"params": params}, t, m, cache=c))
  out = apply(tokens, mask, cache)
  got, cache = [out["logits"]], out["cache"]
  for j in range(3):
    out = apply(new[:, j:j + 1], np.ones((2, 1), np.int32), cache)
    got.append(out["logits"])
    cache = out["cache"]
  full = model.apply({"params": params}, np.concatenate([tokens, new], 1),
                     np.concatenate([mask, np.ones_like(new)], 1))["logits"]
  got = np.concatenate(got, axis=1)  # [2, 11, vocab]
  real = np.concatenate([mask, np.ones_like(new)], 1).astype(bool)
  np.testing.assert_allclose(got[real], np.asarray(full)[real], atol=1e-5)


def test_greedy_cache_equals_full_recompute(setup):
  cfg, model, params, prompts = setup
  settings = sampling.Settings(max_new_tokens=12, temperature=0.0)
  out = sampling.Sampler(cfg, params)(prompts, jax.random.PRNGKey(0), settings)
  ref = _full(model, params, prompts, settings, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out["tokens"], ref["tokens"])
  np.testing.assert_allclose(out["logprobs"], ref["logprobs"], atol=1e-5)
  assert len({tuple(r) for r in out["tokens"]}) > 4  # rows really differ


def test_logprobs_match_training_forward(setup):
  cfg, model, params, prompts = setup
  settings = sampling.Settings(max_new_tokens=10, temperature=1.0, top_k=50)
  out = sampling.Sampler(cfg, params)(prompts, jax.random.PRNGKey(3), settings)
  # Score prompt + sample in one right-padded forward pass, as a PPO loss would.
  seqs = [list(p) + list(t[:n]) for p, t, n in zip(prompts, out["tokens"], out["lengths"])]
  width = max(map(len, seqs))
  tokens = np.zeros((len(seqs), width), np.int32)
  for i, s in enumerate(seqs):
    tokens[i, :len(s)] = s
  logits = model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(tokens > 0))["logits"]
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  for i, (p, n) in enumerate(zip(prompts, out["lengths"])):
    want = [logp[i, len(p) - 1 + j, seqs[i][len(p) + j]] for j in range(n)]
    np.testing.assert_allclose(out["logprobs"][i, :n], want, atol=1e-4)


def test_stop_tokens_end_a_row_and_mask_the_rest(setup):
  cfg, _, params, prompts = setup
  sampler = sampling.Sampler(cfg, params)
  free = sampler(prompts, jax.random.PRNGKey(0), sampling.Settings(12, temperature=0.0))
  stop = int(free["tokens"][0, 2])
  out = sampler(prompts, jax.random.PRNGKey(0), sampling.Settings(12, 0.0, stop_ids=(stop,)))
  for i in range(len(prompts)):
    row = list(free["tokens"][i])
    n = row.index(stop) + 1 if stop in row else 12
    assert out["lengths"][i] == n
    np.testing.assert_array_equal(out["tokens"][i, :n], row[:n])
    assert (out["tokens"][i, n:] == 0).all() and (out["logprobs"][i, n:] == 0).all()
    np.testing.assert_array_equal(out["mask"][i], np.arange(12) < n)
  assert out["lengths"][0] <= 3  # the stop id first appears by step 3 of row 0


def test_left_padding_does_not_change_a_row(setup):
  cfg, _, params, prompts = setup
  for temperature in (1.0,):  # greedy + left padding: test_greedy_cache_equals_full_recompute
    settings = sampling.Settings(max_new_tokens=8, temperature=temperature)
    short = sampling.Sampler(cfg, params, buckets=(16,))(prompts, jax.random.PRNGKey(5), settings)
    long = sampling.Sampler(cfg, params, buckets=(48,))(prompts, jax.random.PRNGKey(5), settings)
    np.testing.assert_array_equal(short["tokens"], long["tokens"])
    np.testing.assert_allclose(short["logprobs"], long["logprobs"], atol=1e-4)


def test_sharded_equals_one_device_and_key_reproduces(setup):
  cfg, _, params, prompts = setup
  settings = sampling.Settings(max_new_tokens=8, temperature=1.0, top_p=0.9)
  one = sampling.Sampler(cfg, params)(prompts, jax.random.PRNGKey(7), settings)
  mesh = mesh_lib.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  sharded = sampling.Sampler(cfg, jax.device_put(params, mesh_lib.replicated(mesh)), mesh)
  a = sharded(prompts, jax.random.PRNGKey(7), settings)
  b = sharded(prompts, jax.random.PRNGKey(7), settings)  # reuses the donated cache
  c = sharded(prompts, jax.random.PRNGKey(8), settings)
  np.testing.assert_array_equal(one["tokens"], a["tokens"])
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert not np.array_equal(a["tokens"], c["tokens"])


def test_gqa_sampler_sharded_over_kv_heads_equals_one_device():
  """A llama-test model (8 query heads over 4 kv heads) sampled with its cache split over
  tensor=4 gives one device's tokens; the cache holds the kv heads only."""
  cfg = models.get("llama-test")
  cfg.init_std = 0.3
  params = transformer.Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  rng = np.random.default_rng(4)
  prompts = [list(rng.integers(3, cfg.vocab_size, size=n)) for n in (5, 11, 3, 8)]
  settings = sampling.Settings(max_new_tokens=8, temperature=1.0, top_k=50)
  one = sampling.Sampler(cfg, params)(prompts, jax.random.PRNGKey(7), settings)
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 1, "tensor": 4})
  sharded = sampling.Sampler(cfg, jax.device_put(params, mesh_lib.replicated(mesh)), mesh)
  out = sharded(prompts, jax.random.PRNGKey(7), settings)
  np.testing.assert_array_equal(one["tokens"], out["tokens"])
  np.testing.assert_allclose(one["logprobs"], out["logprobs"], atol=1e-4)
  cache = next(iter(sharded._caches.values()))
  assert cache["k"][0].shape[1] == 4 and cache["k"][0].sharding.shard_shape(cache["k"][0].shape)[1] == 1


def test_prompt_buckets_share_one_program(setup):
  cfg, _, params, prompts = setup
  sampler = sampling.Sampler(cfg, params, buckets=(8, 32))
  settings = sampling.Settings(max_new_tokens=4, temperature=0.0)
  assert sampler.shape_for(prompts[:2], settings) == (1 * 2, 32)
  assert sampler.shape_for([[1] * 3], settings) == (1, 8)
  sampler([[5] * 20, [6] * 30], jax.random.PRNGKey(0), settings)
  sampler([[5] * 17, [6] * 25], jax.random.PRNGKey(0), settings)  # same bucket: no recompile
  assert sampler._program(settings)._cache_size() == 1


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.asarray([[0.5, 0.25, 0.15, 0.1]]))
  k2 = sampling.filter_logits(logits, sampling.Settings(temperature=1.0, top_k=2))
  assert np.isfinite(np.asarray(k2[0, :2])).all() and np.isinf(np.asarray(k2[0, 2:])).all()
  p = sampling.filter_logits(logits, sampling.Settings(temperature=1.0, top_p=0.7))
  np.testing.assert_array_equal(np.isfinite(np.asarray(p[0])), [True, True, False, False])
  p1 = sampling.filter_logits(logits, sampling.Settings(temperature=1.0, top_p=0.4))
  np.testing.assert_array_equal(np.isfinite(np.asarray(p1[0])), [True, False, False, False])


def test_stream_matches_the_compiled_loop_and_chat_keeps_history(setup):
  cfg, _, params, prompts = setup
  sampler = sampling.Sampler(cfg, params)
  settings = sampling.Settings(max_new_tokens=6, temperature=1.0, top_k=20)
  batch = sampler(prompts[:1], jax.random.PRNGKey(4), settings)
  streamed = list(sampler.stream(prompts[0], jax.random.PRNGKey(4), settings))
  np.testing.assert_array_equal(streamed, batch["tokens"][0])

  from hh_jax import chat
  from hh_jax.data import synthetic, tokenizer
  tok = tokenizer.train(synthetic.lm_corpus(200, 0), 512)
  chat_cfg = models.get("test")
  chat_cfg.vocab_size = tok.vocab_size  # every id the model can emit decodes
  chat_params = transformer.Transformer(chat_cfg).init(
      jax.random.PRNGKey(1), jnp.zeros((1, 8), jnp.int32))["params"]
  chat_sampler = sampling.Sampler(chat_cfg, chat_params)
  settings = sampling.Settings(max_new_tokens=5, temperature=0.0,
                               stop_ids=sampling.stop_ids_for(tok))
  shown = io.StringIO()
  transcript = chat.session(chat_sampler, tok, ["Hi there", "/reset", "How do I tune my guitar?"],
                            settings, out=shown)
  assert transcript.startswith("\n\nHuman: How do I tune my guitar?\n\nAssistant:")
  assert transcript.count("\n\nHuman:") == 1  # /reset dropped the first turn
  reply = transcript[len("\n\nHuman: How do I tune my guitar?\n\nAssistant:"):]
  assert shown.getvalue().endswith("Assistant:" + reply + "\n")  # what streamed is the reply
  assert shown.getvalue().count("Assistant:") >= 2


@pytest.mark.parametrize("scan,variant", [(True, "gpt2"), (False, "gpt2")] +
                         [(True, v) for v in model_variants.VARIANTS[1:]])
def test_cpu_decode_layout_gives_the_plain_weights_samples(scan, variant):
  cfg = model_variants.get(variant)
  cfg.init_std, cfg.scan_layers = 0.3, scan
  model = transformer.Transformer(cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  # Every leaf non-zero (biases start at 0), so a weight dropped or misplaced in the copy shows.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape)
                                     for a, k in zip(leaves, keys)])
  rng = np.random.default_rng(2)
  prompts = [list(rng.integers(3, cfg.vocab_size, size=n)) for n in (4, 9, 1, 12)]
  tokens, mask = sampling.left_pad(prompts, 16, len(prompts))
  out = {}
  for layout in (False, True):
    fn = jax.jit(functools.partial(sampling.sample, model, settings=sampling.Settings(10, 0.0),
                                   cpu_layout=layout))
    out[layout], _ = fn(params, tokens, mask, transformer.init_cache(cfg, 4, 26),
                        jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out[True]["tokens"], out[False]["tokens"])
  np.testing.assert_allclose(out[True]["logprobs"], out[False]["logprobs"], atol=1e-5)
  assert len({tuple(r) for r in np.asarray(out[True]["tokens"])}) > 2
  assert sampling.Sampler(cfg, params)._cpu_layout  # one CPU device: the sampler uses it


def test_no_decode_copy_on_several_devices_or_past_the_size_cap(setup, monkeypatch):
  cfg, _, params, _ = setup
  one = mesh_lib.one_device_mesh()
  assert sampling.decode_layout_for(one, params)
  assert not sampling.decode_layout_for(mesh_lib.make_mesh({"data": 4, "fsdp": 2, "tensor": 1}),
                                        params)
  monkeypatch.setattr(sampling, "DECODE_COPY_MAX_BYTES", 1000)
  assert not sampling.decode_layout_for(one, params)
  assert not sampling.Sampler(cfg, params)._cpu_layout


@pytest.mark.parametrize("vocab", [37, 64])
def test_draw_follows_the_softmax_and_never_draws_a_filtered_token(vocab):
  logits = jnp.asarray(np.random.default_rng(vocab).standard_normal((1, vocab)) * 2, jnp.float32)
  settings = sampling.Settings(temperature=1.0, top_k=vocab // 2)
  x = sampling.filter_logits(logits, settings)
  n = 40_000
  draws = jax.jit(jax.vmap(lambda k: sampling.draw(x, k)[0]))(
      jax.random.split(jax.random.PRNGKey(0), n))
  freq = np.bincount(np.asarray(draws), minlength=vocab) / n
  p = np.asarray(jax.nn.softmax(x[0]))
  assert freq[p == 0].sum() == 0  # top-k's dropped tokens never come out
  # Each frequency within 5 binomial standard deviations of its probability.
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)
