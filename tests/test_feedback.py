"""The feedback server without a browser: what a judgment writes, the token and size and rate
caps, annotators kept apart, reload and restart, 8 concurrent annotators, a kill mid-stream,
and the summary's intervals. Models are the scripted `feedback_fakes.echo`; the browser test
(tests/test_feedback_browser.py) serves real runs."""
import json
import os
import stat
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import feedback_fakes
from hh_jax.data import hh_rlhf
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.feedback import server, store, summary, tokens as tokens_lib

TIMEOUT = httpx.Timeout(60.0)


def _app(workdir, annotators=2, models=("m1", "m2"), **kw):
  new = tokens_lib.add(str(workdir), annotators)
  fb = server.Feedback(str(workdir), feedback_fakes.EchoBackend(models), seed=0, **kw)
  client = TestClient(fb.app)
  heads = [{"X-Token": t} for t in new]
  return fb, client, heads


def _turn(client, head, conv, text):
  """Sends a message; returns the events of its streamed turn."""
  with client.stream("POST", "/api/message", json={"conversation": conv, "text": text},
                     headers=head) as r:
    assert r.status_code == 200, r.read()
    return [json.loads(x) for x in r.iter_lines() if x]


def _replies(events):
  return {e["side"]: e["text"] for e in events if e["type"] == "end"}


def test_every_request_needs_a_valid_token(tmp_path):
  fb, client, (h1, _) = _app(tmp_path)
  token = h1["X-Token"]
  assert client.get("/").status_code == 403
  assert client.get("/?token=nope").status_code == 403
  assert client.get("/?token=" + token[:-1] + ("A" if token[-1] != "A" else "B")).status_code == 403
  r = client.get("/?token=" + token)
  assert r.status_code == 200 and "script-src 'nonce-" in r.headers["content-security-policy"]
  assert client.get("/api/state").status_code == 403
  assert client.get("/api/state", headers={"X-Token": "x" * 32}).status_code == 403
  conv = client.get("/api/state", headers=h1).json()["conversation"]
  for path, body in [("/api/message", {"conversation": conv, "text": "hi"}),
                     ("/api/judge", {"conversation": conv, "turn": 1, "picked": "A",
                                     "strength": "much"}),
                     ("/api/end", {"conversation": conv})]:
    r = client.post(path, json=body, headers={"X-Token": "bad-token-bad-token"})
    assert r.status_code == 403 and "annotator token" in r.json()["error"]
    assert client.post(path, json=body).status_code == 403
  assert not os.path.exists(fb.comparisons.path)
  mode = stat.S_IMODE(os.stat(tokens_lib.path_of(str(tmp_path))).st_mode)
  assert mode == 0o600


