"""Capability evals: each reader parses its fixture (and skips bad lines), a rigged
log-likelihood picks the known answers (raw and per-byte), the real LM scorer agrees with an
unbatched forward and compiles per bucket only, and evaluate / the CLI run end to end on a
random-init test LM."""
from __future__ import annotations

import collections
import json
import os

import jax
import numpy as np
import pytest

from configs import lm as lm_config
from hh_jax import main as main_lib
from hh_jax.errors import UserError
from hh_jax.eval import capabilities as cap
from hh_jax.model import params as params_lib
from hh_jax.model.transformer import Transformer

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "capabilities")
TASKS = {"mmlu": os.path.join(FIX, "mmlu"), "lambada": os.path.join(FIX, "lambada.jsonl"),
         "hellaswag": os.path.join(FIX, "hellaswag.jsonl"),
         "arc_easy": os.path.join(FIX, "arc.jsonl"),
         "openbookqa": os.path.join(FIX, "openbookqa.jsonl")}
SIZES = {"mmlu": 6, "lambada": 3, "hellaswag": 3, "arc_easy": 3, "openbookqa": 3}


def test_readers_parse_their_fixtures():
  mmlu = cap.read_mmlu(TASKS["mmlu"])
  assert len(mmlu) == 6
  assert mmlu[0].context.startswith("The following is a question about kitchen science.")
  assert mmlu[0].context.endswith("Question: What does a whetstone sharpen?\nAnswer:")
  assert mmlu[0].options == (" Knives", " Guitars", " Passports", " Tomatoes")
  assert [it.answer for it in mmlu] == [0, 1, 2, 3, 0, 0]
  assert mmlu[5].options[3] == " 4,200 meters"  # a quoted comma stays in its field
  assert len(cap.read_mmlu(os.path.join(TASKS["mmlu"], "running_test.csv"))) == 2

  lam = cap.read_lambada(TASKS["lambada"])
  assert [it.options for it in lam] == [(" tea",), (" door",), (" play",)]
  assert lam[0].context.endswith("poured a cup of")

  hs = cap.read_hellaswag(TASKS["hellaswag"])
  assert [it.answer for it in hs] == [0, 1, 2]  # label 1 arrives as the string "1"
  assert hs[0].context.endswith("whetstone. He") and len(hs[0].options) == 4

  arc = cap.read_arc(TASKS["arc_easy"])
  assert [it.answer for it in arc] == [0, 1, 2]  # letters, digits, and 3 choices
  assert arc[0].context == ("Question: Which of these is needed for a campfire to keep "
                            "burning?\nAnswer:")
  assert arc[2].options == (" a spoon", " a hammer", " a GPS receiver")

  obqa = cap.read_openbookqa(TASKS["openbookqa"])
  assert [it.answer for it in obqa] == [1, 1, 0]  # ARC shape, then the question_stem variant
  assert obqa[1].context.startswith("Question: Rubbing your hands")


