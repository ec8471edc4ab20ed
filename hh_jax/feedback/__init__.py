"""The human-feedback interface: annotators chat with deployed models and judge pairs of replies.

As the paper's crowdworkers did, an annotator (holding a token link) writes a message, reads
two replies streamed side by side from two models (which model is A is drawn per turn and
never shown), and picks one with a strength. The helpful task keeps the more helpful reply;
the red-team task steers towards harm and picks the more harmful one. Each judgment is one
line of `WORKDIR/comparisons.jsonl` in the hh-rlhf format (chosen = the better reply, so for
red-team the one *not* picked) plus metadata, which the PM stage and `online.human_files`
read as they read the published files.

Modules, one job each:
  tokens.py   annotator tokens (`WORKDIR/annotators.json`), made by a command
  store.py    the comparisons file (one atomic line per judgment) and each annotator's
              session (current conversation, the pair awaiting judgment)
  backends.py who writes the replies: project models through `load_lm` + `Sampler.stream`,
              best-of-k by a PM; the pairing of models per turn
  server.py   the FastAPI app: token check, caps, the streamed turn, judgments
  page.html   the page (plain HTML/JS; every text goes in through textContent)
  summary.py  counts and win rates with intervals over conversations
  __main__.py `python -m hh_jax.feedback [serve|tokens|summary]` (docs/feedback.md)
"""
