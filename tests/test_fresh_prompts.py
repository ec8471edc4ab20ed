"""Prompts kept whole within the budget (rl/prompts.py) and evaluation sets kept apart from
training sets (data/fresh.py), on hand-built contexts and a word-per-token tokenizer."""
import json
import os

import pytest

from hh_jax.data import fresh
from hh_jax.errors import UserError
from hh_jax.rl import prompts as prompts_lib

TURNS = ("\n\nHuman: hi there\n\nAssistant: hello, how can I help?",
         "\n\nHuman: How do I tune my guitar?\n\nAssistant: Use a tuner and check the frets.",
         "\n\nHuman: How do I start running?\n\nAssistant: Get good shoes first.",
         "\n\nHuman: Can you tell me more about the pace to run at?\n\nAssistant:")
CONTEXT = "".join(TURNS)


class WordTok:
  """One token per whitespace-separated word: budgets counted by hand."""

  def encode(self, text):
    return list(range(len(text.split())))


def _fit(budget):
  return prompts_lib.PromptFit(WordTok(), budget, "PM seq_len - new tokens", "lower the reply")


def test_a_long_context_loses_whole_turns_from_the_front_and_keeps_the_last_request():
  words = [len(t.split()) for t in TURNS]
  assert words == [9, 15, 11, 13]
  assert prompts_lib.split_turns(CONTEXT) == list(TURNS)
  fit = _fit(words[2] + words[3] + 1)  # the last two turns fit, the third-last does not
  text, ids = fit(CONTEXT)
  assert text == TURNS[2] + TURNS[3]
  assert text.startswith("\n\nHuman:") and text.endswith(
      "\n\nHuman: Can you tell me more about the pace to run at?\n\nAssistant:")
  assert len(ids) == words[2] + words[3]
  assert fit(CONTEXT)[0] == text  # the same budget, the same cut
  assert _fit(sum(words))(CONTEXT)[0] == CONTEXT  # a context that fits is left whole
  assert _fit(words[3])(CONTEXT)[0] == TURNS[3]  # only the last Human turn fits
  # Text before the first Human marker travels with the first turn.
  assert prompts_lib.split_turns("Intro." + CONTEXT)[0] == "Intro." + TURNS[0]


def test_a_last_human_turn_over_the_budget_stops_the_run_in_one_line():
  with pytest.raises(UserError, match=r"last Human turn alone is 13 tokens, over the prompt "
                     r"budget of 12 \(PM seq_len - new tokens\); lower the reply") as e:
    _fit(12)(CONTEXT)
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="budget is 0"):
    _fit(0)


def test_real_prompts_over_the_budget_are_passed_over_and_counted():
  """hh-rlhf holds Human turns longer than any small model's budget: with `skip_too_long`
  (the hh_rlhf sources) a draw passes over them instead of stopping."""
  short = "\n\nHuman: How do I tune my guitar?\n\nAssistant:"  # 8 words
  fit = prompts_lib.PromptFit(WordTok(), 12, "PM seq_len - new tokens", "lower the reply",
                              skip_too_long=True)
  assert fit(CONTEXT) == (None, None) and fit.too_long == 1
  texts, ids, excluded = prompts_lib.draw_fitted(iter([CONTEXT, short, CONTEXT]), 2, fit, set())
  assert texts == [short] and [len(i) for i in ids] == [8] and excluded == 0
  assert fit.too_long == 3


def test_draws_count_the_prompts_that_lost_turns():
  short = "\n\nHuman: How do I tune my guitar?\n\nAssistant:"
  fit = _fit(25)
  texts, ids, excluded = prompts_lib.draw_fitted(iter([CONTEXT, short, CONTEXT + " "]), None,
                                                 fit, set())
  # The third fits to the first's kept text: one prompt, not two.
  assert texts == [TURNS[2] + TURNS[3], short] and excluded == 0
  assert [len(i) for i in ids] == [24, 8]
  assert fit.shortened == 1


def test_normalised_text_decides_what_is_the_same_context():
  a = "\n\nHuman: How do I   tune my Guitar?\n\nAssistant:"
  b = "\n\nhuman: how do i tune my guitar? \n\n assistant:"
  assert fresh.normalise(a) == fresh.normalise(b) == "human: how do i tune my guitar? assistant:"
  assert fresh.digest(a) == fresh.digest(b) != fresh.digest(a.replace("tune", "tuner"))