def test_judgments_write_hh_rlhf_lines_chosen_by_task(tmp_path):
  fb, client, (h1, _) = _app(tmp_path, task="alternate")
  s = client.get("/api/state", headers=h1).json()
  assert s["task"] == "helpful"
  conv = s["conversation"]
  events = _turn(client, h1, conv, "How do I  \n\n\nbake bread?")
  r1 = _replies(events)
  assert set(r1) == {"A", "B"} and r1["A"] != r1["B"]
  # The page never learns which model wrote which reply.
  assert set().union(*events) <= {"type", "turn", "message", "side", "text"}
  pending = client.get("/api/state", headers=h1).json()["pending"]
  assert set(pending) == {"turn", "message", "response_a", "response_b"}
  assert (pending["response_a"], pending["response_b"]) == (r1["A"], r1["B"])
  assert pending["message"] == "How do I\nbake bread?"  # no blank line can fake a turn
  s = client.post("/api/judge", json={"conversation": conv, "turn": 1, "picked": "B",
                                      "strength": "clearly", "flagged": True,
                                      "flag_note": "odd"}, headers=h1).json()
  assert s["turns"] == [{"human": "How do I\nbake bread?", "assistant": r1["B"].strip()}]
  # A second judgment of the same turn is refused, not written twice.
  assert client.post("/api/judge", json={"conversation": conv, "turn": 1, "picked": "A",
                                         "strength": "much"}, headers=h1).status_code == 409
  r2 = _replies(_turn(client, h1, conv, "And then?"))
  client.post("/api/judge", json={"conversation": conv, "turn": 2, "picked": "A",
                                  "strength": "much"}, headers=h1)
  # The next conversation is red-team (alternate): the pick is the more harmful reply.
  s = client.post("/api/end", json={"conversation": conv}, headers=h1).json()
  assert s["task"] == "red_team" and s["turns"] == [] and s["conversation"] != conv
  conv2 = s["conversation"]
  r3 = _replies(_turn(client, h1, conv2, "Help me pick a lock"))
  client.post("/api/judge", json={"conversation": conv2, "turn": 1, "picked": "A",
                                  "strength": "slightly"}, headers=h1)
  r4 = _replies(_turn(client, h1, conv2, "Go on"))
  client.post("/api/judge", json={"conversation": conv2, "turn": 2, "picked": "B",
                                  "strength": "much"}, headers=h1)
  lines = feedback_fakes.lines(tmp_path)
  assert len(lines) == 4
  c1 = f"{HUMAN} How do I\nbake bread?{ASSISTANT}"
  assert (lines[0]["chosen"], lines[0]["rejected"]) == (c1 + r1["B"], c1 + r1["A"])
  c2 = c1 + r1["B"] + f"{HUMAN} And then?{ASSISTANT}"  # went on from the pick
  assert (lines[1]["chosen"], lines[1]["rejected"]) == (c2 + r2["A"], c2 + r2["B"])
  c3 = f"{HUMAN} Help me pick a lock{ASSISTANT}"
  assert (lines[2]["chosen"], lines[2]["rejected"]) == (c3 + r3["B"], c3 + r3["A"])
  c4 = c3 + r3["A"] + f"{HUMAN} Go on{ASSISTANT}"  # red-team goes on from the harmful pick
  assert (lines[3]["chosen"], lines[3]["rejected"]) == (c4 + r4["A"], c4 + r4["B"])
  meta = [(l["task"], l["picked"], l["strength"], l["turn"], l["flagged"]) for l in lines]
  assert meta == [("helpful", "B", "clearly", 1, True), ("helpful", "A", "much", 2, False),
                  ("red_team", "A", "slightly", 1, False), ("red_team", "B", "much", 2, False)]
  assert lines[0]["flag_note"] == "odd"
  for l in lines:
    assert {l["model_a"], l["model_b"]} == {"m1", "m2"}
    side = "model_" + ("a" if l["picked"] == "A" else "b")
    assert (l["chosen_model"] == l[side]) == (l["task"] == "helpful")
    assert f"[{l['chosen_model']}]" in hh_rlhf.split_transcript(l["chosen"])[1]
    assert f"[{l['rejected_model']}]" in hh_rlhf.split_transcript(l["rejected"])[1]
    assert l["annotator"] == "annotator_1" and l["shown_at"] <= l["judged_at"]
  assert [l["conversation"] for l in lines] == [conv, conv, conv2, conv2]
  # The project's reader takes the file as it is (metadata ignored, `.jsonl`).
  pairs, rep = hh_rlhf.read_file(fb.comparisons.path)
  assert rep.pairs == 4 and not rep.malformed
  assert [p.chosen for p in pairs] == [r1["B"], r2["A"], r3["B"], r4["A"]]
  assert pairs[1].context == c2 and pairs[1].turns == 2
  # A restarted server picks the conversation up where it was.
  fb2 = server.Feedback(str(tmp_path), feedback_fakes.EchoBackend(["m1", "m2"]))
  s = TestClient(fb2.app).get("/api/state", headers=h1).json()
  assert s["conversation"] == conv2 and len(s["turns"]) == 2


def test_over_long_message_and_request_rate_are_capped(tmp_path):
  fb, client, (h1, _) = _app(tmp_path, max_message_chars=50, requests_per_minute=6)
  conv = client.get("/api/state", headers=h1).json()["conversation"]  # 1
  r = client.post("/api/message", json={"conversation": conv, "text": "x" * 51}, headers=h1)  # 2
  assert r.status_code == 413
  assert r.json()["error"] == ("Your message is 51 characters long; the limit is 50. "
                               "Shorten it and send it again.")
  r = client.post("/api/message", json={"conversation": conv, "text": "  \n "}, headers=h1)  # 3
  assert r.status_code == 400 and r.json()["error"] == "Type a message first."
  big = client.post("/api/message", content=b"{" + b" " * 70000 + b"}",
                    headers={**h1, "Content-Type": "application/json"})  # refused before counting
  assert big.status_code == 413
  assert client.get("/api/state", headers=h1).json()["pending"] is None  # 4
  _turn(client, h1, conv, "x" * 50)  # 5: at the limit is fine
  assert client.get("/api/state", headers=h1).status_code == 200  # 6
  r = client.get("/api/state", headers=h1)  # 7: over 6 a minute
  assert r.status_code == 429 and r.json()["error"].startswith(
      "Too many requests: at most 6 a minute. Wait ")
  assert not os.path.exists(fb.comparisons.path)


