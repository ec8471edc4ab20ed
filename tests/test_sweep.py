"""Sweeps: the plan, the aggregator's table and fits, the pod dry run, and a local sweep.

The local sweep runs real `hh_jax.main` subprocesses over the three smallest rungs, then
checks the aggregated plot, the missing-point report and that a rerun trains nothing.
"""
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from configs import models
from hh_jax import files
from hh_jax.errors import UserError
from launch.sweeps import plan as sweep_plan, report as sweep_report
from hh_jax.model import flops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "launch"))
import sweep  # noqa: E402  pylint: disable=g-import-not-at-top

LADDER = "configs/sweeps/pm_ladder.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _refuse_subprocess(monkeypatch):
  def refuse(*a, **k):
    raise AssertionError(f"ran a subprocess: {a}")
  monkeypatch.setattr(subprocess, "run", refuse)


# --- the plan --------------------------------------------------------------------------


def test_plan_shares_one_lm_per_rung_and_spells_out_overrides(tmp_path):
  s = sweep_plan.load_sweep(f"{LADDER}:runlocal=True", REPO)
  sweep_plan.apply_overrides(s, ["--sweep.lm_steps=4", "--sweep.eval_pairs=24"])
  points = sweep_plan.plan(s, str(tmp_path), extra=["--config.mesh.data=1"])
  assert [p.name for p in points] == ["nano-n32-s0", "test-n32-s0", "micro-n32-s0",
                                      "micro-n16-s0"]
  assert [[r.stage for r in p.runs] for p in points] == [["lm", "pm", "pm_eval"]] * 4
  assert points[2].runs[0] is points[3].runs[0]  # micro's LM is one run, shared
  lm, pm, ev = points[0].runs
  assert lm.workdir == str(tmp_path / "lm" / "nano-s0") and lm.marker == "checkpoints/4"
  assert "--config.train.total_steps=4" in lm.overrides and "--config.mesh.data=1" in lm.overrides
  assert f"--config.init.workdir={lm.workdir}" in pm.overrides
  assert "--config.data.num_train=32" in pm.overrides and "--config.mesh.data=1" in pm.overrides
  assert pm.config == "configs/pm.py:size=nano,runlocal=True"
  assert f"--config.pm.workdir={pm.workdir}" in ev.overrides
  assert "--config.eval.synthetic_pairs=24" in ev.overrides
  assert not any("mesh" in o for o in ev.overrides)  # pm_eval has no mesh
  assert points[0].model == models.get("nano").to_dict()


def test_plan_reuses_given_lms_and_refuses_mistakes(tmp_path):
  s = sweep_plan.load_sweep(f"{LADDER}:sizes=test,num_train=50/100", REPO)
  s.lm_workdirs = "test=/runs/lm_test"
  points = sweep_plan.plan(s, str(tmp_path))
  assert [[r.stage for r in p.runs] for p in points] == [["pm", "pm_eval"]] * 2
  assert all("--config.init.workdir=/runs/lm_test" in p.runs[0].overrides for p in points)
  s.points = (("test", 50, 0), ("test", 50, 0))
  with pytest.raises(UserError, match="listed twice"):
    sweep_plan.plan(s, str(tmp_path))
  with pytest.raises(UserError, match="KEY one of"):
    sweep_plan.apply_overrides(s, ["--sweep.lm_stepz=3"])
  with pytest.raises(UserError, match="takes a int"):
    sweep_plan.apply_overrides(s, ["--sweep.lm_steps=many"])
  with pytest.raises(UserError, match="unknown model size"):
    sweep_plan.plan(sweep_plan.load_sweep(f"{LADDER}:sizes=huge", REPO), str(tmp_path))


# --- the aggregator on hand-written results --------------------------------------------


