"""What every stage's run does around its step: checks, mesh, state, resume, the loop.

Every stage's `run(config, workdir)` reads the same way, top to bottom:

  stage = runner.open_stage(config, workdir)   # workdir checked, mesh built: one-line errors
  ... stage-specific checks and data ...
  stage.write_config()                          # once the config is final
  state, shardings, resumed = stage.init_or_restore(model, tx, example, batches=...)
  ... jit the step ...
  state = stage.train_loop(state=..., step_fn=..., batches=..., ...)
  stage.save_json("<stage>_eval.json", result); stage.close()

A stage module (lm, pm, ...) supplies a model, a pure `train_step(state, batch)` and a data
iterator. The stage's files are written in few places (`write_config`, `save_json`,
`save_tokenizer`, the checkpointer and the metric writer), so where they go is one decision.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np

from hh_jax import checkpoint as ckpt_lib
from hh_jax import files
from hh_jax import metrics as metrics_lib
from hh_jax import preemption
from hh_jax.data import tokenizer as tok_lib
from hh_jax.errors import Preempted, UserError
from hh_jax.model import transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.train import state as state_lib


def validate_model(cfg) -> None:
  transformer.compute_dtype(cfg.dtype)
  if cfg.remat_policy not in transformer.REMAT_POLICIES:
    raise UserError(f"model.remat_policy={cfg.remat_policy!r} is unknown; "
                    f"use one of {', '.join(transformer.REMAT_POLICIES)}")
  if cfg.pos_embedding not in ("learned", "rotary"):
    raise UserError(f"model.pos_embedding={cfg.pos_embedding!r}; use 'learned' or 'rotary'")
  if cfg.n_heads * cfg.head_dim <= 0 or cfg.d_model % cfg.n_heads:
    raise UserError(f"model.d_model={cfg.d_model} is not divisible by model.n_heads={cfg.n_heads}")
  bad = [h for h in cfg.heads if h not in ("lm", "scalar")]
  if bad or not cfg.heads:
    raise UserError(f"model.heads={tuple(cfg.heads)}; use 'lm' and/or 'scalar'")
  try:  # norm, mlp, n_kv_heads, attn_bias, rope fields (transformer.ARCH_DEFAULTS)
    transformer.check_arch(cfg)
  except ValueError as e:
    raise UserError(str(e)) from None


def prepare_workdir(workdir: str) -> str:
  """The absolute workdir (a gs:// URL as given), after writing and deleting a probe file.

  The probe turns a missing bucket, missing credentials or a read-only disk into one line
  before anything compiles.
  """
  workdir = files.abspath(workdir)
  try:
    files.makedirs(workdir)
    probe = files.join(workdir, f".write_test_{os.getpid()}")
    files.write_text(probe, "ok")
    files.remove(probe)
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir} ({e.strerror or ckpt_lib.first_line(e)}); "
                    "pass a --workdir you can write to") from None
  except Exception as e:  # pylint: disable=broad-except  # gcsfs/auth errors have many types
    if not files.is_remote(workdir):
      raise
    raise UserError(f"cannot write to workdir {workdir} ({ckpt_lib.first_line(e)}); check the "
                    "bucket and your credentials (or STORAGE_EMULATOR_HOST)") from None
  return workdir


def make_mesh(config):
  mesh = mesh_lib.make_mesh(config.mesh)
  div = mesh_lib.batch_size_divisor(mesh)
  batch = config.data.batch_size
  accum = config.optim.get("grad_accum_steps", 1)
  if batch % div:
    raise UserError(f"data.batch_size={batch} is not divisible by the data×fsdp mesh axes "
                    f"({div} = {dict(mesh.shape)}); use a multiple of {div}")
  if batch % (div * accum):
    raise UserError(f"data.batch_size={batch} must split into optim.grad_accum_steps={accum} "
                    f"micro-batches over {div} data shards; use a multiple of {div * accum}")
  return mesh


def write_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    files.write_text(files.join(workdir, "config.json"),
                     config.to_json_best_effort(indent=2, sort_keys=True))


def _overwrite_allowed(config) -> bool:
  train = config.get("train")
  return bool(train is not None and train.get("overwrite_workdir", False))


def check_workdir(config, workdir: str) -> None:
  """One line when `workdir` already holds a run of another stage or another model.

  Rerunning the same stage and model on its workdir resumes it; anything else there would
  mix two runs' checkpoints and metrics (or fail to restore much later), so it is refused
  unless `train.overwrite_workdir=True`.
  """
  path = files.join(workdir, "config.json")
  if _overwrite_allowed(config) or not files.exists(path):
    return
  try:
    old = files.read_json(path)
  except ValueError:
    return  # an unreadable config.json is rewritten below; nothing to compare it with
  new = json.loads(config.to_json_best_effort())
  diff = [k for k in ("stage", "model") if k in old and k in new and old[k] != new[k]]
  if not diff:
    return
  if diff[0] == "stage":
    what = f"a {old['stage']!r} run, not {new['stage']!r}"
  else:
    om, nm = old["model"], new["model"]
    keys = sorted(k for k in set(om) | set(nm) if om.get(k) != nm.get(k))[:3]
    there = ", ".join(f"model.{k}={om.get(k)!r}" for k in keys)
    here = ", ".join(repr(nm.get(k)) for k in keys)
    what = f"a run of another model ({there} there, {here} here)"
  raise UserError(f"workdir {workdir} holds {what}; pass a new --workdir, or "
                  "--config.train.overwrite_workdir=True to reuse it")


def compile_step(step_fn: Callable, state_shardings, mesh, batch_ndims: dict[str, int]):
  """jit with explicit shardings: state in place (donated), batch over (data, fsdp)."""
  batch_sh = {k: mesh_lib.batch_sharding(mesh, nd) for k, nd in batch_ndims.items()}
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sh),
                 out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
                 donate_argnums=(0,)), batch_sh


def to_global(batch: dict, shardings: dict) -> dict:
  """One global jax.Array per field from this process's rows."""
  return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
          for k, v in batch.items() if k in shardings}


