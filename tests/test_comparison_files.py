"""Comparisons as files: labeled pairs written in the hh-rlhf format read back unchanged, and
one PM run trains on several sources at once (synthetic + files)."""
import random

import pytest

from configs import pm as pm_config
from hh_jax.data import hh_rlhf, synthetic
from hh_jax.errors import UserError
from hh_jax.data import labelers
from hh_jax.train import pm


def _labeled(n, seed):
  rng = random.Random(seed)
  out = []
  for p in synthetic.prompts(n, seed):
    a = synthetic.write_response(rng, p.topic, "comply")
    b = synthetic.write_response(rng, p.topic, "refuse")
    pair = labelers.label_pair(p.context, a, b, 0.5, rng)
    if pair is not None:  # None: a gold tie, which carries no label
      out.append(pair)
  return out


def test_labeled_pairs_round_trip_through_hh_rlhf_files(tmp_path):
  pairs = [p for p in _labeled(40, 3) if p.chosen.strip() != p.rejected.strip()]
  path = str(tmp_path / "online.jsonl")
  assert hh_rlhf.write_file(path, pairs) == len(pairs)
  back, report = hh_rlhf.read_file(path)
  assert report.pairs == len(pairs)
  assert [(p.context, p.chosen, p.rejected) for p in back] == [
      (p.context, p.chosen, p.rejected) for p in pairs]


def test_pm_trains_on_synthetic_and_files_at_once(tmp_path):
  path = str(tmp_path / "online.jsonl")
  n_file = hh_rlhf.write_file(path, _labeled(60, 4))
  c = pm_config.get_config("size=test,runlocal=True")
  c.data.source = "synthetic,hh_rlhf"
  c.data.train_files = path
  c.data.eval_fraction = 0.0
  train, held = pm.build_pairs(c, str(tmp_path))
  only_syn = pm_config.get_config("size=test,runlocal=True")
  syn_train, syn_held = pm.build_pairs(only_syn, str(tmp_path))
  assert len(train) == len(syn_train) + n_file  # every file pair, not cut to num_train
  assert train[:len(syn_train)] == syn_train and held == syn_held
  c.data.source = "synthetic,reddit"
  with pytest.raises(UserError, match="one or more of"):
    pm.build_pairs(c, str(tmp_path))