def test_readers_skip_bad_lines_and_refuse_bad_files(tmp_path, capsys):
  good = json.dumps({"question": {"stem": "Q?", "choices": [{"text": "x", "label": "A"},
                                                            {"text": "y", "label": "B"}]},
                     "answerKey": "B"})
  bad = ["{nope", json.dumps({"question": {"stem": "Q?", "choices": []}, "answerKey": "A"}),
         json.dumps({"question": {"stem": "Q?", "choices": [{"text": "x", "label": "A"}]},
                     "answerKey": "Z"})]
  path = tmp_path / "arc.jsonl"
  path.write_text("\n".join([good] * 7 + bad) + "\n")
  items = cap.read_arc(str(path), max_bad_share=0.5)
  assert len(items) == 7 and items[0].answer == 1
  err = capsys.readouterr().err
  assert f"{path}:8: not JSON" in err and "skipped 3 of 10 records" in err
  with pytest.raises(UserError, match=r"3 of 10 records malformed.*arc.jsonl:8"):
    cap.read_arc(str(path))

  csv = tmp_path / "bio_test.csv"
  csv.write_text("Q1?,a,b,c,d,A\nQ2?,a,b,c,E\nQ3?,a,b,c,d,Q\n")
  with pytest.raises(UserError, match=r"bio_test.csv: 2 of 3 records malformed.*bio_test.csv:2: "
                                      r"5 fields"):
    cap.read_mmlu(str(csv))
  assert len(cap.read_mmlu(str(csv), max_bad_share=0.9)) == 1
  lam = tmp_path / "lambada.jsonl"
  lam.write_text('{"text": "oneword"}\n{"text": "two words"}\n')
  with pytest.raises(UserError, match="no last word"):
    cap.read_lambada(str(lam))

  with pytest.raises(UserError, match="unknown format"):
    cap.read_task("squad", str(path))
  with pytest.raises(UserError, match="does not exist"):
    cap.read_task("mmlu", str(tmp_path / "nothing"))
  with pytest.raises(UserError, match="no .csv files"):
    cap.read_task("mmlu", str(tmp_path / ".."))


def _rigged(answers: dict[tuple[str, str], bool], right_per_byte: float = 0.0):
  """A LogLik that knows the answers: -1 nat per byte, `right_per_byte` for the right option."""
  def loglik(reqs):
    lp = np.asarray([-(right_per_byte if answers.get(r) else 1.0) * len(r[1].encode())
                     for r in reqs])
    return lp, np.asarray([bool(answers.get(r)) for r in reqs])
  return loglik


def test_alignment_tax_sign_and_table_on_hand_numbers():
  """B is worse than the base on one task (a tax: negative) and better on the other."""
  res = {"lm": {"synthetic": {"accuracy": 0.60, "n": 50}, "arc": {"accuracy": 0.40, "n": 20}},
         "ppo": {"synthetic": {"accuracy": 0.50, "n": 50}, "arc": {"accuracy": 0.45, "n": 20}},
         "half": {"synthetic": {"accuracy": 0.625, "n": 50}}}
  change = cap.tax(res, baseline="lm")
  assert change["ppo"] == pytest.approx({"synthetic": -0.10, "arc": 0.05})
  assert change["half"] == pytest.approx({"synthetic": 0.025}) and "lm" not in change
  lines = cap.tax_table(res, baseline="lm").splitlines()
  assert lines[0] == "| task | n | lm | ppo | half |"
  assert lines[2] == "| synthetic | 50 | 0.600 | 0.500 (-0.100) | 0.625 (+0.025) |"
  assert lines[3] == "| arc | 20 | 0.400 | 0.450 (+0.050) | – |"
  with pytest.raises(UserError, match="baseline 'base'"):
    cap.tax(res, baseline="base")


def test_rigged_loglik_scores_known_answers():
  for name, path in TASKS.items():
    items = cap.read_task(name, path)
    answers = {(it.context, it.options[it.answer]): True for it in items}
    res = cap.score_items(items, _rigged(answers), greedy=name == "lambada")
    assert res["n"] == SIZES[name] and res["accuracy"] == 1.0, (name, res)
    if name != "lambada":
      assert res["accuracy_norm"] == 1.0
    # a judge that knows nothing: every option 0 -> always the first (answer 0 items only)
    flat = cap.score_items(items, lambda reqs: (np.zeros(len(reqs)), np.zeros(len(reqs), bool)),
                           greedy=name == "lambada")
    want = 0.0 if name == "lambada" else np.mean([it.answer == 0 for it in items])
    assert flat["accuracy"] == pytest.approx(want)

  # raw log-prob favours the short option; per byte the right long one wins
  item = cap.Item("Q", (" ab", " the right and long one"), 1)
  res = cap.score_items([item], _rigged({("Q", item.options[1]): True}, right_per_byte=0.8))
  assert res["accuracy"] == 0.0 and res["accuracy_norm"] == 1.0

  items = cap.synthetic_items(40, seed=1)
  assert items == cap.synthetic_items(40, seed=1)
  assert {it.answer for it in items} == {0, 1, 2, 3}
  from hh_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  for it in items:
    topic = synthetic.parse_request(it.context).topic
    words = [o.strip(" .") for o in it.options]
    assert synthetic.DETAIL_TOPIC[words[it.answer]] == topic
    assert all(synthetic.DETAIL_TOPIC[w] != topic for i, w in enumerate(words) if i != it.answer)


