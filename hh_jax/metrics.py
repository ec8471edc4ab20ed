"""Run metrics: one line of JSON per logged step, TensorBoard events, and a progress bar.

Only process 0 writes; the other processes of a multi-host run get no-op writers, so a pod
job produces one metrics.jsonl, not one per host.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm


def _scalar(v):
  v = np.asarray(v)
  return float(v) if v.size == 1 else None


class MetricWriter:
  """Appends to `<workdir>/metrics.jsonl` and writes TensorBoard events beside it."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

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
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
