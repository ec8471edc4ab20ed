"""Line-level reading shared by the data readers, for dumps that are not clean.

Real dumps arrive cut short (an interrupted download), with a line in another encoding, a
record of the wrong shape or binary junk spliced in. One bad line must not cost the run
(or a traceback), and a file that is mostly bad must not quietly train on what is left.
So every reader here goes through `lines`, which:

* reads plain or `.gz` files in chunks (gzip by `zlib` directly, so a truncated or
  damaged stream keeps every line decompressed before the damage, and says where);
* never holds more than `max_line_bytes` of one line (an absurdly long line is skipped);
* records each skipped line in a `Skips` as `file:line: reason`.

`Skips.finish()` then raises one `UserError` line naming the file, the count and the first
reason when more than `max_bad_share` of the file's records were bad, and otherwise prints
one warning line to stderr if anything was skipped, so nothing is dropped silently.
"""
from __future__ import annotations

import json
import re
import sys
import zlib
from typing import Iterator

from hh_jax.errors import UserError

DEFAULT_MAX_BAD_SHARE = 0.01
MAX_LINE_BYTES = 1 << 24  # 16 MiB: far above any real record, far below the host's memory
_CHUNK = 1 << 20  # bytes read (and at most decompressed) per step
_DECIMAL = re.compile(r"[+-]?[0-9]{1,18}")


class Skips:
  """The bad records of one file: `records` counts all non-blank lines, good and bad."""

  def __init__(self, path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE):
    self.path = path
    self.max_bad_share = max_bad_share
    self.records = 0
    self.reasons: list[str] = []
    self.truncated = ""  # "file:line: why", when the file ended early or was damaged

  def bad(self, lineno: int, reason: str) -> None:
    self.reasons.append(f"{self.path}:{lineno}: {reason}")

  def summary(self) -> str:
    """One line: what was skipped and the first reason ('' when the file was clean)."""
    parts = []
    if self.reasons:
      parts.append(f"skipped {len(self.reasons)} of {self.records} records "
                   f"(first: {self.reasons[0]})")
    if self.truncated:
      parts.append(f"damaged: {self.truncated}")
    return "; ".join(parts)

  def check(self, hint: str = "fix the file") -> None:
    """Raises one line when more than `max_bad_share` of the records were bad."""
    bad = len(self.reasons)
    # bad / records, not share * records: the quotient rounds to the same float as the share
    # written out (29 of 100 is 0.29), the product need not (0.29 * 100 = 28.999999999999996).
    if bad and bad / max(self.records, 1) > self.max_bad_share:
      raise UserError(f"{self.path}: {bad} of {self.records} records malformed, more than "
                      f"max_bad_share={self.max_bad_share:g} (first: {self.reasons[0]}"
                      + (f"; damaged: {self.truncated}" if self.truncated else "")
                      + f"); {hint} or raise max_bad_share")

  def finish(self, hint: str = "fix the file") -> None:
    """`check`, then one warning line on stderr if anything was skipped or cut off."""
    self.check(hint)
    if self.summary():
      print(f"warning: {self.path}: {self.summary()}", file=sys.stderr, flush=True)


class _Damaged(Exception):
  """The compressed stream ended early or failed its checks; the message says how."""


def _plain_chunks(f) -> Iterator[bytes]:
  while chunk := f.read(_CHUNK):
    yield chunk


def _gzip_chunks(f) -> Iterator[bytes]:
  """Decompressed chunks of every gzip member; _Damaged when the stream breaks off."""
  d, fed = zlib.decompressobj(wbits=31), False
  while raw := f.read(_CHUNK):
    while True:
      if not fed and not raw.strip(b"\0"):
        break  # zero padding after a member, as some gzip tools write it
      fed = True
      saved = d.copy()
      try:
        out = d.decompress(raw, _CHUNK)
      except zlib.error as e:
        yield from _up_to_damage(saved, raw)  # what this chunk held before the damage
        raise _Damaged(f"damaged gzip data ({e})") from None
      if out:
        yield out
      if d.eof:  # the next member, if any, starts in the unused bytes
        raw, d, fed = d.unused_data, zlib.decompressobj(wbits=31), False
        if not raw:
          break
      else:
        raw = d.unconsumed_tail
        if not raw and len(out) < _CHUNK:
          break  # this input is used up and no output is left pending
  if fed:
    raise _Damaged("the gzip stream ends before its end marker (a truncated file)")


