"""Every file a run reads or writes beside its checkpoints, at a local or a gs:// path.

A pod job's workdir must be one that all its workers see, i.e. a bucket, so nothing in a
stage may assume a local disk: no `os.path.abspath` (it turns `gs://b/run` into
`<cwd>/gs:/b/run`), no `open`. Stages go through here instead: local paths keep plain
os/open semantics; remote ones (anything with `://`) go through etils.epath, which reads
gs:// with gcsfs and so follows `STORAGE_EMULATOR_HOST`. etils is imported only for remote
paths. Orbax gets its directory from `orbax_dir`.

Object stores have no append and no directories: `Appender` rewrites the whole object
(small JSONL files only), `makedirs` is a no-op there, and `upload_dir` copies a local
directory up for writers (TensorBoard) that only write local files.
"""
from __future__ import annotations

import io
import json
import os
import threading


def is_remote(path: str) -> bool:
  return "://" in str(path)


def _epath(path: str):
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(str(path))


def abspath(path: str) -> str:
  """os.path.abspath for local paths; a URL is already absolute and is left as it is."""
  path = str(path)
  return path.rstrip("/") if is_remote(path) else os.path.abspath(path)


def join(path: str, *parts: str) -> str:
  """`/`-joined, for a URL as for a local path (os.path.join would do the same on POSIX)."""
  return os.path.join(str(path), *parts)


def orbax_dir(path: str):
  """The directory argument for orbax: an epath.Path, which orbax opens on gs:// too."""
  return _epath(abspath(path))


def exists(path: str) -> bool:
  return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
  """Names in a directory ([] when it does not exist)."""
  if is_remote(path):
    p = _epath(path)
    return sorted(c.name for c in p.iterdir()) if p.exists() else []
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def makedirs(path: str) -> None:
  if not path:
    return  # a bare file name's directory is the cwd
  if is_remote(path):
    _epath(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  if is_remote(path):
    _epath(path).unlink()
  else:
    os.remove(path)


def read_bytes(path: str) -> bytes:
  if is_remote(path):
    return _epath(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode()


def read_json(path: str):
  return json.loads(read_text(path))


def write_bytes(path: str, data: bytes) -> None:
  """Writes a local or gs:// file, creating its directory; never leaves a partial file.

  A local file is written beside its final name (`.NAME.tmp.PID.THREAD`), flushed to disk and
  renamed over it, so a kill or a full disk mid-write leaves the old file or none, never a
  truncated config.json or tokenizer.model that the next stage would trip on. A GCS
  object appears whole when its upload completes, so remote writes are atomic already.
  """
  path = str(path)
  makedirs(os.path.dirname(path))
  if is_remote(path):
    _epath(path).write_bytes(data)
    return
  tmp = os.path.join(os.path.dirname(path),  # per process and thread: concurrent writers
                     f".{os.path.basename(path)}.tmp.{os.getpid()}.{threading.get_ident()}")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def write_json(path: str, obj, **kwargs) -> None:
  kwargs.setdefault("indent", 2)
  kwargs.setdefault("sort_keys", True)
  write_text(path, json.dumps(obj, **kwargs))


def save_figure(fig, path: str, **kwargs) -> None:
  """matplotlib's savefig through here, so a plot lands in a gs:// workdir too."""
  buf = io.BytesIO()
  fig.savefig(buf, format=os.path.splitext(str(path))[1].lstrip(".") or "png", **kwargs)
  write_bytes(path, buf.getvalue())


class Appender:
  """Appends text to a file; on an object store, by rewriting the whole object each time.

  GCS objects cannot be appended to, so a remote file's text is read once (a resumed run
  keeps its earlier lines) and held in memory, and every `write` uploads all of it. That
  is quadratic in the file's size, which is fine for what uses it (metrics.jsonl, a few
  thousand short lines), and after each `write` the object holds every line so far.
  """

  def __init__(self, path: str):
    self.path = str(path)
    self._text: str | None = None

  def write(self, text: str) -> None:
    if not is_remote(self.path):
      makedirs(os.path.dirname(self.path))
      with open(self.path, "a") as f:
        f.write(text)
      return
    if self._text is None:
      self._text = read_text(self.path) if exists(self.path) else ""
    self._text += text
    write_text(self.path, self._text)


def append_text(path: str, text: str) -> None:
  """One append (a remote file is read and rewritten: for occasional writes only)."""
  Appender(path).write(text)


def upload_dir(local_dir: str, dest: str) -> None:
  """Copies every file under `local_dir` to the same relative path under `dest`."""
  for root, _, names in os.walk(local_dir):
    for name in names:
      src = os.path.join(root, name)
      rel = os.path.relpath(src, local_dir)
      with open(src, "rb") as f:
        write_bytes(join(dest, rel), f.read())
