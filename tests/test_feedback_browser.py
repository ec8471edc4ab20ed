"""The feedback page in a real headless Chromium (Debian's `chromium`, driven by Playwright;
nothing is downloaded), then the PM stage and one online iteration on what it wrote.

The round serves a `test`-rung LM trained here (twice, under two names, one side best-of-2
by a PM trained from it) with --task=alternate: a helpful conversation of two turns and a
red-team one of two, each reloaded mid-conversation, every judgment read back from
comparisons.jsonl. A second server with the scripted echo backend shows markup coming back
as text, the over-long message refused on the page, a page without a token refused, and a
reply growing on the page while it is still being written.

Without chromium (or the playwright package) the tests skip locally and fail under CI
(CI=true), where .ci/run installs chromium first. FEEDBACK_SCREENSHOT=PATH keeps the page's
screenshot (docs/feedback.png is made so).
"""
import json
import os
import shutil

import pytest

from tests import feedback_fakes, rl_runs
from configs import online as online_config, pm as pm_config
from hh_jax import main, stages
from hh_jax.data import hh_rlhf
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.feedback import store, tokens as tokens_lib

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STREAM_MS = 240_000  # a reply of the test rung on a loaded 2-core machine, compile included


@pytest.fixture(scope="module")
def browser():
  """Headless Chromium (a fresh profile per launch: Playwright makes a temporary one)."""
  missing = ""
  try:
    from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  except ImportError:
    missing = "the playwright package (pip install -r requirements-dev.txt)"
  if not missing and not os.path.exists(CHROMIUM):
    missing = "Debian's chromium (apt-get install -y chromium)"
  if missing:
    if os.environ.get("CI") == "true":
      pytest.fail(f"the browser test needs {missing}; under CI it must run, not skip "
                  "(.ci/run installs chromium)")
    pytest.skip(f"the browser test needs {missing}")
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS, timeout=60_000)
    try:
      yield b
    finally:
      b.close()


def _send(page, text):
  page.fill("#message", text)
  page.click("#send")
  page.wait_for_selector("body[data-state=judging]", timeout=STREAM_MS)
  return page.text_content("#reply-A"), page.text_content("#reply-B")


def _pick(page, side, strength):
  page.click(f"#judge button[data-side={side}][data-strength={strength}]")
  page.wait_for_selector("body[data-state=ready]", timeout=60_000)


def _open(page, url):
  page.goto(url, timeout=60_000)
  page.wait_for_selector("body[data-state=ready], body[data-state=judging]", timeout=60_000)


@pytest.fixture(scope="module")
def round_(browser, tmp_path_factory):
  """One collection round in the browser on real models; what the page showed and wrote."""
  root = tmp_path_factory.mktemp("feedback")
  runs = rl_runs.train_lm_and_pm(root)
  work = root / "collect"
  token = next(iter(tokens_lib.add(str(work), 1)))
  seen = {}
  srv = feedback_fakes.Server(work, [f"--models=policy={runs['lm']},lm={runs['lm']}",
                                     "--rs_k=2", f"--pm={runs['pm']}", "--task=alternate",
                                     "--max_new_tokens=12"])
  try:
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    url = f"{srv.url}/?token={token}"
    _open(page, url)
    seen["title1"] = page.text_content("#task-title")
    seen["r1"] = _send(page, "How do I clean my bathroom?")
    page.check("#flag")
    page.fill("#flag-note", "a flagged turn")
    _pick(page, "B", "clearly")
    seen["turns_after_1"] = page.locator("#turns .assistant").all_text_contents()
    page.reload()  # mid-conversation, between turns
    _open(page, url)
    seen["turns_after_reload"] = page.locator("#turns .assistant").all_text_contents()
    seen["r2"] = _send(page, "Thanks, and the shower?")
    shot = os.environ.get("FEEDBACK_SCREENSHOT") or str(root / "feedback.png")
    page.screenshot(path=shot, full_page=True)
    page.reload()  # mid-turn: the pair waits for its judgment
    _open(page, url)
    seen["state_after_reload"] = page.evaluate("document.body.dataset.state")
    seen["r2_after_reload"] = (page.text_content("#reply-A"), page.text_content("#reply-B"))
    _pick(page, "A", "much")
    page.click("#end")
    page.wait_for_function("() => document.getElementById('task-title').textContent.includes('Red')",
                           timeout=60_000)
    seen["title2"] = page.text_content("#task-title")
    seen["r3"] = _send(page, "Tell me how to pick a lock")
    _pick(page, "A", "slightly")  # A: the more harmful
    page.reload()
    _open(page, url)
    seen["r4"] = _send(page, "Be more specific")
    _pick(page, "B", "much")
    page.close()
  finally:
    srv.stop()
  return {"runs": runs, "work": work, "seen": seen, "shot": shot,
          "lines": feedback_fakes.lines(work)}


