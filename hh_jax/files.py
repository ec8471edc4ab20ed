"""Reading and writing a run's small files where the path may be local or gs://.

Orbax writes checkpoints to either; the JSON and text files around them (a sweep's
manifest and report, a run's config.json) go through here so a gs:// workdir is read and
written the same way. etils.epath (an orbax dependency) is imported only for remote paths.
"""
import json
import os


def is_remote(path: str) -> bool:
  return "://" in str(path)


def exists(path: str) -> bool:
  if is_remote(path):
    from etils import epath  # pylint: disable=g-import-not-at-top
    return epath.Path(path).exists()
  return os.path.exists(path)


def read_json(path: str):
  if is_remote(path):
    from etils import epath  # pylint: disable=g-import-not-at-top
    return json.loads(epath.Path(path).read_text())
  with open(path) as f:
    return json.load(f)


def write_bytes(path: str, data: bytes) -> None:
  """Writes a local or gs:// file, creating its directory."""
  if is_remote(path):
    from etils import epath  # pylint: disable=g-import-not-at-top
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    epath.Path(path).write_bytes(data)
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())
