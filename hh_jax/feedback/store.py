"""What the feedback server keeps on disk: the judgments, and where each annotator stands.

`WORKDIR/comparisons.jsonl` gets one line per judgment, in the hh-rlhf format that
`hh_rlhf.read_file` (the PM stage's `data.train_files`, `online.human_files`) reads, with the
metadata beside `chosen` and `rejected` (readers ignore keys they do not use):

  chosen, rejected   full transcripts; helpful: chosen = the reply picked; red_team: the
                     reply picked is the more harmful one, so chosen = the other
  task               "helpful" | "red_team"
  picked, strength   "A" | "B"; "slightly" | "clearly" | "much"
  model_a, model_b   which model was shown on each side (drawn per turn, never shown)
  chosen_model, rejected_model
  annotator, conversation, turn (from 1), shown_at, judged_at (UTC ISO 8601)
  flagged, flag_note the annotator's flag on the turn

A line is appended with one `write` on an O_APPEND descriptor under an exclusive `flock`,
then fsync-ed before the annotator is told it was recorded: concurrent annotators never
interleave, and a crash loses at most the turn in flight. A line cut short by a crash
mid-write (never acknowledged) is moved to `comparisons.jsonl.torn` at the next start.

The conversation itself needs no file of its own: its recorded history is the transcript
the annotator continued, i.e. the last line's picked side. `WORKDIR/sessions/<annotator>.json`
holds only the rest (the current conversation, its task, the pair awaiting a judgment),
written whole and renamed, so a reload or a restart resumes where the annotator was.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import secrets
import threading

from hh_jax import files
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.errors import UserError

COMPARISONS = "comparisons.jsonl"
SESSIONS = "sessions"
TASKS = ("helpful", "red_team")
TASK_CHOICES = TASKS + ("alternate",)
STRENGTHS = ("slightly", "clearly", "much")
SIDES = ("A", "B")


class Refused(Exception):
  """A request the server turns down, with the HTTP status and the line the page shows."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------
# Transcripts.


def clean_message(text: str, max_chars: int) -> str:
  """The annotator's message as it enters the transcript, or Refused with the reason.

  A blank line inside a message would let it fake a `\\n\\nAssistant:` turn, so every run of
  whitespace holding a line break becomes one line break; the cap counts what is kept.
  """
  if not isinstance(text, str):
    raise Refused(400, "The message must be text.")
  text = re.sub(r"[ \t]*\n\s*", "\n", text.replace("\r", "")).strip()
  if not text:
    raise Refused(400, "Type a message first.")
  if len(text) > max_chars:
    raise Refused(413, f"Your message is {len(text)} characters long; the limit is "
                       f"{max_chars}. Shorten it and send it again.")
  return text


def clean_reply(text: str) -> str:
  """A model's reply cut before any dialogue marker it wrote out in pieces."""
  cut = len(text)
  for marker in (HUMAN, ASSISTANT):
    i = text.find(marker)
    if i >= 0:
      cut = min(cut, i)
  return text[:cut]


def extend(history: str, message: str) -> str:
  """The context a reply continues: the history, the Human turn, the Assistant marker."""
  return f"{history}{HUMAN} {message}{ASSISTANT}"


def split_turns(transcript: str) -> list[dict]:
  """[{human, assistant}] of a transcript built by `extend` + replies."""
  turns = []
  for part in transcript.split(HUMAN)[1:]:
    human, _, assistant = part.partition(ASSISTANT)
    turns.append({"human": human.strip(), "assistant": assistant.strip()})
  return turns


def comparison_line(pending: dict, picked: str, strength: str, annotator: str,
                    conversation: str, flagged: bool = False, flag_note: str = "") -> dict:
  """The record of a judgment on `pending` (the pair shown); see the module docstring."""
  if picked not in SIDES:
    raise Refused(400, "Pick A or B.")
  if strength not in STRENGTHS:
    raise Refused(400, f"Pick how much: one of {', '.join(STRENGTHS)}.")
  other = "B" if picked == "A" else "A"
  context = pending["context"]
  # helpful: the pick is the better reply; red_team: the pick is the more harmful one.
  better, worse = (picked, other) if pending["task"] == "helpful" else (other, picked)
  return {"chosen": context + pending["response_" + better.lower()],
          "rejected": context + pending["response_" + worse.lower()],
          "task": pending["task"], "picked": picked, "strength": strength,
          "model_a": pending["model_a"], "model_b": pending["model_b"],
          "chosen_model": pending["model_" + better.lower()],
          "rejected_model": pending["model_" + worse.lower()],
          "annotator": annotator, "conversation": conversation, "turn": pending["turn"],
          "shown_at": pending["shown_at"], "judged_at": now(),
          "flagged": bool(flagged), "flag_note": str(flag_note or "")[:500]}