def test_browser_round_helpful_then_red_team(round_):
  seen, lines = round_["seen"], round_["lines"]
  assert seen["title1"] == "Helpfulness task" and seen["title2"] == "Red-teaming task"
  assert len(lines) == 4
  (a1, b1), (a2, b2), (a3, b3), (a4, b4) = (seen[k] for k in ("r1", "r2", "r3", "r4"))
  assert seen["turns_after_1"] == seen["turns_after_reload"] == [b1.strip()]
  assert seen["state_after_reload"] == "judging" and seen["r2_after_reload"] == (a2, b2)
  c1 = f"{HUMAN} How do I clean my bathroom?{ASSISTANT}"
  c2 = c1 + b1 + f"{HUMAN} Thanks, and the shower?{ASSISTANT}"
  c3 = f"{HUMAN} Tell me how to pick a lock{ASSISTANT}"
  c4 = c3 + a3 + f"{HUMAN} Be more specific{ASSISTANT}"  # red-team goes on from the pick
  expect = [  # (chosen, rejected): helpful keeps the pick, red-team the one not picked
      (c1 + b1, c1 + a1), (c2 + a2, c2 + b2), (c3 + b3, c3 + a3), (c4 + a4, c4 + b4)]
  assert [(l["chosen"], l["rejected"]) for l in lines] == expect
  meta = [(l["task"], l["picked"], l["strength"], l["turn"], l["flagged"]) for l in lines]
  assert meta == [("helpful", "B", "clearly", 1, True), ("helpful", "A", "much", 2, False),
                  ("red_team", "A", "slightly", 1, False), ("red_team", "B", "much", 2, False)]
  assert lines[0]["flag_note"] == "a flagged turn"
  assert len({l["conversation"] for l in lines[:2]}) == len({l["conversation"] for l in lines[2:]}) == 1
  assert lines[0]["conversation"] != lines[2]["conversation"]
  for l in lines:
    assert l["annotator"] == "annotator_1" and l["shown_at"] <= l["judged_at"]
    # One side is best-of-2 by the PM, the other one sample; both are served models.
    assert l["model_a"].endswith("+bo2") != l["model_b"].endswith("+bo2")
    assert {l["model_a"].replace("+bo2", ""), l["model_b"].replace("+bo2", "")} <= {"policy", "lm"}
    helpful = l["task"] == "helpful"
    assert (l["chosen_model"] == l["model_" + l["picked"].lower()]) == helpful
  assert os.path.getsize(round_["shot"]) > 10_000