def train_loop(*, state, step_fn, batches: Iterator, batch_shardings: dict, total_steps: int,
               checkpointer, writer, log_every: int, desc: str, tokens_per_step: int,
               flops_per_step: float = 0.0, eval_fn: Callable | None = None,
               eval_every: int = 0, stop_at: int = 0, max_nonfinite: int = 10,
               preempt_sync_every: int = 10):
  """Runs the compiled step to `total_steps`, logging and checkpointing; returns the state.

  `stop_at` ends this invocation early (with a checkpoint) as a preemption would, leaving the
  schedule defined by `total_steps`; rerunning resumes from there. SIGTERM (see
  `hh_jax.preemption`) ends it after the current step with a checkpoint and metrics
  written, raising `Preempted`. The step reports `nonfinite_steps` (1 when it skipped a
  non-finite update); more than `max_nonfinite` in a row raise a one-line `UserError`
  naming the step and the last checkpoint saved before them. The flags are read at log
  and checkpoint steps only, so the check adds no host sync.
  """
  start = int(jax.device_get(state.step))
  last = min(total_steps, stop_at) if stop_at else total_steps
  progress = metrics_lib.Progress(start, total_steps, desc, tokens_per_step)
  pending, t0 = [], time.perf_counter()
  guard = _NonfiniteGuard(max_nonfinite, checkpointer)
  try:
    for step in range(start + 1, last + 1):
      batch = to_global(next(batches), batch_shardings)
      state, metrics = step_fn(state, batch)
      pending.append(metrics)
      save = checkpointer.should_save(step, last)
      stop = preemption.should_stop(step, preempt_sync_every, force_sync=save)
      if step % log_every == 0 or step == last or stop:
        host = jax.device_get(pending)  # one sync per log interval, not per step
        dt = time.perf_counter() - t0
        row = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
        if "nonfinite_steps" in row:
          row["nonfinite_steps"] = float(sum(m["nonfinite_steps"] for m in host))
        row["tokens_per_s"] = tokens_per_step * len(host) / dt
        row["step_time_s"] = dt / len(host)
        if flops_per_step:
          row["model_tflops_per_s"] = flops_per_step * len(host) / dt / 1e12
        writer.write(step, row)
        progress.update(len(host), loss=row["loss"])
        guard.check(step - len(host) + 1, host)
        pending, t0 = [], time.perf_counter()
      elif save:
        guard.check(step - len(pending) + 1, jax.device_get(pending))
      if eval_fn is not None and eval_every and (step % eval_every == 0 or step == total_steps):
        writer.write(step, eval_fn(state))  # before a stop too: a resume never evals this step
      if stop:
        checkpointer.save(step, state, getattr(batches, "get_state", dict)())
        checkpointer.wait()
        raise Preempted(f"SIGTERM after step {step} of {total_steps}; checkpoint "
                        f"{checkpointer.directory}/{step} saved; rerun the same command to continue")
      if save:
        checkpointer.save(step, state, getattr(batches, "get_state", dict)())
        guard.saved(step)
  finally:
    progress.close()  # also before an error line, so the bar's redraw never follows it
  checkpointer.wait()
  return state


