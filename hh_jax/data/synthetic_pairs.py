"""The synthetic world's labelled corpora: comparisons for the PM and a StackExchange dump for PMP.

Both need the world (`synthetic`: topics, prompts, response writer) and its judge
(`labelers`: gold score, Bradley-Terry labels), so they live apart from both: the world
imports nothing of its judge, the judge reads the world's vocabulary, and this module reads
the two (`tests/test_layout.py` keeps the direction).
"""
from __future__ import annotations

import random
from xml.sax import saxutils

from hh_jax.data import labelers
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.data.pairs import Pair
from hh_jax.data.synthetic import _harmful_for, _pick_request, make_prompt, write_response
from hh_jax.errors import UserError

_PAIR_STYLES_BENIGN = ("comply", "comply", "partial", "offtopic", "evasive", "refuse",
                       "refuse_alt")
_PAIR_STYLES_HARMFUL = ("comply", "comply", "partial", "offtopic", "evasive", "refuse",
                        "refuse_alt", "refuse_alt")


def comparisons(num: int, seed: int, mixture: str = "mixed", temperature: float = 0.0, *,
                scorer: str = "gold", harmful_share: float = 0.5) -> list[Pair]:
  """Labelled pairs: two replies to one context, the winner drawn by Bradley-Terry.

  mixture: "helpful" (benign requests only), "harmless" (harmful requests only, as in
  red-teaming data) or "mixed". scorer: which judge labels ("gold", or the one-sided
  "helpful"/"harmless" scores, to reproduce single-objective PMs).
  """
  if scorer not in labelers.SCORERS:
    raise UserError(f"unknown scorer {scorer!r}; use one of {sorted(labelers.SCORERS)}")
  if temperature < 0:
    raise UserError(f"temperature must be >= 0, got {temperature}")
  score = labelers.SCORERS[scorer]
  rng = random.Random(f"pairs/{seed}")
  out = []
  while len(out) < num:
    harmful = _harmful_for(rng, mixture, harmful_share)
    p = make_prompt(rng, harmful)
    styles = _PAIR_STYLES_HARMFUL if harmful else _PAIR_STYLES_BENIGN
    a = write_response(rng, p.topic, rng.choice(styles), distractor=p.distractor)
    b = write_response(rng, p.topic, rng.choice(styles), distractor=p.distractor)
    sa, sb = score(p.context, a), score(p.context, b)
    if sa == sb or a == b:
      continue  # ties carry no preference
    if not labelers.bradley_terry(sa, sb, temperature, rng):
      a, b = b, a
    out.append(Pair(p.context, a, b, p.turns, f"synthetic-{mixture}"))
  return out


# ---------------------------------------------------------------------------------------
# A synthetic StackExchange dump for preference-model pretraining.


def _votes(rng: random.Random, context: str, answer: str) -> int:
  """Votes track answer quality loosely: voters reward thoroughness and length too."""
  _, ws, on, off, refused, _ = labelers.response_parts(context, answer)
  quality = 0.9 * on - 0.6 * off - 1.0 * refused + 0.015 * len(ws)
  votes = int(round(2.0 ** (quality + rng.gauss(0.0, 0.7)))) - 1
  return max(votes, -2)


def stackexchange_posts_xml(num_questions: int, seed: int) -> str:
  """A Posts.xml in the real dump format: questions (PostTypeId=1) with 2-5 answers.

  Scores are net votes; the asker accepts (most of the time) the answer they found most
  useful. Built on benign requests only: forum data knows nothing of harmlessness.
  """
  rng = random.Random(f"stackexchange/{seed}")
  rows = []
  next_id = 1
  styles = ("comply", "comply", "comply", "partial", "offtopic", "evasive")
  for _ in range(num_questions):
    t, text = _pick_request(rng, harmful=False)
    context = f"{HUMAN} {text}{ASSISTANT}"
    qid = next_id
    answers = []
    for _ in range(rng.randint(2, 5)):
      next_id += 1
      a = write_response(rng, t.name, rng.choice(styles)).strip()
      answers.append((next_id, a, _votes(rng, context, a)))
    next_id += 1
    accepted = None
    if rng.random() < 0.7:
      best = max(answers, key=lambda x: labelers.helpfulness(context, x[1]) + rng.gauss(0.0, 0.5))
      accepted = best[0]
    qscore = rng.randint(0, 20)
    attrs = {"Id": qid, "PostTypeId": 1, "Score": qscore, "Title": text,
             "Body": f"<p>{saxutils.escape(text)} Thanks in advance.</p>",
             "AnswerCount": len(answers)}
    if accepted is not None:
      attrs["AcceptedAnswerId"] = accepted
    rows.append(attrs)
    for aid, a, v in answers:
      rows.append({"Id": aid, "PostTypeId": 2, "ParentId": qid, "Score": v,
                   "Body": f"<p>{saxutils.escape(a)}</p>"})
  lines = ['<?xml version="1.0" encoding="utf-8"?>', "<posts>"]
  for r in rows:
    attrs = " ".join(f"{k}={saxutils.quoteattr(str(v))}" for k, v in r.items())
    lines.append(f"  <row {attrs} />")
  lines.append("</posts>")
  return "\n".join(lines) + "\n"
