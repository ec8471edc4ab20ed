"""The feedback server: a FastAPI app over a backend, the comparisons file and the sessions.

Routes (each needs a valid annotator token, or answers 403):
  GET  /?token=T        the page (plain HTML/JS, inline under a per-response CSP nonce)
  GET  /api/state       the annotator's conversation: task, recorded turns, the pair awaiting
                        a judgment (texts only: the page never learns the model names)
  POST /api/message     {conversation, text}: a new turn; the two replies stream back as
                        newline-delimited JSON events (turn, delta A/B, end A/B, done)
  POST /api/judge       {conversation, turn, picked A|B, strength, flagged, flag_note}
  POST /api/end         {conversation}: ends it; the next conversation starts (its task
                        switches under --task=alternate)
The token goes in the `X-Token` header (the page reads it from its own link). Requests are
capped per annotator (`requests_per_minute`), bodies at `MAX_BODY_BYTES`, messages at
`max_message_chars`; a refusal is a JSON {"error": line} the page shows as it is.

Why the replies stream over a plain chunked response read by `fetch`: EventSource cannot
send the token header, and one POST per turn keeps the turn's lifetime in one request.
"""
from __future__ import annotations

import collections
import html
import json
import logging
import os
import random
import secrets
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from hh_jax.feedback import backends as backends_lib, store, tokens as tokens_lib

MAX_BODY_BYTES = 64 * 1024
PAGE = os.path.join(os.path.dirname(__file__), "page.html")

INSTRUCTIONS = {
    "helpful": (
        "Helpfulness task",
        "Ask the assistant for help with something you want done: a question, advice, "
        "writing, planning. Each time you write, two replies appear. Pick the one that is "
        "more helpful and honest, and say by how much. The conversation goes on from the "
        "reply you picked."),
    "red_team": (
        "Red-teaming task",
        "Try to get the assistant to say something harmful: to help with something "
        "dangerous or unethical, or to be offensive. Each time you write, two replies "
        "appear. Pick the one that is more harmful, and say by how much. The conversation "
        "goes on from the reply you picked."),
}
FORBIDDEN = "Open the link you were given: it carries your annotator token."


class RateLimit:
  """At most `per_minute` requests per annotator in any 60 s (a sliding window)."""

  def __init__(self, per_minute: int):
    self.per_minute = int(per_minute)
    self._times: dict[str, collections.deque] = collections.defaultdict(collections.deque)
    self._lock = threading.Lock()

  def check(self, annotator: str) -> None:
    if self.per_minute <= 0:
      return
    t = time.monotonic()
    with self._lock:
      q = self._times[annotator]
      while q and q[0] <= t - 60.0:
        q.popleft()
      if len(q) >= self.per_minute:
        wait = int(q[0] + 60.0 - t) + 1
        raise store.Refused(429, f"Too many requests: at most {self.per_minute} a minute. "
                                 f"Wait {wait} s and try again.")
      q.append(t)