class _NonfiniteGuard:
  """Counts skipped (non-finite) steps in a row over the host copies of the step metrics."""

  def __init__(self, limit: int, checkpointer):
    self.limit, self.checkpointer = int(limit), checkpointer
    self.run, self.run_start = 0, None
    self.last_saved = checkpointer.latest_step()
    self.good_ckpt = self.last_saved
    self._checked = 0  # steps already counted (a save step's flags are read twice)

  def check(self, first_step: int, host: list) -> None:
    for i, m in enumerate(host):
      step = first_step + i
      if step <= self._checked:
        continue
      self._checked = step
      if float(m.get("nonfinite_steps", 0.0)) > 0:
        if not self.run:
          self.run_start, self.good_ckpt = step, self.last_saved
        self.run += 1
      else:
        self.run = 0
      if self.limit >= 0 and self.run > self.limit:
        where = (f"{self.checkpointer.directory}/{self.good_ckpt}" if self.good_ckpt is not None
                 else "none (no checkpoint was saved before it)")
        raise UserError(f"step {step}: {self.run} non-finite losses or gradients in a row (from "
                        f"step {self.run_start}; train.max_nonfinite={self.limit}), updates "
                        f"skipped; last good checkpoint: {where}; lower optim.learning_rate "
                        "or check the data, then rerun")

  def saved(self, step: int) -> None:
    self.last_saved = step


def save_json(workdir: str, name: str, obj) -> None:
  if jax.process_index() == 0:
    files.write_json(files.join(workdir, name), obj)


