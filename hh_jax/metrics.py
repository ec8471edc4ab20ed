"""Run metrics: one line of JSON per logged step, TensorBoard events, and a progress bar.

Only process 0 writes; the other processes of a multi-host run get no-op writers, so a pod
job produces one metrics.jsonl, not one per host. A gs:// workdir works like a local one
(hh_jax/files.py): metrics.jsonl is rewritten whole at each write (objects cannot be
appended to), and TensorBoard, which tensorboardX writes to local files only, writes to a
local temp dir that is copied to `<workdir>/tensorboard/` every UPLOAD_EVERY_S and on close.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from hh_jax import files

# How often a remote workdir gets the TensorBoard events written so far.
UPLOAD_EVERY_S = 60.0


def _scalar(v):
  v = np.asarray(v)
  return float(v) if v.size == 1 else None


class MetricWriter:
  """Appends to `<workdir>/metrics.jsonl` and writes TensorBoard events beside it."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = files.join(workdir, "metrics.jsonl")
    self._tb = None
    self._tb_dest = files.join(workdir, "tensorboard")
    self._tb_local = None  # the local temp dir standing in for a remote tensorboard/
    self._uploaded_at = time.monotonic()
    self._rows = files.Appender(self.path)
    if self.enabled:
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes
      if files.is_remote(workdir):
        self._tb_local = tempfile.mkdtemp(prefix="hh_jax_tb_")
      self._tb = SummaryWriter(self._tb_local or self._tb_dest)

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      s = _scalar(v)
      if s is not None and math.isfinite(s):
        row[k] = s
        self._tb.add_scalar(k, s, int(step))
      elif s is not None:
        row[k] = str(s)  # nan/inf kept visible, JSON-safe
    self._rows.write(json.dumps(row) + "\n")
    if self._tb_local and time.monotonic() - self._uploaded_at > UPLOAD_EVERY_S:
      self._upload_tb()

  def rewind(self, step: int) -> None:
    """Drops the rows after `step` (and a torn last line): a resumed run writes them again.

    A run killed between logging step N and saving its checkpoint repeats step N on the
    rerun; without this, metrics.jsonl would hold that step twice.
    """
    if not self.enabled or not files.exists(self.path):
      return
    keep = []
    for line in files.read_text(self.path).splitlines(keepends=True):
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if line.endswith("\n") and int(row.get("step", 0)) <= step:
        keep.append(line)
    files.write_text(self.path, "".join(keep))
    self._rows = files.Appender(self.path)

  def _upload_tb(self) -> None:
    self._tb.flush()
    files.upload_dir(self._tb_local, self._tb_dest)
    self._uploaded_at = time.monotonic()

  def close(self) -> None:
    if self._tb is None:
      return
    self._tb.close()
    if self._tb_local:
      files.upload_dir(self._tb_local, self._tb_dest)
      shutil.rmtree(self._tb_local, ignore_errors=True)
      self._tb_local = None


def read_metrics(workdir: str) -> list[dict]:
  path = files.join(workdir, "metrics.jsonl")
  if not files.exists(path):
    return []
  return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


class Progress:
  """A tqdm bar over steps with loss and tokens/s; silent on processes other than 0."""

  def __init__(self, start: int, total: int, desc: str, tokens_per_step: int = 0):
    self.tokens_per_step = tokens_per_step
    self._bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True,
                     disable=jax.process_index() != 0, file=sys.stderr, mininterval=1.0)
    self._t = time.perf_counter()
    self._since = 0

  def update(self, n: int = 1, **postfix) -> None:
    self._since += n
    self._bar.update(n)
    if postfix:
      now = time.perf_counter()
      rate = self.tokens_per_step * self._since / max(now - self._t, 1e-9)
      self._t, self._since = now, 0
      shown = {k: f"{float(v):.4g}" for k, v in postfix.items()}
      if self.tokens_per_step:
        shown["tok/s"] = f"{rate:,.0f}"
      self._bar.set_postfix(shown, refresh=False)

  def close(self) -> None:
    self._bar.close()