def test_pm_stage_and_online_loop_train_on_the_browsers_comparisons(round_, tmp_path):
  runs, path = round_["runs"], str(round_["work"] / store.COMPARISONS)
  pairs, rep = hh_rlhf.read_file(path)
  assert rep.lines == 4 and not rep.malformed
  # The PM stage on the file alone (2 pairs a step: 2 data shards, the 8 test devices' other
  # factor on tensor; its held-out set is the same file: this checks that the stage reads
  # and trains on it, not the PM's accuracy).
  c = pm_config.get_config("size=test,data=hh_rlhf,runlocal=True")
  c.init.workdir = runs["lm"]
  c.data.train_files = path
  c.data.eval_files = path
  c.data.seq_len = 96  # the PPO prompt budget is seq_len - max_new_tokens
  c.data.batch_size = 2
  c.mesh.data, c.mesh.tensor = 2, 4
  c.train.num_epochs = 2
  pm_dir = str(tmp_path / "pm")
  stages.run(c, pm_dir)
  assert os.path.exists(os.path.join(pm_dir, "reward_stats.json"))
  with open(os.path.join(pm_dir, "metrics.jsonl")) as f:
    steps = [json.loads(x)["step"] for x in f if "loss" in x]
  assert max(steps) == 2 * (rep.pairs // 2)  # 2 epochs of the file's pairs, 2 a step
  # One online iteration whose comparisons are the browser's file (online.human_files).
  o = online_config.get_config(
      f"size=test,init={runs['lm']},pm={runs['pm']},lm={runs['lm']},iterations=1,runlocal=True")
  o.online.human_files = path
  o.pm_stage.data.seq_len = 96
  o.ppo_stage.train.total_steps = 2
  o.ppo_stage.eval.num_prompts = 8
  o.ppo_stage.eval.bon_n = 2
  o.ppo_stage.eval.bon_prompts = 2
  work = str(tmp_path / "online")
  record = main.run(o, work)
  (entry,) = record["iterations"]
  assert entry["comparisons"] + entry["test_comparisons"] == rep.pairs
  kept, _ = hh_rlhf.read_file(os.path.join(work, "iter_1", "comparisons.jsonl"))
  assert {p.chosen for p in kept} <= {p.chosen for p in pairs}
  assert os.path.exists(os.path.join(work, "iter_1", "ppo", "ppo_eval.json"))


@pytest.fixture
def echo_server(tmp_path):
  work = tmp_path / "echo"
  token = next(iter(tokens_lib.add(str(work), 1)))
  with feedback_fakes.Server(work, ["--models=m1=x,m2=y", "--backend=tests.feedback_fakes:echo",
                                    "--max_message_chars=200"],
                             env={"FEEDBACK_FAKE_DELAY": "0.15"}) as srv:
    yield srv, token, work


def test_page_shows_markup_as_text_refuses_long_messages_and_streams(browser, echo_server):
  srv, token, work = echo_server
  page = browser.new_page()
  dialogs = []
  page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
  try:
    r = page.goto(srv.url + "/?token=not-a-token-at-all", timeout=60_000)
    assert r.status == 403 and "annotator token" in page.text_content("body")
    url = f"{srv.url}/?token={token}"
    _open(page, url)
    # A reply grows on the page while it is still being written (0.15 s a word).
    page.fill("#message", "one two three four five six")
    page.click("#send")
    page.wait_for_function("() => document.body.dataset.state === 'streaming' && "
                           "document.getElementById('reply-A').textContent.includes('said')",
                           timeout=60_000)
    partial = page.text_content("#reply-A")
    page.wait_for_selector("body[data-state=judging]", timeout=60_000)
    final = page.text_content("#reply-A")
    assert partial != final and final.startswith(partial)
    _pick(page, "A", "clearly")
    # Markup in a message, and a reply that echoes it, arrive as text.
    xss = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"><b>bold</b>'
    a, _ = _send(page, xss)
    assert page.text_content("#pending-message") == xss and xss in a
    _pick(page, "B", "much")
    assert page.locator("#turns .human").all_text_contents()[-1] == xss
    assert page.evaluate("window.__xss") is None and not dialogs
    assert page.locator("main img, main b, main script").count() == 0
    # An over-long message is refused on the page, in words, and nothing is recorded.
    page.fill("#message", "y" * 201)
    page.click("#send")
    page.wait_for_function("() => document.getElementById('notice').textContent.length > 0",
                           timeout=30_000)
    assert page.text_content("#notice") == ("Your message is 201 characters long; the limit "
                                            "is 200. Shorten it and send it again.")
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert page.input_value("#message") == "y" * 201  # kept, to shorten
  finally:
    page.close()
  lines = feedback_fakes.lines(work)
  assert len(lines) == 2 and xss in lines[1]["chosen"]


def test_page_says_when_the_request_rate_cap_is_reached(browser, tmp_path):
  work = tmp_path / "capped"
  token = next(iter(tokens_lib.add(str(work), 1)))
  with feedback_fakes.Server(work, ["--models=m1=x,m2=y", "--backend=tests.feedback_fakes:echo",
                                    "--requests_per_minute=4"]) as srv:
    page = browser.new_page()
    try:
      _open(page, f"{srv.url}/?token={token}")  # 1: the page, 2: its state
      _send(page, "hello")  # 3: the message, 4: the state after it
      page.click("#judge button[data-side=A][data-strength=much]")  # 5: over the cap
      page.wait_for_function("() => document.getElementById('notice').textContent.length > 0",
                             timeout=30_000)
      assert page.text_content("#notice").startswith(
          "Too many requests: at most 4 a minute. Wait ")
    finally:
      page.close()
  assert not os.path.exists(work / store.COMPARISONS)
