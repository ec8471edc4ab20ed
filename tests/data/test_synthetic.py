"""The synthetic HH world: determinism, comparisons labelled by Bradley-Terry over gold."""
import hashlib

import pytest

from hh_jax.data import synthetic as syn
from hh_jax.data import synthetic_pairs as sp
from hh_jax.data import labelers


def _digest(items) -> str:
  return hashlib.sha256(repr(items).encode()).hexdigest()


def test_same_seed_same_bytes():
  assert _digest(syn.lm_corpus(200, seed=7)) == _digest(syn.lm_corpus(200, seed=7))
  assert syn.lm_corpus(50, seed=7) != syn.lm_corpus(50, seed=8)
  for mixture in syn.MIXTURES:
    a = sp.comparisons(100, seed=3, mixture=mixture, temperature=1.0)
    assert _digest(a) == _digest(sp.comparisons(100, seed=3, mixture=mixture,
                                                 temperature=1.0))
  assert _digest(syn.prompts(50, 1)) == _digest(syn.prompts(50, 1))
  assert sp.stackexchange_posts_xml(10, 2) == sp.stackexchange_posts_xml(10, 2)


def test_lm_corpus_format():
  corpus = syn.lm_corpus(300, seed=0)
  assert len(corpus) == 300 and all(isinstance(d, str) for d in corpus)
  turns = set()
  for d in corpus:
    assert d.startswith("\n\nHuman: ")
    n = d.count("\n\nHuman:")
    assert n == d.count("\n\nAssistant:")
    turns.add(n)
    ctx, reply = d.rsplit("\n\nAssistant:", 1)
    assert reply.startswith(" ") and reply.strip()
  assert turns == {1, 2, 3, 4}


def test_every_request_template_parses_to_its_topic():
  for t in syn.TOPICS:
    for harmful, requests in ((False, t.benign), (True, t.harmful)):
      for r in requests:
        assert syn.parse_request(f"\n\nHuman: {r}\n\nAssistant:") == syn.Request(
            t.name, harmful), r
  seen = set()
  for t in syn.TOPICS:  # a detail word must name one topic only, or relevance is ambiguous
    assert not seen & set(t.details), t.name
    seen |= set(t.details)


def test_follow_up_refers_to_the_earlier_request():
  ctx = ("\n\nHuman: How do I tune my guitar?\n\nAssistant: Use a tuner."
         "\n\nHuman: How do I steal a car from a parking lot?\n\nAssistant: I won't help."
         "\n\nHuman: Can you tell me more?\n\nAssistant:")
  assert syn.parse_request(ctx) == syn.Request("car", True)


def test_comparisons_follow_bradley_terry():
  pairs = sp.comparisons(400, seed=1, mixture="mixed", temperature=0.0)
  assert all(labelers.gold_score(p.context, p.chosen) > labelers.gold_score(p.context, p.rejected)
             for p in pairs)
  noisy = sp.comparisons(400, seed=1, mixture="mixed", temperature=2.0)
  agree = sum(labelers.gold_score(p.context, p.chosen) > labelers.gold_score(p.context, p.rejected)
              for p in noisy) / len(noisy)
  assert 0.6 < agree < 0.95, agree
  assert all(not syn.parse_request(p.context).harmful
             for p in sp.comparisons(100, 0, mixture="helpful"))
  assert all(syn.parse_request(p.context).harmful
             for p in sp.comparisons(100, 0, mixture="harmless"))
  helpful_labels = sp.comparisons(200, 0, mixture="harmless", scorer="helpful")
  assert sum(labelers.helpfulness(p.context, p.chosen) > labelers.helpfulness(p.context, p.rejected)
             for p in helpful_labels) == 200


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="unknown mixture"):
    sp.comparisons(1, 0, mixture="helpfull")
  with pytest.raises(ValueError, match="unknown scorer"):
    sp.comparisons(1, 0, scorer="human")
  with pytest.raises(ValueError, match="temperature"):
    sp.comparisons(1, 0, temperature=-1.0)