def _fake_sweep(root):
  """nano/test/micro at 100 pairs (acc = 0.5 + 0.1·log10(params/1000)) and micro at 10 and
  1000 pairs (acc = 0.4 + 0.05·log10(n) with micro's 100-pair point), one point unfinished."""
  params = {s: flops.param_count_non_embedding(models.get(s)) for s in ("nano", "test", "micro")}
  acc = {(s, 100): 0.5 + 0.1 * np.log10(params[s] / 1000) for s in params}
  acc.update({("micro", n): acc[("micro", 100)] + 0.05 * np.log10(n / 100) for n in (10, 1000)})
  rows = []
  for (size, n), a in sorted(acc.items()) + [(("nano", 1000), None)]:
    name = f"{size}-n{n}-s0"
    point = {"name": name, "size": size, "num_train": n, "seed": 0,
             "workdir": str(root / "points" / name), "lm_workdir": str(root / "lm" / size),
             "pm_workdir": str(root / "points" / name / "pm"),
             "eval_workdir": str(root / "points" / name / "eval"),
             "model": models.get(size).to_dict()}
    rows.append(point)
    if a is None:
      continue
    os.makedirs(point["pm_workdir"])
    os.makedirs(point["eval_workdir"])
    with open(os.path.join(point["pm_workdir"], "config.json"), "w") as f:
      json.dump({"model": models.get(size).to_dict()}, f)
    with open(os.path.join(point["eval_workdir"], "eval.json"), "w") as f:
      json.dump({"accuracy": a, "ece": 0.05, "gold_agreement": a, "spearman_gold": 0.3,
                 "num_pairs": 500, "by_turns": {}}, f)
  with open(root / sweep_plan.MANIFEST, "w") as f:
    json.dump({"sweep": "fake", "config": {}, "points": rows}, f)
  return params, acc


def test_report_table_fits_and_plot(tmp_path):
  params, acc = _fake_sweep(tmp_path)
  printed = []
  out = sweep_report.report(str(tmp_path), out=printed.append)

  assert [(r["size"], r["num_train"]) for r in out["rows"]] == [
      ("nano", 100), ("test", 100), ("micro", 10), ("micro", 100), ("micro", 1000)]
  for r in out["rows"]:
    assert r["params"] == params[r["size"]]
    assert r["accuracy"] == pytest.approx(acc[(r["size"], r["num_train"])])
    assert r["num_pairs"] == 500 and r["ece"] == 0.05
  assert [m["name"] for m in out["missing"]] == ["nano-n1000-s0"]

  fits = {(f["x"], f["group"]): f for f in out["fits"]}
  assert set(fits) == {("params", 100), ("num_train", "micro")}  # one x: no fit
  assert fits[("params", 100)]["slope"] == pytest.approx(0.1)
  assert fits[("params", 100)]["intercept"] == pytest.approx(0.2)  # 0.5 - 0.1 · log10(1000)
  assert fits[("params", 100)]["points"] == 3
  assert fits[("num_train", "micro")]["slope"] == pytest.approx(0.05)

  with open(tmp_path / "sweep.png", "rb") as f:
    assert f.read(8) == PNG_MAGIC
  with open(tmp_path / "sweep.json") as f:
    saved = json.load(f)
  assert len(saved["rows"]) == 5 and saved["missing"][0]["name"] == "nano-n1000-s0"
  with open(tmp_path / "sweep.csv") as f:
    lines = f.read().splitlines()
  assert lines[0] == ",".join(sweep_report.COLUMNS) and len(lines) == 6
  assert lines[1].startswith(f"nano-n100-s0,nano,{params['nano']},100,0,")
  md = (tmp_path / "sweep.md").read_text()
  assert md.count("\n| ") == 5  # a line per row
  assert "slope +0.1000 per decade" in md and "missing: nano-n1000-s0" in md
  text = "\n".join(printed)
  assert "point nano-n1000-s0 is not finished" in text and "5 of 6 points" in text