@dataclasses.dataclass
class Stage:
  """A stage run's workdir, mesh, checkpointer and metric writer, opened once by `open_stage`.

  The checkpointer and the writer are made on first use, so a stage that fails its checks
  (or never trains) leaves no checkpoints/ or metrics behind; `close` closes what was opened.
  """
  config: Any
  workdir: str
  mesh: Any  # jax.sharding.Mesh, or None for a stage that builds none (pm_eval)
  _checkpointer: ckpt_lib.Checkpointer | None = None
  _writer: metrics_lib.MetricWriter | None = None

  @property
  def checkpointer(self) -> ckpt_lib.Checkpointer:
    """`<workdir>/checkpoints`, kept and saved as `config.train` says."""
    if self._checkpointer is None:
      t = self.config.train
      self._checkpointer = ckpt_lib.Checkpointer(files.join(self.workdir, "checkpoints"),
                                                 t.keep_checkpoints, t.ckpt_every,
                                                 t.async_checkpointing)
    return self._checkpointer

  @property
  def writer(self) -> metrics_lib.MetricWriter:
    if self._writer is None:
      self._writer = metrics_lib.MetricWriter(self.workdir)
    return self._writer

  @property
  def resuming(self) -> bool:
    """True when the workdir already holds a checkpoint of this run."""
    return self.checkpointer.latest_step() is not None

  def restore(self, abstract):
    """The newest readable checkpoint; metrics.jsonl loses the rows the rerun repeats."""
    state, data_state = self.checkpointer.restore(abstract)
    self.writer.rewind(int(jax.device_get(state.step)))
    return state, data_state

  def write_config(self) -> None:
    """config.json, after refusing a workdir that holds another stage's or model's run."""
    check_workdir(self.config, self.workdir)
    write_config(self.config, self.workdir)

  def save_json(self, name: str, obj) -> None:
    save_json(self.workdir, name, obj)

  def save_tokenizer(self, tok) -> None:
    """`<workdir>/tokenizer.model`, where every later stage looks for it (process 0 writes)."""
    if jax.process_index() == 0:
      tok.save(files.join(self.workdir, tok_lib.FILENAME))

  def init_or_restore(self, model, tx, example_tokens, *, batches=None, init_params=None):
    """Returns (state, shardings, resumed): the latest checkpoint, or a fresh state born sharded.

    On a resume the saved data position goes into `batches`. A fresh state starts from
    `init_params` when given (a params tree another run already holds in these shardings,
    e.g. distillation's teacher), else from the model's own init with `config.seed`.
    """
    abstract, shardings = state_lib.abstract_and_shardings(model, tx, example_tokens,
                                                           self.mesh)
    if self.resuming:
      state, data_state = self.restore(abstract)
      if data_state and batches is not None:
        batches.set_state(data_state)
      return state, shardings, True
    if init_params is None:
      state, _ = state_lib.create(model, tx, example_tokens, self.mesh, self.config.seed)
    else:
      state = state_lib.create_from_params(init_params, tx, shardings, self.mesh,
                                           self.config.seed)
    return state, shardings, False

  def train_loop(self, **kwargs):
    """`train_loop` with this stage's checkpointer, writer and `config.train` cadence."""
    t = self.config.train
    kwargs.setdefault("log_every", t.log_every)
    kwargs.setdefault("eval_every", t.eval_every)
    kwargs.setdefault("stop_at", t.get("stop_at_step", 0))
    kwargs.setdefault("max_nonfinite", t.get("max_nonfinite", 10))
    kwargs.setdefault("preempt_sync_every", t.get("preempt_sync_every", 10))
    try:
      return train_loop(checkpointer=self.checkpointer, writer=self.writer, **kwargs)
    except Preempted:
      self.close()  # metrics and TensorBoard flushed before the exit
      raise

  def close(self) -> None:
    preemption.uninstall()
    if self._checkpointer is not None:
      self._checkpointer.close()
    if self._writer is not None:
      self._writer.close()


def open_stage(config, workdir: str, mesh_fn: Callable | None = make_mesh) -> Stage:
  """The first line of every stage's run: a writable workdir and the checked mesh.

  `mesh_fn(config)` builds the mesh and checks the batch against it (`make_mesh` for the
  training stages); None for a stage without one.
  """
  workdir = prepare_workdir(workdir)
  preemption.install()  # SIGTERM from here on: finish the step, checkpoint, exit 75
  return Stage(config, workdir, mesh_fn(config) if mesh_fn is not None else None)


def init_params_from(state, init_workdir):
  """Overwrites the fresh params with the init workdir's; returns (state, fresh paths).

  The fresh (born-sharded) params are the target's abstract state: each restored leaf
  lands in the same shards.
  """
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state.params)
  ckpt_dir = files.join(init_workdir, "checkpoints")
  restored, missing = ckpt_lib.restore_params(ckpt_dir, abstract)
  return state.replace(params=ckpt_lib.merge_params(state.params, restored)), missing


__all__ = ["prepare_workdir", "make_mesh", "validate_model", "compile_step",
           "train_loop", "to_global", "write_config", "check_workdir", "save_json", "ckpt_lib",
           "Stage", "open_stage", "init_params_from"]
