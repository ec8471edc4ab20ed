"""`python -m hh_jax.feedback [serve|tokens|summary] --workdir=DIR ...` (docs/feedback.md).

  serve (the default)  --models=NAME=RUN[,NAME=RUN...] [--task=helpful|red_team|alternate]
                       [--rs_k=K --pm=PM_RUN] [--host=127.0.0.1 --port=8000]
                       [--annotators=N: make N tokens first if the run has none]
  tokens               --annotators=N: N more annotator links
  summary              counts and win rates with intervals [--unit=conversation|annotator]
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys

from hh_jax.errors import UserError

COMMANDS = ("serve", "tokens", "summary")
LOCK = ".feedback.lock"


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m hh_jax.feedback", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("command", nargs="?", default="serve", choices=COMMANDS)
  p.add_argument("--workdir", required=True, help="where comparisons.jsonl, tokens and sessions live")
  p.add_argument("--models", default="", help="NAME=RUN[,NAME=RUN...]: LM, distill or PPO runs")
  p.add_argument("--task", default="helpful", help="helpful | red_team | alternate")
  p.add_argument("--rs_k", type=int, default=0, help="> 1: one side is best-of-k by --pm")
  p.add_argument("--pm", default="", help="the PM run that picks best-of-k")
  p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--annotators", type=int, default=0, help="tokens to make")
  p.add_argument("--max_new_tokens", type=int, default=64)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--top_p", type=float, default=1.0)
  p.add_argument("--top_k", type=int, default=0)
  p.add_argument("--max_message_chars", type=int, default=2000)
  p.add_argument("--requests_per_minute", type=int, default=60, help="per annotator; 0: no cap")
  p.add_argument("--backend", default="", help="MODULE:FUNCTION making another backend (tests)")
  p.add_argument("--unit", default="conversation", help="summary: resampling unit")
  p.add_argument("--samples", type=int, default=1000, help="summary: bootstrap resamples")
  p.add_argument("--json", action="store_true", help="summary: print JSON")
  return p


def _local(workdir: str) -> str:
  if "://" in workdir:
    raise UserError(f"--workdir={workdir}: the feedback server writes a local directory; "
                    "copy comparisons.jsonl up to the bucket afterwards")
  return os.path.abspath(workdir)


def _print_links(new: dict, host: str, port: int) -> None:
  from hh_jax.feedback import tokens as tokens_lib  # pylint: disable=g-import-not-at-top
  shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
  for token, who in new.items():
    print(f"{who}: {tokens_lib.link(shown, port, token)}", flush=True)


def tokens_command(a) -> None:
  from hh_jax.feedback import tokens as tokens_lib  # pylint: disable=g-import-not-at-top
  workdir = _local(a.workdir)
  new = tokens_lib.add(workdir, a.annotators)
  print(f"{len(new)} new annotator links ({tokens_lib.path_of(workdir)}):")
  _print_links(new, a.host, a.port)


def summary_command(a) -> None:
  from hh_jax.feedback import store, summary  # pylint: disable=g-import-not-at-top
  path = os.path.join(_local(a.workdir), store.COMPARISONS)
  s = summary.summarize(path, a.unit, a.samples)
  print(json.dumps(s, indent=1) if a.json else summary.table(s))


def serve_command(a) -> None:
  from hh_jax.feedback import backends, server, store  # pylint: disable=g-import-not-at-top
  from hh_jax.feedback import tokens as tokens_lib  # pylint: disable=g-import-not-at-top
  workdir = _local(a.workdir)
  if a.task not in store.TASK_CHOICES:
    raise UserError(f"--task={a.task}; use one of {', '.join(store.TASK_CHOICES)}")
  if a.rs_k > 1 and not a.pm and not a.backend:
    raise UserError(f"--rs_k={a.rs_k} picks one side by a PM: pass --pm=PM_RUN too")
  if a.rs_k == 1 or a.rs_k < 0:
    raise UserError(f"--rs_k={a.rs_k}; use 0 (off) or k >= 2")
  if a.max_message_chars < 1:
    raise UserError(f"--max_message_chars={a.max_message_chars}; allow at least 1")
  models = backends.parse_models(a.models)
  os.makedirs(workdir, exist_ok=True)
  lock = open(os.path.join(workdir, LOCK), "w")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    raise UserError(f"another feedback server is serving {workdir}; stop it or pick another "
                    "--workdir") from None
  if a.annotators and not tokens_lib.load(workdir):
    print(f"{a.annotators} annotator links:")
    _print_links(tokens_lib.add(workdir, a.annotators), a.host, a.port)
  if not tokens_lib.load(workdir):
    raise UserError(f"{workdir} has no annotator tokens: make them with `python -m "
                    f"hh_jax.feedback tokens --workdir={a.workdir} --annotators=N` "
                    "(or pass --annotators=N)")
  options = dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
                 top_k=a.top_k, pm_run=a.pm)
  if a.backend:
    backend = backends.load_backend(a.backend, runs=models, **options)
  else:
    print(f"loading {', '.join(models)}" + (f" and the PM {a.pm}" if a.pm else ""), flush=True)
    backend = backends.SamplerBackend(models, **options)
    backend.warm_up(store.extend("", "Hello"))
  feedback = server.Feedback(workdir, backend, task=a.task, rs_k=a.rs_k,
                             max_message_chars=a.max_message_chars,
                             requests_per_minute=a.requests_per_minute)
  if feedback.comparisons.torn:
    print(f"moved a torn last line ({feedback.comparisons.torn} bytes, never acknowledged) to "
          f"{feedback.comparisons.path}.torn", flush=True)
  if a.host not in ("127.0.0.1", "localhost", "::1"):
    print(f"warning: serving on {a.host}, not only this machine; tokens travel in clear "
          "without HTTPS in front", file=sys.stderr, flush=True)
  import uvicorn  # pylint: disable=g-import-not-at-top
  config = uvicorn.Config(feedback.app, host=a.host, port=a.port, access_log=False,
                          log_level="warning")
  srv = uvicorn.Server(config)
  print(f"serving {len(feedback.comparisons.index)} earlier conversations' judgments; "
        f"task {a.task}; http://{a.host}:{a.port}/?token=... "
        f"(tokens in {tokens_lib.path_of(workdir)})", flush=True)
  srv.run()


def main(argv=None) -> None:
  a = parser().parse_args(argv)
  try:
    {"serve": serve_command, "tokens": tokens_command, "summary": summary_command}[a.command](a)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
