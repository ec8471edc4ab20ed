"""Talk to a policy: `python -m hh_jax.chat --workdir=DIR [--temperature=0.7 --top_p=0.95]`.

Loads the run's params and tokenizer (an LM, distilled or PPO workdir), keeps the whole
Human/Assistant history as the context of each reply, and prints the reply token by token
as it is sampled. `/reset` forgets the history; an empty line or end of input quits.
"""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, Sequence, TextIO

import jax
from absl import app, flags, logging

from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.errors import UserError
from hh_jax.model import params as params_lib, sampling

_FLAGS = {}


def _define_flags():
  """Defined when chat runs, not on import, so a process that also imports hh_jax.main
  (which owns --workdir there) can use `session` and `reply`."""
  _FLAGS.update(
      workdir=flags.DEFINE_string("workdir", None, "Run directory with checkpoints/ and tokenizer.model"),
      temperature=flags.DEFINE_float("temperature", 0.7, "0 for greedy"),
      top_p=flags.DEFINE_float("top_p", 0.95, "nucleus sampling mass"),
      top_k=flags.DEFINE_integer("top_k", 0, "0 for off"),
      max_new_tokens=flags.DEFINE_integer("max_new_tokens", 128, "longest reply in tokens"),
      seed=flags.DEFINE_integer("seed", 0, "sampling seed"))


def text_deltas(token_ids: Iterable[int], tok, stop_ids: Sequence[int]) -> Iterator[str]:
  """The pieces of a reply's text as its tokens arrive, up to (not including) a stop id.

  A half-decoded UTF-8 character (byte pieces decode to U+FFFD until complete) is held
  back until it is whole; joined, the pieces are the reply's text.
  """
  ids, shown = [], ""
  for t in token_ids:
    if t in stop_ids:
      break
    ids.append(t)
    text = tok.decode(ids)
    if not text.endswith("\ufffd") and text.startswith(shown) and len(text) > len(shown):
      yield text[len(shown):]
      shown = text
  text = tok.decode(ids)
  if text.startswith(shown) and len(text) > len(shown):
    yield text[len(shown):]


def reply(sampler: sampling.Sampler, tok, history: str, key, settings: sampling.Settings,
          out: TextIO | None = None) -> str:
  """Samples the Assistant's next turn after `history` (which ends with the Assistant
  marker), writing its text to `out` as it grows; returns the text without the stop token."""
  pieces = []
  for piece in text_deltas(sampler.stream(tok.encode(history), key, settings), tok,
                           settings.stop_ids):
    pieces.append(piece)
    if out is not None:
      out.write(piece)
      out.flush()
  if out is not None:
    out.write("\n")
    out.flush()
  return "".join(pieces)


def session(sampler, tok, lines: Iterable[str], settings: sampling.Settings, seed: int = 0,
            out: TextIO | None = None) -> str:
  """Runs a conversation over `lines` of Human input; returns the final transcript."""
  history = ""
  key = jax.random.PRNGKey(seed)
  for turn, line in enumerate(lines):
    line = line.strip()
    if not line:
      break
    if line == "/reset":
      history = ""
      continue
    history += f"{HUMAN} {line}{ASSISTANT}"
    if out is not None:
      out.write("Assistant:")
    history += reply(sampler, tok, history, jax.random.fold_in(key, turn), settings, out)
  return history


def _lines(prompt: str):
  while True:
    try:
      yield input(prompt)
    except EOFError:
      return


def _main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; chat takes only --flags")
  if _FLAGS['workdir'].value is None:
    raise UserError("--workdir is required: pass the run to talk to, --workdir=DIR")
  model_cfg, params, tok = params_lib.load_lm(_FLAGS['workdir'].value)
  settings = sampling.Settings(max_new_tokens=_FLAGS['max_new_tokens'].value, temperature=_FLAGS['temperature'].value,
                               top_k=_FLAGS['top_k'].value, top_p=_FLAGS['top_p'].value,
                               stop_ids=sampling.stop_ids_for(tok), pad_id=tok.pad_id)
  settings.check()
  sampler = sampling.Sampler(model_cfg, params)
  print("Type a message (/reset to start over, empty line to quit).", file=sys.stderr)
  session(sampler, tok, _lines("Human: "), settings, _FLAGS['seed'].value, sys.stdout)


def main():
  logging.set_verbosity(logging.WARNING)
  _define_flags()
  try:
    app.run(_main)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