def _up_to_damage(d, raw: bytes, step: int = 256) -> Iterator[bytes]:
  """Output of feeding `raw` to `d` a little at a time, until zlib finds the damage.

  The piece zlib fails on is fed again a byte at a time, so what it decompresses to before
  the bad byte (up to a few hundred lines of well-compressed text) is kept too.
  """
  for i in range(0, len(raw), step):
    saved = d.copy() if step > 1 else None
    try:
      out = d.decompress(raw[i:i + step])
    except zlib.error:
      if saved is not None:
        yield from _up_to_damage(saved, raw[i:i + step], 1)
      return
    if out:
      yield out


def lines(path: str, skips: Skips, max_line_bytes: int = MAX_LINE_BYTES,
          keep_blank: bool = False) -> Iterator[tuple[int, bytes]]:
  """(line number from 1, line without its newline) for each line of a plain or .gz file.

  Blank lines are left out unless `keep_blank`; every other line counts in
  `skips.records`. A line longer than `max_line_bytes` is recorded in `skips` and not
  yielded. A damaged .gz keeps the complete lines before the damage and records where it
  stopped in `skips.truncated`; one that yields nothing at all is a UserError.
  """
  gz = path.endswith(".gz")
  try:
    f = open(path, "rb")  # pylint: disable=consider-using-with
  except OSError as e:
    raise UserError(f"{path}: cannot open ({e.strerror or e}); check the path") from None
  pending, overflow, lineno, produced = bytearray(), False, 0, False
  with f:
    try:
      for chunk in (_gzip_chunks(f) if gz else _plain_chunks(f)):
        produced = True
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
          piece, start = chunk[start:nl], nl + 1
          lineno += 1
          too_long = overflow or len(pending) + len(piece) > max_line_bytes
          line = b"" if too_long else bytes(pending + piece)
          pending.clear()
          overflow = False
          if too_long:
            skips.records += 1
            skips.bad(lineno, f"line longer than {max_line_bytes} bytes")
          elif keep_blank or line.strip():
            skips.records += 1 if line.strip() else 0
            yield lineno, line
        if not overflow:
          pending += chunk[start:]
          if len(pending) > max_line_bytes:
            overflow = True
            pending.clear()
    except _Damaged as e:
      if not produced:
        raise UserError(f"{path}: cannot read ({e}); re-download the file") from None
      skips.truncated = (f"{path}:{lineno + 1}: {e}; kept the {lineno} complete lines "
                         "before it")
      return
    except OSError as e:
      raise UserError(f"{path}: cannot read ({e}); re-download the file") from None
  if overflow or pending:  # a last line without a newline
    lineno += 1
    if overflow:
      skips.records += 1
      skips.bad(lineno, f"line longer than {max_line_bytes} bytes")
    elif keep_blank or pending.strip():
      skips.records += 1 if pending.strip() else 0
      yield lineno, bytes(pending)


def text(line: bytes | str) -> str:
  """The line as UTF-8 text; ValueError(reason) for invalid UTF-8 or binary (NUL) bytes."""
  try:
    out = line if isinstance(line, str) else line.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})") from None
  if "\0" in out:
    raise ValueError(f"binary data (a NUL byte at column {out.index(chr(0)) + 1})")
  return out


def json_object(line: bytes | str) -> dict:
  """The line as a JSON object; ValueError(reason) for anything else."""
  try:
    obj = json.loads(text(line))
  except json.JSONDecodeError as e:
    raise ValueError(f"not JSON ({e.msg} at column {e.colno})") from None
  except RecursionError:
    raise ValueError("not JSON we can read (nested too deeply)") from None
  except ValueError as e:  # text()'s reason, or an integer too long to convert
    raise ValueError(str(e).splitlines()[0] if str(e) else "not JSON") from None
  if not isinstance(obj, dict):
    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
  return obj


def string(obj: dict, key: str, optional: bool = False) -> str:
  """obj[key] when it is a string ('' for a missing or null optional one), else ValueError."""
  v = obj.get(key)
  if v is None and optional:
    return ""
  if key not in obj:
    raise ValueError(f"missing key {key!r}")
  if not isinstance(v, str):
    raise ValueError(f"{key!r} is {_kind(v)}, not a string")
  return v


def integer(obj: dict, key: str) -> int:
  """obj[key] as an int (an integral float or a decimal string also do), else ValueError."""
  if key not in obj:
    raise ValueError(f"missing key {key!r}")
  v = obj[key]
  if isinstance(v, bool) or not isinstance(v, (int, float, str)):
    raise ValueError(f"{key!r} is {_kind(v)}, not an integer")
  if isinstance(v, float) and v.is_integer():
    return int(v)
  if isinstance(v, str) and _DECIMAL.fullmatch(v.strip()):
    return int(v)
  if isinstance(v, int):
    return v
  raise ValueError(f"{key!r} is {v!r:.40}, not an integer")


def _kind(v) -> str:
  return "null" if v is None else type(v).__name__