def test_report_cli_without_manifest_is_one_line(tmp_path, capsys):
  assert sweep_report.main([f"--workdir={tmp_path}"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: no sweep_points.json") and "\n" not in err


# --- pod mode, dry run -----------------------------------------------------------------

POD = [f"--sweep={LADDER}:sizes=13m/42m,num_train=1000/4000", "--workdir=gs://bkt/sweeps/lad",
       "--mode=pod", "--name=lad", "--accelerator=v5litepod-16", "--zone=us-west4-a",
       "--project=proj", "--spot", "--dry-run", "--sweep.seq_len=512",
       "--", "--config.mesh.data=1", "--config.mesh.fsdp=16"]


def _sequences(text):
  """{point name: [(step, argv), ...]} from the dry run's output."""
  seqs, name = {}, None
  for ln in text.splitlines():
    if ln.startswith("== ["):
      name = ln.split("] ", 1)[1].split(":")[0]
      seqs[name] = []
    elif ln.startswith("[") and name and not ln.startswith("[aggregate]"):
      step = ln[1:ln.index("]")]
      seqs[name].append((step, shlex.split(ln[ln.index("]") + 1:].split("   #")[0])))
  return seqs


def test_pod_dry_run_prints_a_sequence_per_point(capsys, monkeypatch):
  _refuse_subprocess(monkeypatch)
  assert sweep.main(POD) == 0
  text = capsys.readouterr().out
  seqs = _sequences(text)
  names = ["13m-n1000-s0", "13m-n4000-s0", "42m-n1000-s0", "42m-n4000-s0"]
  assert list(seqs) == names
  slices = set()
  for name in names:
    steps = [s for i, (s, _) in enumerate(seqs[name]) if not i or seqs[name][i - 1][0] != s]
    runs = [c[-1] for s, c in seqs[name] if s == "run"]
    first_of_rung = name.endswith("n1000-s0")
    assert steps == (["create", "wait", "ship", "install"]
                     + ["run", "logs"] * (3 if first_of_rung else 2) + ["delete"])
    create, delete = seqs[name][0][1], seqs[name][-1][1]
    slice_name = create[create.index("create") + 1][:-len("-qr")]
    assert slice_name.startswith("lad-") and f"{slice_name}-qr" in delete
    assert "--accelerator-type=v5litepod-16" in create and "--spot" in create
    slices.add(slice_name)
    point_dir = f"gs://bkt/sweeps/lad/points/{name}"
    size = name.split("-")[0]
    lm_dir = f"gs://bkt/sweeps/lad/lm/{size}-s0"
    assert f"--workdir={point_dir}/pm" in runs[-2] and f"--workdir={point_dir}/eval" in runs[-1]
    assert f"--config.init.workdir={lm_dir}" in runs[-2]
    assert f"--config.pm.workdir={point_dir}/pm" in runs[-1]
    assert ("--workdir=" + lm_dir in runs[0]) == first_of_rung  # each LM trains once
    for r in runs[:-1]:  # LM and PM runs get the mesh overrides; pm_eval has no mesh
      assert "--config.mesh.fsdp=16" in r and "--config.data.seq_len=512" in r
      assert f".py:size={size},runlocal=False" in r
    assert "mesh" not in runs[-1] and "nohup" in runs[-1]
  assert len(slices) == len(names)  # one slice per point
  assert "[aggregate] " in text and "--workdir=gs://bkt/sweeps/lad" in text


def test_pod_mode_refuses_local_workdir_and_unknown_points(capsys, monkeypatch):
  _refuse_subprocess(monkeypatch)
  local = [a if not a.startswith("--workdir") else "--workdir=/tmp/lad" for a in POD]
  with pytest.raises(SystemExit, match="gs://"):
    sweep.main(local)
  assert sweep.main(["--only=13m-n1000-s0,13m-n9-s0"] + POD) == 2
  assert "no point named 13m-n9-s0" in capsys.readouterr().err


def test_pod_failed_lm_skips_its_rung_and_every_slice_is_deleted(capsys, monkeypatch):
  """A real (not dry) pod sweep against a fake gcloud whose 13m LM job exits 2."""
  calls, last_run, written, aggregated = [], [""], [], []

  def fake_run(cmd, **kwargs):
    calls.append(cmd)
    out = ""
    if "describe" in cmd:
      out = "ACTIVE"
    elif cmd[-1].startswith("--command=") and "nohup" in cmd[-1]:
      last_run[0] = cmd[-1]
    elif cmd[-1] == "--command=cat ~/hh_jax_run.rc":
      out = "2 2" if "/lm/13m-s0 " in last_run[0] else "0 0"
    return subprocess.CompletedProcess(cmd, 0, out, "")

  monkeypatch.setattr(subprocess, "run", fake_run)
  monkeypatch.setattr(files, "exists", lambda path: False)  # nothing finished on gs://
  monkeypatch.setattr(files, "write_text", lambda path, text: written.append(path))
  monkeypatch.setattr(sweep.sweep_report, "report", aggregated.append)
  assert sweep.main([a for a in POD if a != "--dry-run"]) == 1
  captured = capsys.readouterr()
  assert "failed points: 13m-n1000-s0, 13m-n4000-s0" in captured.err
  assert "[2/4] 13m-n4000-s0: skipped, a run it needs failed above" in captured.out
  runs = [c[-1] for c in calls if c[-1].startswith("--command=") and "nohup" in c[-1]]
  assert [r.split("--workdir=")[1].split()[0] for r in runs] == [
      "gs://bkt/sweeps/lad/lm/13m-s0", "gs://bkt/sweeps/lad/lm/42m-s0",
      "gs://bkt/sweeps/lad/points/42m-n1000-s0/pm", "gs://bkt/sweeps/lad/points/42m-n1000-s0/eval",
      "gs://bkt/sweeps/lad/points/42m-n4000-s0/pm", "gs://bkt/sweeps/lad/points/42m-n4000-s0/eval"]
  deleted = [c[5] for c in calls if c[:5] == ["gcloud", "compute", "tpus", "queued-resources",
                                              "delete"]]
  assert deleted == ["lad-13m-n1000-s0-qr", "lad-42m-n1000-s0-qr", "lad-42m-n4000-s0-qr"]
  assert written == ["gs://bkt/sweeps/lad/sweep_points.json"]
  assert aggregated == ["gs://bkt/sweeps/lad"]  # the partial sweep is still aggregated


# --- a real local sweep over three tiny rungs ------------------------------------------

THREE = "nano-n32-s0,test-n32-s0,micro-n32-s0"


def test_local_sweep_three_rungs_aggregates_and_resumes(tmp_path, capsys, monkeypatch):
  # One device per run (the suite's 8 virtual devices only slow these tiny runs down), and
  # the suite's persistent compilation cache, so a warm rerun compiles little.
  monkeypatch.setenv("XLA_FLAGS", "")
  cache = os.environ.get("HH_JAX_TEST_CACHE", "/tmp/hh_jax_test_jax_cache")
  wd = tmp_path / "sweep"
  argv = [f"--sweep={LADDER}:runlocal=True", f"--workdir={wd}", f"--only={THREE}",
          f"--jax_cache={cache}"]
  assert sweep.main(argv) == 0
  out = capsys.readouterr().out
  for i, name in enumerate(THREE.split(","), 1):
    assert f"[{i}/3] {name}: held-out accuracy" in out

  with open(wd / "sweep.json") as f:
    report = json.load(f)
  rows = report["rows"]
  assert [r["name"] for r in rows] == THREE.split(",")
  assert [r["params"] for r in rows] == [3296, 25408, 99968]  # the three rungs, in order
  for r in rows:
    with open(wd / "points" / r["name"] / "eval" / "eval.json") as f:
      assert r["accuracy"] == json.load(f)["accuracy"]
    assert r["num_pairs"] == 32
  # The fourth runlocal point was not run: reported by name, not a crash.
  assert [m["name"] for m in report["missing"]] == ["micro-n16-s0"]
  assert "point micro-n16-s0 is not finished" in out
  [fit] = report["fits"]
  assert fit["x"] == "params" and fit["points"] == 3
  expect = np.polyfit(np.log10([r["params"] for r in rows]), [r["accuracy"] for r in rows], 1)
  assert fit["slope"] == pytest.approx(expect[0])
  with open(wd / "sweep.png", "rb") as f:
    assert f.read(8) == PNG_MAGIC

  # A rerun trains nothing: no subprocess starts and no run's files change.
  def snapshot():
    return {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns
            for d, _, files in os.walk(wd) for n in files
            if not n.startswith("sweep") and "jax_cache" not in d}
  before = snapshot()
  _refuse_subprocess(monkeypatch)
  assert sweep.main(argv) == 0
  out = capsys.readouterr().out
  assert out.count("finished earlier, skipped") == 3
  assert snapshot() == before

  # One point's result deleted: the plan reruns exactly that point's pm_eval.
  os.remove(wd / "points" / "test-n32-s0" / "eval" / "eval.json")
  assert sweep.main(argv + ["--dry-run"]) == 0
  cmds = [ln for ln in capsys.readouterr().out.splitlines() if "-m hh_jax.main" in ln]
  assert len(cmds) == 1 and cmds[0].startswith("[2/3] test-n32-s0: [pm_eval] ")
