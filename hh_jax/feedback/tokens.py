"""Annotator tokens: `WORKDIR/annotators.json` maps each secret token to an annotator id.

A token is the annotator's whole credential (it rides in the link as `?token=...` and in
each request's `X-Token` header), so it is long and random (`secrets`), the file is readable
by its owner only, and what the comparisons record is the annotator id, never the token.
`add` appends new annotators to those a run already has, so a collection round can grow.
"""
from __future__ import annotations

import hmac
import json
import os
import re
import secrets

from hh_jax.errors import UserError

FILENAME = "annotators.json"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def path_of(workdir: str) -> str:
  return os.path.join(workdir, FILENAME)


def load(workdir: str) -> dict[str, str]:
  """{token: annotator id}; {} when the run has none yet."""
  path = path_of(workdir)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      data = json.load(f)
    tokens = {str(t): str(a) for t, a in data["tokens"].items()}
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise UserError(f"{path} is not a tokens file ({e}); remove it and make tokens again "
                    "with `python -m hh_jax.feedback tokens`") from None
  return tokens


def add(workdir: str, count: int) -> dict[str, str]:
  """Makes `count` new annotators (annotator_<n>, numbered after the existing ones) and
  writes the file (mode 0600, whole, then renamed); returns {token: id} of the new ones."""
  if count < 1:
    raise UserError(f"--annotators={count}; make at least 1 token")
  os.makedirs(workdir, exist_ok=True)
  tokens = load(workdir)
  start = len(tokens)
  new = {secrets.token_urlsafe(24): f"annotator_{start + i + 1}" for i in range(count)}
  tokens.update(new)
  path = path_of(workdir)
  tmp = path + ".tmp"
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
  with os.fdopen(fd, "w") as f:
    json.dump({"tokens": tokens}, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return new


def annotator_of(tokens: dict[str, str], token: str | None) -> str | None:
  """The annotator a presented token belongs to, or None; compared in constant time."""
  if not token or not _TOKEN.match(token):
    return None
  found = None
  for known, annotator in tokens.items():
    if hmac.compare_digest(known.encode(), token.encode()):
      found = annotator
  return found


def link(host: str, port: int, token: str) -> str:
  return f"http://{host}:{port}/?token={token}"