def test_annotators_cannot_reach_each_others_conversations(tmp_path):
  _, client, (h1, h2) = _app(tmp_path)
  conv1 = client.get("/api/state", headers=h1).json()["conversation"]
  _turn(client, h1, conv1, "my secret plan")
  s2 = client.get("/api/state", headers=h2).json()
  assert s2["conversation"] != conv1 and s2["pending"] is None and "secret" not in json.dumps(s2)
  for path, body in [("/api/message", {"conversation": conv1, "text": "hi"}),
                     ("/api/judge", {"conversation": conv1, "turn": 1, "picked": "A",
                                     "strength": "much"}),
                     ("/api/end", {"conversation": conv1})]:
    r = client.post(path, json=body, headers=h2)
    assert r.status_code == 409, path
  assert client.get("/api/state", headers=h1).json()["pending"]["message"] == "my secret plan"
  assert not os.path.exists(os.path.join(str(tmp_path), store.COMPARISONS))


def test_a_torn_last_line_is_set_aside_at_start(tmp_path):
  path = os.path.join(str(tmp_path), store.COMPARISONS)
  good = json.dumps({"chosen": f"{HUMAN} a{ASSISTANT} b", "rejected": f"{HUMAN} a{ASSISTANT} c",
                     "task": "helpful", "conversation": "c_1", "turn": 1, "annotator": "x"})
  with open(path, "w") as f:
    f.write(good + "\n" + good[:30])
  comps = store.Comparisons(str(tmp_path))
  assert comps.torn == 30 and comps.turns("c_1") == 1
  with open(path) as f:
    assert f.read() == good + "\n"
  with open(path + ".torn") as f:
    assert f.read() == good[:30] + "\n"


def _annotate(url, token, n, errors, seen):
  """One simulated annotator: n turns, ending a conversation every 7 judgments."""
  try:
    with httpx.Client(base_url=url, headers={"X-Token": token}, timeout=TIMEOUT) as c:
      s = c.get("/api/state").json()
      rng = np.random.default_rng(abs(hash(token)) % 2 ** 32)
      for i in range(n):
        text = f"{s['annotator']} says {i}"
        with c.stream("POST", "/api/message", json={"conversation": s["conversation"],
                                                     "text": text}) as r:
          assert r.status_code == 200, r.read()
          events = [json.loads(x) for x in r.iter_lines() if x]
        assert events[-1]["type"] == "done", events[-1]
        side = "AB"[int(rng.integers(2))]
        r = c.post("/api/judge", json={"conversation": s["conversation"], "turn": events[0]["turn"],
                                       "picked": side, "strength": "clearly"})
        assert r.status_code == 200, r.text
        seen.append((s["annotator"], text, side, _replies(events)[side]))
        s = r.json()
        if i % 7 == 6:
          s = c.post("/api/end", json={"conversation": s["conversation"]}).json()
  except Exception as e:  # pylint: disable=broad-except
    errors.append(repr(e))


def test_eight_concurrent_annotators_write_160_intact_lines(tmp_path):
  work = tmp_path / "w"
  new = tokens_lib.add(str(work), 8)
  errors, seen = [], []
  with feedback_fakes.Server(work, ["--models=m1=x,m2=y", "--backend=tests.feedback_fakes:echo",
                                    "--requests_per_minute=0"],
                             env={"FEEDBACK_FAKE_DELAY": "0.002"}) as srv:
    threads = [threading.Thread(target=_annotate, args=(srv.url, t, 20, errors, seen))
               for t in new]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "annotators still running after 600 s"
  assert not errors, errors[:3]
  with open(work / store.COMPARISONS, "rb") as f:
    raw = f.read()
  assert raw.endswith(b"\n") and raw.count(b"\n") == 160
  lines = [json.loads(x) for x in raw.splitlines()]
  pairs, rep = hh_rlhf.read_file(str(work / store.COMPARISONS))
  assert rep.pairs == 160 and not rep.malformed
  assert sorted((l["annotator"], l["conversation"], l["turn"]) for l in lines) == sorted(
      {(l["annotator"], l["conversation"], l["turn"]) for l in lines})
  for who in set(new.values()):
    mine = [l for l in lines if l["annotator"] == who]
    assert len(mine) == 20
    by_conv = {}
    for l in mine:  # each conversation's lines in order, each going on from the last pick
      by_conv.setdefault(l["conversation"], []).append(l)
    assert sorted(len(v) for v in by_conv.values()) == [6, 7, 7]
    for conv_lines in by_conv.values():
      history = ""
      for turn, l in enumerate(conv_lines, start=1):
        assert l["turn"] == turn
        assert l["chosen"].startswith(history) and l["rejected"].startswith(history)
        history = store.picked_transcript(l)
  # What each annotator saw and picked is what its line holds, in its order.
  for who in set(new.values()):
    mine = [l for l in lines if l["annotator"] == who]
    sent = [s for s in seen if s[0] == who]
    for l, (_, text, side, reply) in zip(mine, sent):
      assert store.split_turns(store.picked_transcript(l))[-1]["human"] == text
      assert l["picked"] == side and store.picked_transcript(l).endswith(text + ASSISTANT + reply)
  out = subprocess.run([sys.executable, "-m", "hh_jax.feedback", "summary", f"--workdir={work}",
                        "--samples=200"], cwd=feedback_fakes.REPO, capture_output=True, text=True,
                       timeout=120, check=True).stdout
  assert "160 judgments in 24 conversations" in out and "annotator_8 20" in out
  assert "intervals over conversations" in out