def test_paired_tax_on_hand_numbers():
  """The tax is the mean per-item difference on the same items, its standard error the sd
  of those differences over √n (paired), its interval ± 1.96 se; each accuracy carries its
  binomial standard error."""
  base = [1, 1, 0, 0, 1]
  model = [1, 0, 0, 1, 0]  # differences 0, −1, 0, +1, −1: mean −0.2, sd √0.7
  res = {"lm": {"recall": {"accuracy": 0.6, "n": 5, "se": cap.binomial_se(0.6, 5),
                           "correct": base}},
         "ppo": {"recall": {"accuracy": 0.4, "n": 5, "se": cap.binomial_se(0.4, 5),
                            "correct": model}}}
  got = cap.paired_tax(res, "lm")["ppo"]["recall"]
  se = np.sqrt(0.7) / np.sqrt(5)
  assert got["tax"] == pytest.approx(-0.2) and got["se"] == pytest.approx(se)
  assert got["lo"] == pytest.approx(-0.2 - 1.959964 * se)
  assert got["hi"] == pytest.approx(-0.2 + 1.959964 * se) and got["n"] == 5
  assert cap.binomial_se(0.6, 5) == pytest.approx(np.sqrt(0.6 * 0.4 / 5))
  row = cap.tax_table(res, "lm").splitlines()[2]
  assert row == ("| recall | 5 | 0.600 ± 0.219 | 0.400 ± 0.219 (-0.200 [-0.933, +0.533]) |"), row
  # the same accuracies on items answered alike: no difference, no spread
  same = {"lm": res["lm"], "ppo": {"recall": dict(res["lm"]["recall"])}}
  assert cap.paired_tax(same, "lm")["ppo"]["recall"]["se"] == 0.0


def test_recall_probe_has_500_distinct_items_outside_the_lm_corpus():
  """The fact-recall probe: >= 500 distinct items, deterministic, every fact of the table
  asked equally often, the answer is the table's value and the other options are values of
  the same slot; items whose prompt a training corpus holds are passed over and counted; a
  rigged scorer that knows the table gets all of them, one that knows nothing gets chance."""
  from hh_jax.data import fresh, synthetic  # pylint: disable=g-import-not-at-top
  items, excluded = cap.recall_probe(600, seed=0)
  assert len({it.context for it in items}) == 600 and excluded == 0
  assert items == cap.recall_probe(600, seed=0)[0]
  slots = {s.name: {v.lower() for v in s.values} for s in synthetic.FACT_SLOTS}
  prefixes = {s.answer.format(person=p, value="").rstrip(". ").rstrip(): (p, s.name)
              for s in synthetic.FACT_SLOTS for p in synthetic.PEOPLE}
  asked = collections.Counter()
  for it in items:
    fact = prefixes[it.context.rsplit("\n\nAssistant: ", 1)[1]]
    asked[fact] += 1
    values = [o.strip(" .") for o in it.options]
    assert values[it.answer] == synthetic.FACTS[fact] and len(set(values)) == 4
    assert {v.lower() for v in values} <= slots[fact[1]]
  assert set(asked) == set(synthetic.FACTS) and set(asked.values()) == {6}
  # the LM corpus's fact dialogues (what the LM stage records) are avoided
  corpus = {fresh.digest(p) for p in synthetic.fact_prompts(synthetic.lm_corpus(4000, 0))}
  avoid = corpus | {fresh.digest(cap.item_prompt(it)) for it in items[:50]}
  kept, passed = cap.recall_probe(600, seed=0, avoid=frozenset(avoid))
  assert passed >= 50 and len(kept) == 600
  assert not {fresh.digest(cap.item_prompt(it)) for it in kept} & avoid

  def knower(reqs):  # the option that is the table's value for the question asked
    return (np.asarray([float(synthetic.FACTS[prefixes[c.rsplit("\n\nAssistant: ", 1)[1]]]
                              == o.strip(" .")) for c, o in reqs]),
            np.zeros(len(reqs), bool))
  assert cap.score_items(items, knower)["accuracy"] == 1.0
  rng = np.random.default_rng(0)
  guess = cap.score_items(items, lambda reqs: (rng.normal(size=len(reqs)),
                                               np.zeros(len(reqs), bool)))
  assert abs(guess["accuracy"] - 0.25) < 4 * guess["se"], guess["accuracy"]
  assert guess["se"] == pytest.approx(np.sqrt(guess["accuracy"] * (1 - guess["accuracy"]) / 600))


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cap") / "lm")
  main_lib.run(lm_config.get_config("size=test,runlocal=True"), workdir)
  return workdir


