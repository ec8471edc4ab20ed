"""A bag-of-words preference model: the bar every transformer PM has to clear.

r(reply) = w . log(1 + word counts), fitted with Bradley-Terry (logistic) loss on
r(chosen) - r(rejected). Both replies share the context, so the context cancels out of
the difference and is not featurised: this baseline sees only which words a reply uses,
never whether they fit the request. A PM that beats it is using order or context.

  python -m hh_jax.eval.bow_baseline [--hh_dir ../shared/data/hh-rlhf]

prints the accuracies quoted in docs/data.md as JSON.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
from typing import Sequence

import numpy as np

from hh_jax.data.pairs import Pair
from hh_jax.errors import UserError

_WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
  return _WORD.findall(text.lower())


@dataclasses.dataclass
class BowModel:
  vocab: dict[str, int]
  weights: np.ndarray  # [vocab]

  def features(self, texts: Sequence[str]) -> np.ndarray:
    x = np.zeros((len(texts), len(self.vocab)), np.float32)  # [n, vocab]
    for i, t in enumerate(texts):
      for w, c in collections.Counter(tokenize(t)).items():
        j = self.vocab.get(w)
        if j is not None:
          x[i, j] = np.log1p(c)
    return x

  def score(self, texts: Sequence[str]) -> np.ndarray:
    return self.features(texts) @ self.weights  # [n]


def _diffs(model: BowModel, pairs: Sequence[Pair]) -> np.ndarray:
  return (model.features([p.chosen for p in pairs])
          - model.features([p.rejected for p in pairs]))  # [n, vocab]


def fit(pairs: Sequence[Pair], *, max_words: int = 5000, min_count: int = 2,
        l2: float = 1e-3, steps: int = 400, lr: float = 0.1) -> BowModel:
  """Full-batch Adam on the mean logistic loss of the reward difference plus L2."""
  if not pairs:
    raise UserError("no pairs to fit the bag-of-words baseline on")
  counts = collections.Counter(w for p in pairs for t in (p.chosen, p.rejected)
                               for w in set(tokenize(t)))
  words = sorted((w for w, c in counts.items() if c >= min_count),
                 key=lambda w: (-counts[w], w))[:max_words]
  model = BowModel({w: i for i, w in enumerate(words)}, np.zeros(len(words), np.float32))
  d = _diffs(model, pairs)
  w = np.zeros(len(words), np.float32)
  m = np.zeros_like(w)
  v = np.zeros_like(w)
  for t in range(1, steps + 1):
    z = d @ w
    g = -(d.T @ (1.0 / (1.0 + np.exp(z)))) / len(pairs) + l2 * w  # grad of softplus(-z)
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    w -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
  model.weights = w
  return model


def margins(model: BowModel, pairs: Sequence[Pair]) -> np.ndarray:
  """r(chosen) - r(rejected) per pair, [n]."""
  return _diffs(model, pairs) @ model.weights


def _correct(margin) -> np.ndarray:
  m = np.asarray(margin, np.float64)
  return (m > 0) + 0.5 * (m == 0)  # [n]; a tie counts one half


def accuracy(model: BowModel, pairs: Sequence[Pair]) -> float:
  """Share of pairs whose chosen reply scores higher; exact ties count one half."""
  return float(np.mean(_correct(margins(model, pairs))))


# The baseline beside a PM stage fits on at most this many of the PM's training pairs (the
# features are dense: [pairs, max_words] float32, ~100 MB at 5,000 × 5,000).
MAX_FIT_PAIRS = 5000


def beside_pm(pm_margin, train: Sequence[Pair], held: Sequence[Pair]) -> dict:
  """A PM's held-out accuracy beside this baseline's, fitted on the PM's training pairs
  (the first `MAX_FIT_PAIRS`) and scored on the same held-out pairs.

  Both accuracies are over the same pairs, so the difference's standard error is the paired
  one (the per-pair difference of the two 0 / ½ / 1 outcomes): the unit sampled is the pair.
  """
  if len(pm_margin) != len(held):
    raise ValueError(f"{len(pm_margin)} PM margins for {len(held)} held-out pairs")
  bow = _correct(margins(fit(train[:MAX_FIT_PAIRS]), held))  # [n]
  pm = _correct(pm_margin)  # [n]
  n = len(held)
  d = pm - bow
  se = lambda x: float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
  return {"pairs": n, "fit_pairs": min(len(train), MAX_FIT_PAIRS),
          "pm_accuracy": float(pm.mean()), "pm_se": se(pm),
          "bow_accuracy": float(bow.mean()), "bow_se": se(bow),
          "difference": float(d.mean()), "difference_se": se(d)}


def synthetic_report(num_train: int = 4000, num_test: int = 1000, seed: int = 0
                     ) -> dict[str, float]:
  """Train->test accuracy on noise-free synthetic comparisons, per mixture."""
  from hh_jax.data import synthetic, synthetic_pairs  # pylint: disable=g-import-not-at-top
  out = {}
  for mixture in synthetic.MIXTURES:
    train = synthetic_pairs.comparisons(num_train, seed, mixture)
    test = synthetic_pairs.comparisons(num_test, seed + 1, mixture)
    model = fit(train)
    out[f"synthetic/{mixture}/train"] = accuracy(model, train)
    out[f"synthetic/{mixture}/test"] = accuracy(model, test)
  return out


def hh_report(hh_dir: str, subset: str = "harmless-base") -> dict[str, float]:
  from hh_jax.data import hh_rlhf  # pylint: disable=g-import-not-at-top
  train, _ = hh_rlhf.read(hh_dir, (subset,), "train")
  test, _ = hh_rlhf.read(hh_dir, (subset,), "test")
  model = fit(train)
  return {f"hh-rlhf/{subset}/train": accuracy(model, train),
          f"hh-rlhf/{subset}/test": accuracy(model, test)}


def main(argv: Sequence[str] | None = None) -> None:
  here = os.path.dirname(os.path.abspath(__file__))
  default_hh = os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "data",
                                             "hh-rlhf"))
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--hh_dir", default=default_hh)
  ap.add_argument("--num_train", type=int, default=4000)
  ap.add_argument("--num_test", type=int, default=1000)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  out = synthetic_report(args.num_train, args.num_test, args.seed)
  if os.path.isdir(args.hh_dir):
    out.update(hh_report(args.hh_dir))
  print(json.dumps({k: round(v, 4) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
  main()
