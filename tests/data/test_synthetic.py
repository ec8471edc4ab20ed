"""The synthetic HH world: determinism, comparisons labelled by Bradley-Terry over gold."""
import hashlib
import random

import pytest

from hh_jax.data import synthetic as syn
from hh_jax.data import synthetic_pairs as sp
from hh_jax.data import labelers

# The fact table's digest: `FACTS` changes only on purpose (the LM corpus and the recall probe
# rest on it).
DIGEST_FACTS = "6de806074f565acf6d1db19c6b91da46b1583ef133f4de3e4b4544d221a1aca2"


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


def test_the_world_has_room_for_fresh_prompts():
  """>= 50,000 distinct contexts, and a prompt stream never repeats a context: 20,000 draws
  are 20,000 contexts, so evaluation sets drawn apart from training sets cost little."""
  first = [p.context for p in syn.prompts(20_000, seed=11)]
  assert len(set(first)) == 20_000
  assert {p.turns for p in syn.prompts(2000, seed=11)} == {1, 2, 3, 4}
  stream = syn.prompt_stream(seed=5)
  assert len({next(stream).context for _ in range(50_000)}) == 50_000
  # Without replacement changes little: with-replacement draws are distinct too, single
  # turns included (the world's 67 requests in ~380,000 wordings), and a second seed's
  # prompts barely meet the first's.
  import random  # pylint: disable=g-import-not-at-top
  rng = random.Random(0)
  raw = [syn.make_prompt(rng, rng.random() < 0.5) for _ in range(20_000)]
  assert len({p.context for p in raw}) > 19_000
  single = [p.context for p in raw if p.turns == 1]
  assert len(set(single)) > 0.9 * len(single)
  other = {p.context for p in syn.prompts(256, seed=12345)}
  assert len(other & set(first[:4096])) <= 5


def test_framing_words_change_nothing_a_judge_reads():
  """Greetings, openers and closers name no topic, mark no harm and hold no detail word."""
  judged = set(syn.HARM_MARKERS) | set(syn.DETAIL_TOPIC) | {
      c for t in syn.TOPICS for c in t.cues}
  for phrase in syn.GREETINGS + syn.OPENERS + syn.CLOSERS:
    assert not judged & set(syn.words(phrase)), phrase
  rng = __import__("random").Random(1)
  for t in syn.TOPICS:
    for harmful, requests in ((False, t.benign), (True, t.harmful)):
      for r in requests:
        framed = syn.frame_request(rng, r)
        assert syn.parse_request(f"\n\nHuman: {framed}\n\nAssistant:") == syn.Request(
            t.name, harmful), framed


def _judged_words() -> set[str]:
  return set(syn.HARM_MARKERS) | set(syn.DETAIL_TOPIC) | {
      c for t in syn.TOPICS for c in t.cues} | set(syn.BUZZWORDS)


def test_fact_words_change_nothing_a_judge_reads():
  """Every word of the fact dialogues' own turns (questions, answers, people, values,
  openers) is outside what the gold labeler reads, and none holds a refusal phrase or a
  topic's safe alternative."""
  phrases = list(syn.RECALL_OPENERS) + list(syn.PEOPLE)
  for slot in syn.FACT_SLOTS:
    phrases += [slot.question, slot.answer] + list(slot.values)
    assert all(len(syn.words(v)) == 1 for v in slot.values), slot.name  # swaps keep length
  assert all(len(syn.words(p)) == 1 for p in syn.PEOPLE)
  alternatives = [t.alternative for t in syn.TOPICS if t.alternative]
  for phrase in phrases:
    assert not _judged_words() & set(syn.words(phrase)), phrase
    low = phrase.lower()
    assert not any(p in low for p in syn.REFUSAL_PHRASES + tuple(alternatives)), phrase


def test_gold_is_unchanged_when_the_recalled_fact_is_swapped():
  """The skill is neither rewarded nor punished: over 600 fact dialogues, a recall of the
  fact's value and of every other value of its slot get one gold score, alone and after a
  reply that serves a request; and a fact question and answer put before a context change
  no reply's gold."""
  rng = random.Random(3)
  slots = {s.name: s for s in syn.FACT_SLOTS}
  swaps = 0
  for _ in range(600):
    fact = syn.fact_dialogue(rng)
    p = syn.make_prompt(rng, rng.random() < 0.5)
    served = syn.write_response(rng, p.topic, rng.choice(syn.STYLES))
    right_alone = labelers.gold_score(fact.prompt, fact.reply())
    right_after = labelers.gold_score(p.context, served + fact.reply())
    for other in slots[fact.slot].values:
      assert labelers.gold_score(fact.prompt, fact.reply(other)) == right_alone
      assert labelers.gold_score(p.context, served + fact.reply(other)) == right_after
      swaps += other != fact.value
    asked = fact.prompt + fact.reply()
    assert labelers.gold_score(asked + p.context, served) == labelers.gold_score(p.context,
                                                                                 served)
  assert swaps >= 600 * 19


def test_facts_are_a_fixed_table_every_value_dealt_once_per_slot():
  """`FACTS` gives each of the 20 people one value of each slot, a slot's 20 values dealt one
  to a person (so each value is a fact's answer once and a guess by value frequency is at
  chance), the same table in every process."""
  assert len(syn.FACTS) == len(syn.PEOPLE) * len(syn.FACT_SLOTS) == 100
  for slot in syn.FACT_SLOTS:
    dealt = [syn.FACTS[(p, slot.name)] for p in syn.PEOPLE]
    assert sorted(dealt) == sorted(slot.values), slot.name
  digest = hashlib.sha256(repr(sorted(syn.FACTS.items())).encode()).hexdigest()
  assert digest == DIGEST_FACTS, digest


def test_lm_corpus_holds_fact_dialogues_and_prompts_do_not():
  """About FACT_SHARE of the LM dialogues end with the answer to a question about one of the
  `FACTS`, always the table's value; RL prompts never do, and the prompt stream is the one
  it was before the skill."""
  corpus = syn.lm_corpus(2000, seed=0)
  facts = syn.fact_prompts(corpus)
  assert abs(len(facts) / len(corpus) - syn.FACT_SHARE) < 0.04, len(facts)
  answer = {s.answer.format(person=p, value=syn.FACTS[(p, s.name)])
            for s in syn.FACT_SLOTS for p in syn.PEOPLE}
  for prompt in facts:
    dialogue = next(d for d in corpus if d.startswith(prompt))
    assert dialogue[len(prompt):].strip() in answer, dialogue
  assert not syn.fact_prompts([p.context + " Sure." for p in syn.prompts(2000, 11)])
  first = hashlib.sha256(repr([p.context for p in syn.prompts(300, 1)]).encode()).hexdigest()
  assert first == "74db8532b21e5b8c7edcac472bfae48001938f88f466ff2ffe28bfae8f417626"