def test_lm_loglik_matches_unbatched_forward(lm_run):
  model_cfg, params, tok = params_lib.load_lm(lm_run)
  scorer = cap.LMLogLik(model_cfg, params, tok, batch_size=4)
  reqs = [("\n\nHuman: How do I start a campfire?\n\nAssistant: First, get the", " kindling."),
          ("Question: What is ice made of?\nAnswer:", " Frozen water"),
          ("a", " b c d e f g h i j k l m n o p q r s t u v w x y z " * 3),
          ("She poured a cup of", " tea")]
  lp, top = scorer(reqs)
  forward = jax.jit(Transformer(model_cfg).apply)
  for (ctx, cont), got, got_top in zip(reqs, lp, top):
    ids, start = scorer.encode(ctx, cont)
    x = np.asarray(ids, np.int32)[None]
    logits = np.asarray(forward({"params": params}, x[:, :-1])["logits"][0])  # [len, vocab]
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))  # [len, vocab]
    want = sum(logp[t - 1, ids[t]] for t in range(start, len(ids)))
    want_top = all(logits[t - 1].argmax() == ids[t] for t in range(start, len(ids)))
    assert got == pytest.approx(want, abs=1e-3), (ctx, cont)
    assert bool(got_top) == want_top
    assert ids[start:] == tok.encode(cont) or ctx == "a"
  assert scorer._score._cache_size() <= 2  # pylint: disable=protected-access  (buckets 16, 32)


def test_evaluate_end_to_end_on_a_random_lm(lm_run, capsys):
  tasks = dict(TASKS, synthetic="synthetic")
  res = cap.evaluate(lm_run, tasks, batch_size=8, synthetic_n=24)
  assert set(res) == set(tasks)
  for name, r in res.items():
    assert r["n"] == SIZES.get(name, 24)
    assert 0.0 <= r["accuracy"] <= 1.0
    assert r["accuracy_norm"] is None if name == "lambada" else 0.0 <= r["accuracy_norm"] <= 1.0
  table = cap.tax_table({"lm": res, "ppo": res}, baseline="lm")
  assert "| synthetic | 24 |" in table and "(+0.000 [+0.000, +0.000])" in table

  out = os.path.join(lm_run, "capabilities.json")
  rc = cap.main([f"--workdir={lm_run}", f"--task=arc:{TASKS['arc_easy']}", "--task=synthetic",
                 "--synthetic_n=8", f"--out={out}"])
  printed = json.loads(capsys.readouterr().out)
  assert rc == 0 and printed["synthetic"]["n"] == 8 and printed["arc"]["n"] == 3
  assert json.loads(open(out).read()) == printed
  assert cap.main([f"--workdir={lm_run}", "--task=squad:x.jsonl"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: task 'squad': unknown format") and err.count("\n") == 1
