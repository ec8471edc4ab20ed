"""SIGTERM and SIGKILL at seeded random steps of every training stage, then reruns.

For each of lm, pm, distill and ppo one uninterrupted run (the reference) and one chain,
run through `python -m hh_jax.main` as a scheduler would: SIGTERM at a random step (exit
75, the step checkpointed, nothing lost), rerun, SIGKILL at a later random step (at most
the steps since the last checkpoint lost), rerun to the end. The chain's whole metrics
sequence (row by row, no de-duplication) and its final params must equal the reference's.
`rs` killed between its parts and rerun writes the same files.

The reference runs beside the chain's first process, so the two cores are both busy.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import procs as procs_lib
from tests import rl_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
TIMING = ("tokens_per_s", "step_time_s", "model_tflops_per_s", "time/")
FAST = ["--config.train.ckpt_every=1", "--config.train.async_checkpointing=False",
        "--config.train.log_every=1"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
  """An LM run and a PM run on it, the sources the later stages start from."""
  # max_len 256: room for the HHH prompt (as in test_distill).
  return rl_runs.train_lm_and_pm(tmp_path_factory.mktemp("upstream"), max_len=256)


def _args(stage, up, work):
  tok = os.path.join(up["lm"], "tokenizer.model")
  per_stage = {
      "lm": ["--config=configs/lm.py:size=test,runlocal=True", "--config.train.total_steps=10",
             f"--config.data.tokenizer_path={tok}"],
      "pm": ["--config=configs/pm.py:size=test,runlocal=True", f"--config.init.workdir={up['lm']}",
             "--config.model.max_len=256", "--config.train.total_steps=8"],
      "distill": [f"--config=configs/distill.py:init={up['lm']},runlocal=True",
                  "--config.train.total_steps=8", "--config.data.seq_len=16"],
      "ppo": [f"--config=configs/ppo.py:size=test,init={up['lm']},pm={up['pm']},runlocal=True",
              "--config.train.total_steps=6", "--config.eval.num_prompts=8",
              "--config.eval.bon_n=2", "--config.eval.bon_prompts=2"],
  }[stage]
  return [sys.executable, "-m", "hh_jax.main", *per_stage, *FAST, f"--workdir={work}"]


def _rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [ln for ln in f.read().splitlines(keepends=True) if ln.endswith("\n")]
  return [{k: v for k, v in json.loads(ln).items() if not k.startswith(TIMING)} for ln in lines]


def _trained(workdir) -> int:
  """The newest training step metrics.jsonl shows (0 before the first)."""
  return max([r["step"] for r in _rows(workdir) if "loss" in r or "ppo/loss" in r
              or "objective/kl" in r], default=0)


def _steps(workdir) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _kill_at(args, workdir, at_step, sig, timeout=300):
  """Starts the run, sends `sig` once the metrics show `at_step`; returns (rc, stderr)."""
  with procs_lib.running(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True) as proc:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and _trained(workdir) < at_step:
      time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before step {at_step}: {proc.stderr.read()[-2000:]}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
  return proc.returncode, err


def _final_state(workdir):
  step = _steps(workdir)[-1]
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  tree = ocp.PyTreeCheckpointer().restore(path)
  return step, jax.tree.map(np.asarray, tree)


@pytest.mark.parametrize("stage,total", [("lm", 10), ("pm", 8), ("distill", 8), ("ppo", 6)])
def test_sigterm_and_sigkill_then_rerun_equal_an_uninterrupted_run(stage, total, upstream,
                                                                    tmp_path):
  ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
  rng = np.random.default_rng(sum(map(ord, stage)))  # seeded random steps, one per stage
  term_at = int(rng.integers(1, total // 2))
  kill_at = int(rng.integers(term_at + 1, total - 1))
  with procs_lib.running(_args(stage, upstream, ref), cwd=REPO, env=ENV,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as reference:
    rc, err = _kill_at(_args(stage, upstream, cut), cut, term_at, signal.SIGTERM)
    assert rc == 75, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("preempted: SIGTERM after"), err[-3000:]
    stopped = _trained(cut)
    assert term_at <= stopped < total
    assert _steps(cut)[-1] == stopped  # the step it finished is checkpointed: nothing lost

    rc, err = _kill_at(_args(stage, upstream, cut), cut, kill_at, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert _steps(cut)[-1] >= kill_at - 1  # at most the step since the last checkpoint lost
    assert _steps(cut)[-1] < total

    done = subprocess.run(_args(stage, upstream, cut), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]

  want, got = _rows(ref), _rows(cut)
  assert [r["step"] for r in got] == [r["step"] for r in want]
  for w, g in zip(want, got):  # every row, in order: a repeated or missing step fails
    assert g.keys() == w.keys(), w["step"]
    for k, v in w.items():
      assert g[k] == (pytest.approx(v, rel=1e-6, abs=1e-7) if isinstance(v, float) else v), \
          (w["step"], k)
  (s_ref, a), (s_cut, b) = _final_state(ref), _final_state(cut)
  assert s_ref == s_cut == total
  assert jax.tree.structure(a) == jax.tree.structure(b)
  # Equal to float32 rounding (distillation's resumed step differs in the last bit).
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


def _parts(workdir) -> int:
  path = os.path.join(workdir, "rs_parts.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for ln in f if ln.endswith("\n"))


def test_rs_killed_and_rerun_writes_the_same_files(upstream, tmp_path):
  ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
  parts = 12  # 24 prompts, 2 per sampler batch of 8 rows (k = 4)
  args = lambda work: [sys.executable, "-m", "hh_jax.main",  # noqa: E731
                       f"--config=configs/rs.py:policy={upstream['lm']},runlocal=True",
                       "--config.data.num_prompts=24", f"--workdir={work}"]
  with procs_lib.running(args(ref), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True) as reference:
    for sig, at, want_rc in ((signal.SIGTERM, 2, 75), (signal.SIGKILL, 5, -signal.SIGKILL)):
      with procs_lib.running(args(cut), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and _parts(cut) < at:
          time.sleep(0.01)
        assert proc.poll() is None, f"rs ended before part {at}: {proc.stderr.read()[-2000:]}"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
      assert proc.returncode == want_rc, err[-3000:]
      assert at <= _parts(cut) < parts
    done = subprocess.run(args(cut), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
  assert _parts(cut) == _parts(ref) == parts  # each part written once: done ones skipped
  for name in ("rs_parts.jsonl", "rs_pairs.jsonl", "rs_best.jsonl", "rs_results.json"):
    with open(os.path.join(ref, name)) as f, open(os.path.join(cut, name)) as g:
      assert f.read() == g.read(), name


def test_sigterm_to_one_process_of_two_stops_both_at_the_agreed_step(upstream, tmp_path):
  # A preempted pod worker may get SIGTERM alone: every process must stop at the same step
  # (the checkpoint is a collective). The flags are OR-ed every preempt_sync_every=20
  # steps, so a SIGTERM to process 1 before step 20 stops both after step 20, with exit 75.
  sys.path.insert(0, os.path.join(REPO, "launch"))
  import local_multiprocess  # pylint: disable=g-import-not-at-top
  work = str(tmp_path / "run")
  base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  port = local_multiprocess.free_port()
  cmd = [sys.executable, "-m", "hh_jax.main", "--config=configs/lm.py:size=test,runlocal=True",
         f"--config.data.tokenizer_path={os.path.join(upstream['lm'], 'tokenizer.model')}",
         "--config.train.total_steps=60", "--config.train.ckpt_every=0",
         "--config.train.log_every=1", "--config.train.eval_every=0",
         "--config.train.preempt_sync_every=20", "--config.train.async_checkpointing=False",
         f"--workdir={work}"]
  procs = [subprocess.Popen(cmd, cwd=REPO, env=local_multiprocess.process_env(base, i, 2, port, 1),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True) for i in range(2)]
  try:
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs) and _trained(work) < 2:
      time.sleep(0.02)
    assert all(p.poll() is None for p in procs), [p.stderr.read()[-2000:] for p in procs]
    assert _trained(work) < 20
    procs[1].send_signal(signal.SIGTERM)  # process 1 only
    errs = [p.communicate(timeout=120)[1] for p in procs]  # without agreement: a hang
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
      procs_lib.stop(p)  # reaped, pipes closed
  assert [p.returncode for p in procs] == [75, 75], [e[-2000:] for e in errs]
  for e in errs:
    assert e.strip().splitlines()[-1].startswith("preempted: SIGTERM after step 20 of 60"), e[-2000:]
  assert _trained(work) == 20 and _steps(work) == [20]
