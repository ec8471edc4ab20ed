"""A TFDS builder for hh-rlhf that writes ArrayRecord and reads back without TensorFlow.

Pods read training data through grain from random-access ArrayRecord files; TFDS gives
those files a versioned, checksummed home. The builder reuses `hh_rlhf.read_file`, so the
skipping rules (and their counts, logged at build time) are the same as the plain reader.

Files come from a manual directory (`<manual_dir>/<subset>/<split>.jsonl[.gz]`) by
default; `download=True` fetches the published files from DOWNLOAD_URL instead.

  builder = build("/path/to/hh-rlhf", "/tmp/tfds", subset="harmless-base")
  source = tfds.data_source("hh_rlhf/harmless-base", split="train", data_dir="/tmp/tfds")
"""
from __future__ import annotations

import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from hh_jax.data import hh_rlhf
from hh_jax.data.pairs import Pair
from hh_jax.errors import UserError

DOWNLOAD_URL = ("https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/"
                "{subset}/{split}.jsonl.gz")


class HhRlhfConfig(tfds.core.BuilderConfig):
  """One published subset (its name is the subset's, e.g. "harmless-base")."""


class HhRlhf(tfds.core.GeneratorBasedBuilder):
  """hh-rlhf comparisons split into (context, chosen, rejected, turns)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Context/reply split with the hh_jax skipping rules."}
  BUILDER_CONFIGS = [HhRlhfConfig(name=s, description=f"hh-rlhf {s}") for s in hh_rlhf.SUBSETS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place <subset>/train.jsonl.gz and <subset>/test.jsonl.gz from "
      "https://huggingface.co/datasets/Anthropic/hh-rlhf in the manual directory, "
      "or build with download=True.")
  # No registered checksums: the published files change rarely and are read by our own
  # validating reader. Setting this also keeps TFDS from locating the builder's source
  # directory, which needs `importlib_resources` (absent from a bare jax/tfds install).
  url_infos = None

  def __init__(self, *, download: bool = False,
               max_bad_share: float = hh_rlhf.DEFAULT_MAX_BAD_SHARE, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._download = download
    self._max_bad_share = max_bad_share
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "context": tfds.features.Text(),
            "chosen": tfds.features.Text(),
            "rejected": tfds.features.Text(),
            "turns": tfds.features.Scalar(dtype=np.int32),
        }),
        homepage="https://github.com/anthropics/hh-rlhf",
    )

  def _split_generators(self, dl_manager):
    subset = self.builder_config.name
    if self._download:
      urls = {s: DOWNLOAD_URL.format(subset=subset, split=s) for s in hh_rlhf.SPLITS}
      paths = {s: os.fspath(p) for s, p in dl_manager.download(urls).items()}
    else:
      root = os.fspath(dl_manager.manual_dir)
      paths = {s: hh_rlhf.find_file(root, subset, s) for s in hh_rlhf.SPLITS}
    return {s: self._generate_examples(p, f"{subset}/{s}") for s, p in paths.items()}

  def _generate_examples(self, path: str, source: str):
    pairs, report = hh_rlhf.read_file(path, self._max_bad_share, source)
    logging.info("hh-rlhf %s: %s", source, report.summary())
    for line in report.malformed:
      logging.warning("skipped %s", line)
    for i, p in enumerate(pairs):
      yield i, {"context": p.context, "chosen": p.chosen, "rejected": p.rejected,
                "turns": p.turns}


def build(manual_dir: str | None, data_dir: str, subset: str = "harmless-base",
          download: bool = False) -> HhRlhf:
  """Builds (once) the ArrayRecord files for `subset` under data_dir and returns the builder."""
  if subset not in hh_rlhf.SUBSETS:
    raise UserError(f"unknown hh-rlhf subset {subset!r}; use one of {', '.join(hh_rlhf.SUBSETS)}")
  if not download:
    if not manual_dir:
      raise UserError("give manual_dir (a directory of <subset>/<split>.jsonl.gz) "
                       "or set download=True")
    for s in hh_rlhf.SPLITS:
      hh_rlhf.find_file(manual_dir, subset, s)  # one clear line if a file is missing
  builder = HhRlhf(config=subset, data_dir=data_dir, download=download)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def data_source(data_dir: str, subset: str = "harmless-base", split: str = "train"):
  """The random-access source grain reads; records are dicts of bytes and ints."""
  return tfds.data_source(f"hh_rlhf/{subset}", split=split, data_dir=data_dir,
                          builder_kwargs={"file_format": "array_record"})


def record_to_pair(record: dict, source: str = "") -> Pair:
  def text(x):
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)
  return Pair(text(record["context"]), text(record["chosen"]), text(record["rejected"]),
              int(record["turns"]), source)


def load_pairs(data_dir: str, subset: str = "harmless-base", split: str = "train"
               ) -> list[Pair]:
  source = data_source(data_dir, subset, split)
  return [record_to_pair(source[i], f"{subset}/{split}") for i in range(len(source))]