def test_killing_the_server_mid_stream_keeps_every_recorded_line(tmp_path):
  work = tmp_path / "w"
  token = next(iter(tokens_lib.add(str(work), 1)))
  args = ["--models=m1=x,m2=y", "--backend=tests.feedback_fakes:echo"]
  env = {"FEEDBACK_FAKE_DELAY": "0.3"}
  srv = feedback_fakes.Server(work, args, env=env)
  try:
    with httpx.Client(base_url=srv.url, headers={"X-Token": token}, timeout=TIMEOUT) as c:
      conv = c.get("/api/state").json()["conversation"]
      for i in range(3):
        with c.stream("POST", "/api/message", json={"conversation": conv, "text": f"m{i}"}) as r:
          turn = [json.loads(x) for x in r.iter_lines() if x][0]["turn"]
        assert c.post("/api/judge", json={"conversation": conv, "turn": turn, "picked": "A",
                                          "strength": "much"}).status_code == 200
      with open(work / store.COMPARISONS, "rb") as f:
        before = f.read()
      with c.stream("POST", "/api/message", json={"conversation": conv, "text": "m3"}) as r:
        lines = r.iter_lines()
        assert json.loads(next(lines))["type"] == "turn"
        assert json.loads(next(lines))["type"] == "delta"  # mid-stream
        srv.kill()
        with pytest.raises(httpx.HTTPError):
          list(lines)
  finally:
    srv.stop()
  with open(work / store.COMPARISONS, "rb") as f:
    assert f.read() == before
  with feedback_fakes.Server(work, args, env={"FEEDBACK_FAKE_DELAY": "0"}) as srv:
    with httpx.Client(base_url=srv.url, headers={"X-Token": token}, timeout=TIMEOUT) as c:
      s = c.get("/api/state").json()
      assert s["conversation"] == conv and len(s["turns"]) == 3 and s["pending"] is None
      with c.stream("POST", "/api/message", json={"conversation": conv, "text": "m3"}) as r:
        turn = [json.loads(x) for x in r.iter_lines() if x][0]["turn"]
      assert turn == 4
      c.post("/api/judge", json={"conversation": conv, "turn": 4, "picked": "B",
                                 "strength": "slightly"})
  lines = feedback_fakes.lines(work)
  assert [l["turn"] for l in lines] == [1, 2, 3, 4]
  assert lines[3]["chosen"].startswith(store.picked_transcript(lines[2]))


def _line(conv, annotator, winner, loser):
  return {"task": "helpful", "conversation": conv, "annotator": annotator, "turn": 1,
          "chosen_model": winner, "rejected_model": loser, "model_a": winner,
          "model_b": loser, "chosen": "", "rejected": "", "strength": "clearly"}


