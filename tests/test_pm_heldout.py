"""Held-out PM/PMP pairs never share text with training pairs, however small the dump."""
import json
import re

from configs import pm as pm_config, pmp as pmp_config
from hh_jax.data import synthetic_pairs
from hh_jax.train import pm


def _texts(pairs):
  return {t for p in pairs for t in (p.context + p.chosen, p.context + p.rejected)}


def test_pmp_holds_out_before_cycling_a_tiny_dump(tmp_path, capsys):
  xml = tmp_path / "Posts.xml"
  xml.write_text(synthetic_pairs.stackexchange_posts_xml(12, seed=0), encoding="utf-8")
  c = pmp_config.get_config("size=test,runlocal=True")
  c.data.stackexchange = str(xml)
  c.data.num_pairs = 2000  # far more than the dump has: the source is cycled
  c.data.eval_fraction = 0.2
  train, held = pm.pmp_pairs(c, str(tmp_path))
  assert held and train
  assert not _texts(train) & _texts(held)  # binarized: no labelled reply on both sides
  assert not {p.context for p in train} & {p.context for p in held}
  n_held = len(held) // 2  # before binarization
  assert len(train) // 2 == 2000 - n_held
  out = capsys.readouterr().out
  m = re.search(r"pmp: stackexchange (\d+) pairs cycled ([\d.]+)× \(to (\d+) of (\d+)\)", out)
  assert m, out
  distinct = int(m.group(1))
  assert int(m.group(3)) == 2000 - n_held and float(m.group(2)) == round(
      (2000 - n_held) / distinct, 1)
  assert n_held <= 0.2 * (distinct + n_held) + 10  # a share of the distinct pairs, not 20% of 2000


def _hh_file(path, n):
  with open(path, "w") as f:
    for i in range(n):
      f.write(json.dumps({"chosen": f"\n\nHuman: q{i % (n // 2)}\n\nAssistant: yes {i}",
                          "rejected": f"\n\nHuman: q{i % (n // 2)}\n\nAssistant: no {i}"}) + "\n")


def test_hh_rlhf_without_eval_files_holds_out_a_share(tmp_path):
  path = tmp_path / "train.jsonl"
  _hh_file(path, 400)  # 200 contexts, two comparisons each
  c = pm_config.get_config("size=test,data=hh_rlhf,runlocal=True")
  c.data.train_files = str(path)
  c.data.num_train = 0
  assert c.data.eval_fraction == 0.05
  train, held = pm.build_pairs(c, str(tmp_path))
  assert len(held) == 20 and len(train) == 380  # 5%, whole contexts
  assert not {p.context for p in train} & {p.context for p in held}
  assert (train, held) == pm.build_pairs(c, str(tmp_path))  # seeded: the same every run
  c.data.eval_fraction = 0.0
  train, held = pm.build_pairs(c, str(tmp_path))
  assert len(train) == 400 and held == []
  c.data.eval_files = str(path)  # explicit eval files win
  c.data.eval_fraction = 0.5
  train, held = pm.build_pairs(c, str(tmp_path))
  assert len(train) == 400 and len(held) == 400