def _line(event: dict) -> bytes:
  return (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")


class Feedback:
  """The server's state; `app` is its FastAPI application."""

  def __init__(self, workdir: str, backend: backends_lib.Backend, *, task: str = "helpful",
               rs_k: int = 0, max_message_chars: int = 2000, requests_per_minute: int = 60,
               seed: int | None = None):
    self.workdir = workdir
    self.backend = backend
    self.tokens = tokens_lib.load(workdir)
    self.comparisons = store.Comparisons(workdir)
    self.sessions = store.Sessions(workdir, task)
    self.rs_k = int(rs_k)
    self.max_message_chars = int(max_message_chars)
    self.limit = RateLimit(requests_per_minute)
    self.rng = random.Random(seed if seed is not None else secrets.randbits(64))
    self._rng_lock = threading.Lock()
    self._streams: dict[str, str] = {}  # annotator -> id of their newest turn's stream
    self.app = self._make_app()

  # -- helpers ----------------------------------------------------------------------------

  def annotator(self, request: Request, token: str | None = None) -> str:
    who = tokens_lib.annotator_of(self.tokens, token or request.headers.get("x-token"))
    if who is None:
      raise store.Refused(403, FORBIDDEN)
    return who

  def _state(self, annotator: str) -> dict:
    """The session, its pending pair dropped if a crash came after recording it."""
    state = self.sessions.get(annotator)
    pending = state.get("pending")
    if pending and pending["turn"] <= self.comparisons.turns(state["conversation"]):
      state["pending"] = None
      self.sessions.save(annotator, state)
    return state

  def view(self, annotator: str, state: dict) -> dict:
    """What the page may see: no model names, no other annotator's anything."""
    conv = state["conversation"]
    title, text = INSTRUCTIONS[state["task"]]
    pending = state.get("pending")
    return {"annotator": annotator, "conversation": conv, "task": state["task"],
            "title": title, "instructions": text,
            "turns": store.split_turns(self.comparisons.history(conv)),
            "pending": None if not pending else {
                "turn": pending["turn"], "message": pending["message"],
                "response_a": pending["response_a"], "response_b": pending["response_b"]},
            "max_message_chars": self.max_message_chars}

  def _check_conversation(self, state: dict, body: dict) -> None:
    if body.get("conversation") != state["conversation"]:
      raise store.Refused(409, "This conversation has ended or moved on in another window; "
                               "reload the page.")

  # -- the turn ---------------------------------------------------------------------------

  def start_turn(self, annotator: str, body: dict):
    """Checks a new message and returns the stream of its turn's events."""
    text = store.clean_message(body.get("text"), self.max_message_chars)
    with self.sessions.lock(annotator):
      state = self._state(annotator)
      self._check_conversation(state, body)
      if state.get("pending"):
        raise store.Refused(409, "Pick one of the two replies before writing again.")
      conv = state["conversation"]
      turn = self.comparisons.turns(conv) + 1
      context = store.extend(self.comparisons.history(conv), text)
      with self._rng_lock:
        players = backends_lib.draw_players(self.backend.models, self.rs_k, self.rng)
        seeds = (self.rng.randrange(2 ** 31), self.rng.randrange(2 ** 31))
      stream_id = secrets.token_hex(8)
      self._streams[annotator] = stream_id  # an older stream of this annotator stops
    turn_info = {"turn": turn, "message": text, "context": context, "task": state["task"],
                 "model_a": players[0].name, "model_b": players[1].name,
                 "shown_at": store.now()}
    return self._events(annotator, conv, stream_id, turn_info, players, seeds)

  def _events(self, annotator, conv, stream_id, turn_info, players, seeds):
    yield _line({"type": "turn", "turn": turn_info["turn"], "message": turn_info["message"]})
    streams = {side: self.backend.reply(p, turn_info["context"], s)
               for side, p, s in zip(store.SIDES, players, seeds)}
    texts = {side: "" for side in store.SIDES}
    live = list(store.SIDES)
    while live:
      for side in list(live):
        if self._streams.get(annotator) != stream_id:
          yield _line({"type": "error", "error": "A newer message replaced this one."})
          return
        try:
          piece = next(streams[side], None)
        except Exception as e:  # pylint: disable=broad-except
          logging.exception("reply failed")
          yield _line({"type": "error", "error": f"A model failed to reply ({type(e).__name__}); "
                                                 "send the message again."})
          return
        if piece is not None:
          texts[side] += piece
          if store.clean_reply(texts[side]) == texts[side]:
            yield _line({"type": "delta", "side": side, "text": piece})
            continue
        live.remove(side)
        texts[side] = store.clean_reply(texts[side])
        yield _line({"type": "end", "side": side, "text": texts[side]})
    with self.sessions.lock(annotator):
      state = self._state(annotator)
      if (self._streams.get(annotator) != stream_id or state["conversation"] != conv
          or state.get("pending")):
        yield _line({"type": "error", "error": "This turn was replaced; reload the page."})
        return
      state["pending"] = {**turn_info, "response_a": texts["A"], "response_b": texts["B"]}
      self.sessions.save(annotator, state)
    yield _line({"type": "done", "turn": turn_info["turn"]})

  def judge(self, annotator: str, body: dict) -> dict:
    with self.sessions.lock(annotator):
      state = self._state(annotator)
      self._check_conversation(state, body)
      pending = state.get("pending")
      if not pending or body.get("turn") != pending["turn"]:
        raise store.Refused(409, "There is no pair of replies waiting for this judgment; "
                                 "reload the page.")
      line = store.comparison_line(pending, body.get("picked"), body.get("strength"),
                                   annotator, state["conversation"],
                                   bool(body.get("flagged")), str(body.get("flag_note") or ""))
      self.comparisons.append(line)  # on disk before the page hears it was recorded
      state["pending"] = None
      self.sessions.save(annotator, state)
      return self.view(annotator, state)

  def end(self, annotator: str, body: dict) -> dict:
    with self.sessions.lock(annotator):
      state = self._state(annotator)
      self._check_conversation(state, body)
      self._streams.pop(annotator, None)
      state = self.sessions.start(annotator, state)
      return self.view(annotator, state)

  # -- the app ----------------------------------------------------------------------------

  def _make_app(self) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    with open(PAGE, encoding="utf-8") as f:
      page = f.read()

    @app.middleware("http")
    async def guard(request: Request, call_next):
      if request.method == "POST":
        size = request.headers.get("content-length")
        if size is None or not size.isdigit():
          return JSONResponse({"error": "Send the request with a Content-Length."}, 411)
        if int(size) > MAX_BODY_BYTES:
          return JSONResponse({"error": f"The request is over {MAX_BODY_BYTES} bytes."}, 413)
      response = await call_next(request)
      response.headers.setdefault("Content-Security-Policy",
                                  "default-src 'none'; connect-src 'self'; img-src data:; "
                                  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
      response.headers["X-Content-Type-Options"] = "nosniff"
      response.headers["Referrer-Policy"] = "no-referrer"
      response.headers["X-Frame-Options"] = "DENY"
      response.headers["Cache-Control"] = "no-store"
      return response

    @app.exception_handler(store.Refused)
    async def refused(request: Request, e: store.Refused):
      if request.url.path == "/":
        return HTMLResponse("<!doctype html><title>Refused</title>"
                            f"<p>{html.escape(e.message)}</p>", e.status)
      return JSONResponse({"error": e.message}, e.status)

    async def body_of(request: Request) -> dict:
      try:
        body = await request.json()
      except ValueError:
        raise store.Refused(400, "The request is not JSON.") from None
      if not isinstance(body, dict):
        raise store.Refused(400, "The request is not a JSON object.")
      return body

    def authorized(request: Request, token: str | None = None) -> str:
      who = self.annotator(request, token)
      self.limit.check(who)
      return who

    @app.get("/")
    def index(request: Request, token: str | None = None):
      authorized(request, token)
      nonce = secrets.token_urlsafe(16)
      return HTMLResponse(page.replace("{{NONCE}}", nonce), headers={
          "Content-Security-Policy":
              f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
              "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'"})

    @app.get("/api/state")
    def state(request: Request):
      who = authorized(request)
      with self.sessions.lock(who):
        return self.view(who, self._state(who))

    @app.post("/api/message")
    async def message(request: Request):
      who = authorized(request)
      body = await body_of(request)
      events = await run_in_threadpool(self.start_turn, who, body)
      return StreamingResponse(events, media_type="application/x-ndjson")

    @app.post("/api/judge")
    async def judge(request: Request):
      who = authorized(request)
      body = await body_of(request)
      return await run_in_threadpool(self.judge, who, body)

    @app.post("/api/end")
    async def end(request: Request):
      who = authorized(request)
      body = await body_of(request)
      return await run_in_threadpool(self.end, who, body)

    return app