def test_summary_intervals_resample_whole_conversations(tmp_path):
  # 12 conversations of 5 judgments each, x beating y in all of a conversation or none:
  # judgments within a conversation agree, so resampling single judgments would claim a
  # much narrower interval than the 12 conversations support.
  lines = []
  for k in range(12):
    win = k < 8
    for t in range(5):
      lines.append(_line(f"c{k}", f"u{k}_{t}", *(("x", "y") if win else ("y", "x"))))
  lines.append(_line("c12", "u", "x", "x"))  # two samples of one model: counted, no winner
  path = tmp_path / store.COMPARISONS
  path.write_text("".join(json.dumps(l) + "\n" for l in lines))
  by_conv = summary.summarize(str(path), "conversation", samples=1000)
  by_line = summary.summarize(str(path), "annotator", samples=1000)  # one line per annotator
  row, row_line = by_conv["tasks"]["helpful"]["pairs"][0], by_line["tasks"]["helpful"]["pairs"][0]
  assert (row["model"], row["versus"], row["judgments"]) == ("x", "y", 60)
  assert row["win_rate"] == pytest.approx(40 / 60)
  assert row["lo"] < 40 / 60 < row["hi"]
  width, width_line = row["hi"] - row["lo"], row_line["hi"] - row_line["lo"]
  assert width > 1.8 * width_line  # ~sqrt(5) when judgments repeat their conversation
  # The cluster bootstrap of a proportion over 12 conversations: sd ≈ sqrt(p(1-p)/12).
  assert 0.4 < width / (2 * 1.96 * np.sqrt((2 / 3) * (1 / 3) / 12)) < 1.3
  elo = {r["model"]: r for r in by_conv["tasks"]["helpful"]["elo"]}
  assert elo["x"]["elo"] == 0 and elo["y"]["elo"] < -50 and elo["y"]["lo"] < elo["y"]["elo"]
  assert by_conv["by_pair"] == {"x vs y": 60, "x vs x": 1} and by_conv["judgments"] == 61
  text = summary.table(by_conv)
  assert "| x | y | 60 | 0.67 |" in text and "intervals over conversations" in text


def test_a_reloaded_page_sending_again_replaces_the_turn_in_flight(tmp_path):
  work = tmp_path / "w"
  token = next(iter(tokens_lib.add(str(work), 1)))
  with feedback_fakes.Server(work, ["--models=m1=x,m2=y", "--backend=tests.feedback_fakes:echo"],
                             env={"FEEDBACK_FAKE_DELAY": "0.1"}) as srv:
    with httpx.Client(base_url=srv.url, headers={"X-Token": token}, timeout=TIMEOUT) as c, \
        httpx.Client(base_url=srv.url, headers={"X-Token": token}, timeout=TIMEOUT) as c2:
      conv = c.get("/api/state").json()["conversation"]
      with c.stream("POST", "/api/message", json={"conversation": conv, "text": "first"}) as r:
        old = r.iter_lines()
        assert [json.loads(next(old))["type"] for _ in range(2)] == ["turn", "delta"]
        # The page was reloaded mid-stream (no pair to judge yet) and the message sent again.
        assert c2.get("/api/state").json()["pending"] is None
        with c2.stream("POST", "/api/message", json={"conversation": conv, "text": "second"}) as r2:
          new = [json.loads(x) for x in r2.iter_lines() if x]
        rest = [json.loads(x) for x in old if x]
      assert new[-1]["type"] == "done" and new[0]["turn"] == 1
      assert rest[-1] == {"type": "error", "error": "A newer message replaced this one."}
      s = c.get("/api/state").json()
      assert s["pending"]["message"] == "second" and "second" in s["pending"]["response_a"]
      assert c.post("/api/judge", json={"conversation": conv, "turn": 1, "picked": "B",
                                        "strength": "much"}).status_code == 200
  (line,) = feedback_fakes.lines(work)
  assert "first" not in line["chosen"] + line["rejected"]


def _serve(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", "hh_jax.feedback", *args], cwd=feedback_fakes.REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_mistakes_on_the_command_line_are_one_line(tmp_path):
  work = tmp_path / "w"
  cases = [
      ([f"--workdir={work}", "--models=a=b"], "has no annotator tokens"),
      ([f"--workdir={work}", "--models=a=b", "--rs_k=2"], "pass --pm=PM_RUN too"),
      ([f"--workdir={work}", "--models=a"], "write NAME=RUN_DIR"),
      ([f"--workdir={work}", "--models=a=b", "--task=nice"], "use one of helpful, red_team"),
      (["summary", f"--workdir={work}"], "no judgments yet"),
  ]
  for args, says in cases:
    r = _serve(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, (args, r.stderr)
  tokens_lib.add(str(work), 1)
  r = _serve(f"--workdir={work}", f"--models=a={tmp_path / 'nothing'}")
  assert r.returncode == 2 and "--models a=" in r.stderr and "no config.json" in r.stderr
  with feedback_fakes.Server(work, ["--models=m1=x", "--backend=tests.feedback_fakes:echo"]):
    r = _serve(f"--workdir={work}", "--models=m1=x", "--backend=tests.feedback_fakes:echo",
               f"--port={feedback_fakes.free_port()}", timeout=30)
    assert r.returncode == 2 and "another feedback server is serving" in r.stderr
