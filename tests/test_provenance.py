"""Real data never falls back to the synthetic world silently (hh_jax/eval/provenance.py): the
`:hh` pipeline stops in one line where the synthetic gold labeler would make its training
labels, and its report names every synthetic part."""
import pytest

from configs import pipeline as pipeline_config
from hh_jax import main
from hh_jax.errors import UserError
from hh_jax.eval import provenance


def _hh(arg="hh,runlocal=True"):
  c = pipeline_config.get_config(arg)
  c.pm.data.train_files, c.pm.data.eval_files = "train.jsonl", "test.jsonl"
  return c


def test_hh_online_loop_without_human_judgments_stops_before_anything_trains(tmp_path):
  c = _hh("hh,runlocal=True,iterations=2")
  with pytest.raises(UserError, match="synthetic gold labeler.*human_files"):
    main.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # nothing written, nothing trained
  c.online.online.iterations = 0
  provenance.check(c)  # no online labels: nothing to refuse
  provenance.check(_hh())  # :hh runs no online iteration unless asked
  c = _hh("hh,runlocal=True,iterations=2")
  c.online.online.human_files = "people.jsonl"
  provenance.check(c)
  provenance.check(pipeline_config.get_config("tiny,runlocal=True"))  # the synthetic preset


def test_hh_without_its_files_stops_in_one_line(tmp_path):
  c = pipeline_config.get_config("hh,runlocal=True")
  with pytest.raises(UserError, match="pass --config.pm.data.train_files"):
    main.run(c, str(tmp_path / "run"))
  c.pm.data.train_files = "train.jsonl"
  with pytest.raises(UserError, match="pass --config.pm.data.eval_files"):
    main.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_hh_report_names_every_synthetic_part():
  c = _hh()
  assert provenance.synthetic_parts(c) == []  # :hh trains on nothing synthetic by default
  note = "\n".join(provenance.report_note(c))
  assert "None of the training data is synthetic." in note
  assert "No section is judged by the synthetic gold labeler" in note and "Left out" in note
  c.lm.data.corpus = "synthetic"
  c.pmp.data.synthetic_questions = 100
  c.distill.data.corpus = "synthetic"
  c.rs.data.source = "synthetic"
  c.ppo.prompts.source = "synthetic"
  c.online.online.iterations = 1
  c.online.pm_stage.data.source = "synthetic,hh_rlhf"
  parts = provenance.synthetic_parts(c)
  assert [p.split(" ")[0] for p in parts] == ["the", "PMP", "context", "rejection", "PPO",
                                              "each"]
  note = "\n".join(provenance.report_note(c))
  assert "synthetic dialogues" in note and "synthetic StackExchange" in note
  assert provenance.report_note(pipeline_config.get_config("tiny,runlocal=True")) == []


def test_hh_online_loop_labelled_by_the_test_pm(tmp_path):
  """`online.judge=pm_test`: the run's test PM labels the loop's comparisons (no gold), on
  prompts of a file of their own, and the report says who labelled and judged them."""
  from hh_jax import pipeline  # pylint: disable=g-import-not-at-top
  c = _hh("hh,runlocal=True,iterations=1")
  c.online.online.judge = provenance.JUDGE_PM
  with pytest.raises(UserError, match="online.ppo_stage.prompts.files"):
    main.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  c.online.ppo_stage.prompts.files = "online_prompts.jsonl"
  provenance.check(c)
  assert provenance.online_judge(c) == provenance.JUDGE_PM
  note = "\n".join(provenance.report_note(c))
  assert "labelled by the order of `pm_test`'s scores" in note
  online = pipeline.stage_config(c, "online", str(tmp_path / "run"))
  assert online.online.judge == str(tmp_path / "run" / provenance.JUDGE_PM)
  assert online.ppo_stage.prompts.files == "online_prompts.jsonl"  # not the train files