def test_a_draw_passes_over_avoided_contexts_and_keeps_drawing_to_its_n():
  cands = [f"\n\nHuman: question {i}\n\nAssistant:" for i in range(10)]
  avoid = {fresh.digest(cands[i].upper()) for i in (0, 2, 3)}
  kept, excluded = fresh.draw(iter(cands + cands), 5, avoid)
  assert kept == [cands[i] for i in (1, 4, 5, 6, 7)] and excluded == 3
  kept, excluded = fresh.draw(iter(cands + cands), None, avoid)
  assert len(kept) == 7 and excluded == 6  # repeats kept once; every avoided draw counted


def test_recorded_sets_are_found_below_the_outermost_marked_run(tmp_path):
  root = str(tmp_path / "run")
  stage, upstream = os.path.join(root, "online", "iter_1", "ppo"), str(tmp_path / "pm_elsewhere")
  fresh.mark_run(root)
  fresh.mark_run(os.path.join(root, "online"))
  assert fresh.run_dirs(stage, [upstream, os.path.join(root, "pm")]) == [root, upstream]
  assert fresh.run_dirs(upstream) == [upstream]  # outside any marked run: itself
  fresh.record(stage, fresh.TRAIN, "ppo_prompts", ["A", "b ", "a"], shortened=1)
  fresh.record(upstream, fresh.TRAIN, "pm_comparisons", ["c"])
  fresh.record(os.path.join(root, "checkpoints", "x"), fresh.TRAIN, "hidden", ["d"])
  fresh.record(root, fresh.EVAL, "report_elo", ["e"], excluded=2)
  with open(os.path.join(stage, fresh.FILES[fresh.TRAIN])) as f:
    entry = json.load(f)["ppo_prompts"]
  assert entry["size"] == 2 and entry["shortened"] == 1  # "A" and "a" are one context
  dirs = fresh.run_dirs(stage, [upstream])
  assert fresh.recorded(dirs, fresh.TRAIN) == {fresh.digest(x) for x in ("a", "b", "c")}
  assert fresh.recorded(dirs, fresh.EVAL) == {fresh.digest("e")}
  sets = fresh.read_sets([root], fresh.EVAL)
  assert [e["excluded"] for e in sets.values()] == [2]


def test_the_capability_probe_draws_around_training_contexts():
  from hh_jax.eval import capabilities as cap  # pylint: disable=g-import-not-at-top
  items, passed = cap.synthetic_probe(30, seed=2)
  assert passed == 0 and items == cap.synthetic_items(30, seed=2)
  prompts = [cap.item_prompt(it) for it in items]
  assert all(p.startswith("\n\nHuman: ") and p.endswith("\n\nAssistant:") for p in prompts)
  avoid = frozenset(fresh.digest(p) for p in prompts[:10])
  again, passed = cap.synthetic_probe(30, seed=2, avoid=avoid)
  assert passed >= 1 and len(again) == 30  # the first draw, at least, is passed over
  assert not avoid & {fresh.digest(cap.item_prompt(it)) for it in again}


def test_a_draw_reads_no_candidate_past_its_n():
  def stream():
    yield from ("a", "b")
    raise AssertionError("read past n")
  assert fresh.draw(stream(), 2, set()) == (["a", "b"], 0)
  assert fresh.draw(stream(), 0, set()) == ([], 0)


def test_a_stage_rerun_is_not_kept_from_what_it_drew_itself(tmp_path):
  """A stage killed after recording its sets draws the same prompts when rerun."""
  root, stage = str(tmp_path), str(tmp_path / "iter_1")
  fresh.mark_run(root)
  fresh.record(stage, fresh.EVAL, "online_1_test", ["x"])
  fresh.record(str(tmp_path / "iter_1" / "ppo"), fresh.EVAL, "ppo_eval", ["y"])
  dirs = fresh.run_dirs(stage)
  assert fresh.recorded(dirs, fresh.EVAL) == {fresh.digest("x"), fresh.digest("y")}
  assert fresh.recorded(dirs, fresh.EVAL, own=stage) == {fresh.digest("y")}
