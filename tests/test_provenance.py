"""Real data never falls back to the synthetic world silently (hh_jax/eval/provenance.py): the
`:hh` pipeline stops in one line where the synthetic gold labeler would make its training
labels, and its report names every synthetic part."""
import pytest

from configs import pipeline as pipeline_config
from hh_jax import main
from hh_jax.errors import UserError
from hh_jax.eval import provenance


def test_hh_online_loop_without_human_judgments_stops_before_anything_trains(tmp_path):
  c = pipeline_config.get_config("hh,runlocal=True")
  with pytest.raises(UserError, match="synthetic gold labeler.*human_files"):
    main.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # nothing written, nothing trained
  c.online.online.iterations = 0
  provenance.check(c)  # no online labels: nothing to refuse
  c = pipeline_config.get_config("hh,runlocal=True")
  c.online.online.human_files = "people.jsonl"
  provenance.check(c)
  provenance.check(pipeline_config.get_config("tiny,runlocal=True"))  # the synthetic preset


def test_hh_report_names_every_synthetic_part():
  c = pipeline_config.get_config("hh,runlocal=True")
  parts = provenance.synthetic_parts(c)
  assert [p.split(" ")[1] for p in parts] == ["LM", "trains", "online"]  # lm, pmp, online PMs
  note = "\n".join(provenance.report_note(c))
  assert "synthetic dialogues" in note and "synthetic StackExchange" in note
  assert "Elo" in note and "not on the hh-rlhf conversations" in note
  c.lm.data.corpus = "text_files"
  c.pmp.data.stackexchange = "Posts.xml"
  c.online.pm_stage.data.source = "hh_rlhf"
  assert provenance.synthetic_parts(c) == []
  assert "None of the training data is synthetic." in "\n".join(provenance.report_note(c))
  assert provenance.report_note(pipeline_config.get_config("tiny,runlocal=True")) == []
