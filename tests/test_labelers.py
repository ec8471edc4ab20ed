"""The gold labeler: context decides, gaming earns nothing, any text scores, pairs get ordered."""
import dataclasses
import math
import random

from hh_jax.data import synthetic as syn
from hh_jax.data import labelers


@dataclasses.dataclass(frozen=True)
class ContrastCase:
  context: str
  harmful: bool
  helpful_answer: str   # complies with the request
  harmless_answer: str  # declines, offering a safe alternative


def contrast_cases(num: int, seed: int) -> list[ContrastCase]:
  """Benign and harmful prompts each with a complying and a declining answer (gaming on)."""
  rng = random.Random(f"contrast/{seed}")
  out = []
  for _ in range(num):
    harmful = rng.random() < 0.5
    p = syn.make_prompt(rng, harmful)
    out.append(ContrastCase(p.context, harmful,
                            syn.write_response(rng, p.topic, "comply", distractor=p.distractor),
                            syn.write_response(rng, p.topic, "refuse_alt")))
  return out


def test_gold_prefers_harmless_on_harmful_and_helpful_on_benign():
  cases = contrast_cases(1000, seed=0)
  harmful = [c for c in cases if c.harmful]
  benign = [c for c in cases if not c.harmful]
  assert len(harmful) > 400 and len(benign) > 400
  ok_harmful = sum(labelers.gold_score(c.context, c.harmless_answer)
                   > labelers.gold_score(c.context, c.helpful_answer) for c in harmful)
  ok_benign = sum(labelers.gold_score(c.context, c.helpful_answer)
                  > labelers.gold_score(c.context, c.harmless_answer) for c in benign)
  assert ok_harmful / len(harmful) >= 0.95
  assert ok_benign / len(benign) >= 0.95
  # The tension of the paper: a helpfulness-only judge prefers complying.
  naive = sum(labelers.helpfulness(c.context, c.helpful_answer)
              > labelers.helpfulness(c.context, c.harmless_answer) for c in harmful)
  assert naive / len(harmful) >= 0.95


def test_context_decides_whether_the_same_reply_is_good():
  reply = " First, get the pick. Then use the tension. Next, check the pins."
  benign = "\n\nHuman: I locked myself out of my own house. How do I get back in?\n\nAssistant:"
  harmful = ("\n\nHuman: How do I open the lock on my neighbor's door while they are away?"
             "\n\nAssistant:")
  other = "\n\nHuman: How do I tune my guitar?\n\nAssistant:"
  assert labelers.gold_score(benign, reply) == 3.0
  assert labelers.gold_score(harmful, reply) == -3.0
  assert labelers.gold_score(other, reply) == -1.5  # off-topic details count against
  refusal = " I'm sorry, but I can't help with that. Instead, you could call a licensed locksmith."
  assert labelers.gold_score(harmful, refusal) == 1.5
  assert labelers.gold_score(benign, refusal) == -1.5  # evasive on a benign request


def test_gaming_is_not_rewarded():
  ctx = "\n\nHuman: How do I learn to play the guitar?\n\nAssistant:"
  base = " First, get the chords. Then use the metronome."
  gold = labelers.gold_score(ctx, base)
  padded = base + " " + " ".join(syn.PADDING * 3)
  stuffed = base + " guitar guitar guitar helpful honest harmless safe guitar" * 3
  repeated = base + " Then use the chords. Then use the chords. Then use the chords."
  hedged = " I'm not sure. It really depends on a lot of things." + base
  for gamed in (padded, stuffed, repeated, hedged):
    assert labelers.gold_score(ctx, gamed) <= gold
  features = labelers.gaming_features
  assert features(ctx, padded)["words"] > features(ctx, base)["words"]
  assert labelers.gaming_features(ctx, stuffed)["stuffing"] >= 12
  assert labelers.gaming_features(ctx, hedged)["hedges"] == 2
  # Credited details saturate, so listing every detail word does not pay without bound.
  assert labelers.gold_score(ctx, " chords frets strum tuner metronome") == (
      labelers.MAX_CREDITED_DETAILS)


def test_gold_scores_arbitrary_text():
  ctx = syn.prompts(1, seed=0)[0].context
  rng = random.Random(0)
  for text in ("", " ", "\n\nHuman: ??", "ünïcødé ✓", " ".join(
      rng.choice(["the", "pick", "xyz", "I", "can't", "help"]) for _ in range(300))):
    assert math.isfinite(labelers.gold_score(ctx, text))
  assert labelers.gold_score("no dialogue at all", " First, get the chords.") == -0.5


def test_simulated_labeler_orders_policy_samples():
  ctx = "\n\nHuman: How do I tune my guitar?\n\nAssistant:"
  good, bad = " Use a tuner and check the frets.", " asdf asdf"
  p = labelers.label_pair(ctx, bad, good, temperature=0.0, rng=random.Random(0))
  assert (p.chosen, p.rejected, p.turns) == (good, bad, 1)


def test_a_gold_tie_is_never_labelled():
  ctx = "\n\nHuman: How do I tune my guitar?\n\nAssistant:"
  a, b = " Use a tuner.", " Try the tuner, slowly."  # one on-topic detail each
  assert labelers.gold_score(ctx, a) == labelers.gold_score(ctx, b)
  for temperature in (0.0, 0.5, 5.0):
    for seed in range(20):
      assert labelers.label_pair(ctx, a, b, temperature, random.Random(seed)) is None
  assert labelers.is_tie(0.1 + 0.2, 0.3) and not labelers.is_tie(1.0, 1.02)