# ---------------------------------------------------------------------------------------
# Files.


class Comparisons:
  """The judgments file and an index of its conversations, one per server.

  index: {conversation: {"annotator", "turns", "transcript"}} from the lines so far, so a
  conversation's history is known without rereading the file.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, COMPARISONS)
    self._lock = threading.Lock()
    self.index: dict[str, dict] = {}
    self.torn = self._recover()
    for line in read_lines(self.path):
      self._note(line)

  def _recover(self) -> int:
    """Moves a line a crash cut short (no final newline) to `<file>.torn`; its byte count."""
    if not os.path.exists(self.path):
      return 0
    with open(self.path, "rb+") as f:
      fcntl.flock(f, fcntl.LOCK_EX)
      data = f.read()
      cut = data.rfind(b"\n") + 1
      if cut == len(data):
        return 0
      with open(self.path + ".torn", "ab") as t:
        t.write(data[cut:] + b"\n")
      f.truncate(cut)
      f.flush()
      os.fsync(f.fileno())
      return len(data) - cut

  def _note(self, line: dict) -> None:
    conv = line.get("conversation")
    if not isinstance(conv, str):
      return
    entry = self.index.setdefault(conv, {"annotator": line.get("annotator"), "turns": 0,
                                         "transcript": ""})
    if isinstance(line.get("turn"), int) and line["turn"] > entry["turns"]:
      entry["turns"] = line["turn"]
      entry["transcript"] = picked_transcript(line)

  def turns(self, conversation: str) -> int:
    with self._lock:
      return self.index.get(conversation, {}).get("turns", 0)

  def history(self, conversation: str) -> str:
    with self._lock:
      return self.index.get(conversation, {}).get("transcript", "")

  def append(self, line: dict) -> None:
    """Appends one judgment (once per conversation turn) and syncs it to disk."""
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    with self._lock:
      if self.index.get(line["conversation"], {}).get("turns", 0) >= line["turn"]:
        raise Refused(409, "This turn is already recorded.")
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # other processes appending to the same file
        view = memoryview(data)
        while view:
          view = view[os.write(fd, view):]
        os.fsync(fd)
      finally:
        os.close(fd)  # closing releases the flock
      self._note(line)


def picked_transcript(line: dict) -> str:
  """The transcript the annotator continued: helpful keeps the pick as chosen, red_team
  stores the pick as rejected."""
  return line["chosen"] if line.get("task") == "helpful" else line["rejected"]


def read_lines(path: str) -> list[dict]:
  """Every JSON-object line of a comparisons file ([] when it does not exist)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for raw in f:
      try:
        obj = json.loads(raw)
      except ValueError:
        continue
      if isinstance(obj, dict):
        out.append(obj)
  return out


def task_for(task: str, started: int) -> str:
  """The task of an annotator's conversation number `started` (from 0)."""
  if task == "alternate":
    return TASKS[started % 2]
  return task


class Sessions:
  """Each annotator's state, `WORKDIR/sessions/<annotator>.json`:
  {"conversation", "task", "started" (conversations begun), "pending" (the pair shown and
  not yet judged, or null), "ended" (earlier conversation ids)}."""

  def __init__(self, workdir: str, task: str):
    if task not in TASK_CHOICES:
      raise UserError(f"--task={task}; use one of {', '.join(TASK_CHOICES)}")
    self.dir = os.path.join(workdir, SESSIONS)
    os.makedirs(self.dir, exist_ok=True)
    self.task = task
    self._locks: dict[str, threading.Lock] = {}
    self._guard = threading.Lock()

  def lock(self, annotator: str) -> threading.Lock:
    """One lock per annotator: their requests change their session one at a time."""
    with self._guard:
      return self._locks.setdefault(annotator, threading.Lock())

  def _path(self, annotator: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", annotator):
      raise ValueError(f"bad annotator id {annotator!r}")
    return os.path.join(self.dir, f"{annotator}.json")

  def get(self, annotator: str) -> dict:
    """The annotator's state; a first visit starts their first conversation."""
    path = self._path(annotator)
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    return self.start(annotator, {"started": 0, "ended": []})

  def start(self, annotator: str, state: dict) -> dict:
    """A new conversation for the annotator (the old one, if any, goes to `ended`)."""
    if state.get("conversation"):
      state["ended"] = state.get("ended", []) + [state["conversation"]]
    state.update(conversation="c_" + secrets.token_hex(8),
                 task=task_for(self.task, state.get("started", 0)),
                 started=state.get("started", 0) + 1, pending=None)
    self.save(annotator, state)
    return state

  def save(self, annotator: str, state: dict) -> None:
    files.write_text(self._path(annotator), json.dumps(state, ensure_ascii=False))
