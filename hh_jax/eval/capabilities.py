"""The alignment tax: zero-shot capability evals of an LM or policy run, by log-likelihood.

The paper asks whether RLHF costs capabilities (it finds a tax for small models and a bonus
for large ones). This module measures it the same way for any run `load_lm` reads: each
task is multiple choice, and the model's answer is the option with the highest sum of token
log-probs given the question (`accuracy`), or with the highest log-prob per UTF-8 byte of the
option (`accuracy_norm`, which does not favour short options). LAMBADA is the exception:
`accuracy` is the share of passages whose last word the model gets by greedy decoding, i.e.
every token of " <last word>" is the argmax given the passage and the tokens before it
(teacher-forced greedy, which is what greedy decoding produces up to the first mistake);
its `accuracy_norm` is None.

Tasks are read from LOCAL files in the public formats (nothing downloads):

* MMLU: CSV, no header, rows `question,A,B,C,D,answer-letter` (`data/test/<subject>_test.csv`);
  a path is one such file or a directory of them.
* LAMBADA: jsonl with "text"; the target is the text after its last space.
* HellaSwag: jsonl with "ctx", "endings" (4 strings), "label" (index).
* ARC: jsonl with "question": {"stem", "choices": [{"text", "label"}]}, "answerKey".
* OpenBookQA: the ARC shape, or the "question_stem" + "choices" {"text": [...], "label": [...]}
  variant.
* synthetic: a probe built from the synthetic world (`synthetic_items`), so the table has a
  row on the tiny pipeline: after a benign request and the start of a helpful sentence, which
  of four detail words comes next — the request's own topic's or another topic's. It measures
  the topic knowledge that helpfulness in the synthetic world rests on (chance 0.25), which
  is exactly what the gold labeler rewards, so RLHF is paid to keep it.
* recall: the synthetic skill RLHF is *not* paid for (`recall_probe`): closed-book recall
  of a fact the LM corpus taught (`synthetic.FACTS`: "What is Greta's dog called?",
  `synthetic.fact_dialogue`, the way the paper's TriviaQA row tests trivia); which of four
  values of that slot the Assistant's "Greta's dog is called" continues with (chance 0.25). The gold labeler reads no word of it, so a change here is an alignment tax (or
  bonus) on a skill the reward neither pays for nor punishes.

Every multiple-choice result carries its per-item outcomes (`correct`) and the binomial
standard error of its accuracy (`se`); `paired_tax` gives each model's change from a
baseline with the standard error of the per-item difference (the same items, so paired).

The scorer is injectable: `score_items(items, loglik)` takes any function from
(context, continuation) pairs to (log-prob sums, all-greedy flags), so the choice logic is
tested with a rigged function; `LMLogLik` is the real one, a jitted forward over fixed
(batch, length-bucket) shapes so a whole eval compiles a handful of programs.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import sys
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hh_jax import files
from hh_jax.data import records
from hh_jax.data.markers import ASSISTANT, HUMAN
from hh_jax.errors import UserError

DEFAULT_MAX_BAD_SHARE = 0.01
MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class Item:
  """One question: `options` are continuations of `context` (with their leading space)."""
  context: str
  options: tuple[str, ...]
  answer: int


# (context, continuation) pairs -> (sum of the continuation's token log-probs [n],
#                                   whether every continuation token is the argmax [n])
LogLik = Callable[[Sequence[tuple[str, str]]], tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------------------
# Readers.


def _item(context: str, options: Sequence[str], answer: int) -> Item:
  if not options or any(not o.strip() for o in options):
    raise ValueError("an empty option")
  if not 0 <= answer < len(options):
    raise ValueError(f"answer index {answer} outside the {len(options)} options")
  return Item(context, tuple(options), answer)


def _jsonl(path: str, parse: Callable[[dict], Item], max_bad_share: float) -> list[Item]:
  """Items from a jsonl file, a bad line skipped as `file:line: reason`."""
  skips = records.Skips(path, max_bad_share)
  out = []
  for lineno, raw in records.lines(path, skips):
    try:
      out.append(parse(records.json_object(raw)))
    except ValueError as e:
      skips.bad(lineno, str(e))
  skips.finish("fix the file")
  return out


def _qa(stem: str) -> str:
  return f"Question: {stem.strip()}\nAnswer:"


def _mmlu_file(path: str, max_bad_share: float) -> list[Item]:
  name = os.path.basename(path)
  subject = name[:-len("_test.csv")] if name.endswith("_test.csv") else name.rsplit(".", 1)[0]
  subject = subject.replace("_", " ")
  skips = records.Skips(path, max_bad_share)
  out = []
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.reader(f)
      start = 1
      for row in reader:
        lineno, start = start, reader.line_num + 1
        if not any(c.strip() for c in row):
          continue
        skips.records += 1
        try:
          if len(row) != 6:
            raise ValueError(f"{len(row)} fields; want question,A,B,C,D,answer")
          letter = row[5].strip().upper()
          if letter not in ("A", "B", "C", "D"):
            raise ValueError(f"answer {row[5]!r:.20} is not one of A, B, C, D")
          context = (f"The following is a question about {subject}.\n\n" + _qa(row[0]))
          out.append(_item(context, [" " + o.strip() for o in row[1:5]], "ABCD".index(letter)))
        except ValueError as e:
          skips.bad(lineno, str(e))
  except OSError as e:
    raise UserError(f"{path}: cannot open ({e.strerror or e}); check the path") from None
  except (UnicodeDecodeError, csv.Error) as e:
    raise UserError(f"{path}: not a readable UTF-8 CSV ({e}); fix the file") from None
  skips.finish("fix the file")
  return out


def read_mmlu(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE) -> list[Item]:
  """MMLU's CSVs: one `<subject>_test.csv`, or a directory of `*.csv` read in name order."""
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.endswith(".csv"))
    if not names:
      raise UserError(f"{path}: no .csv files in the directory; point at MMLU's data/test")
    return [it for n in names for it in _mmlu_file(os.path.join(path, n), max_bad_share)]
  return _mmlu_file(path, max_bad_share)


def _lambada(obj: dict) -> Item:
  text = records.string(obj, "text").rstrip()
  cut = text.rfind(" ")
  if cut <= 0:
    raise ValueError("'text' has no last word to predict (no space in it)")
  return Item(text[:cut], (text[cut:],), 0)


def read_lambada(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE) -> list[Item]:
  return _jsonl(path, _lambada, max_bad_share)


def _hellaswag(obj: dict) -> Item:
  ctx = records.string(obj, "ctx")
  endings = obj.get("endings")
  if not isinstance(endings, list) or not all(isinstance(e, str) for e in endings):
    raise ValueError("'endings' is not a list of strings")
  return _item(ctx.rstrip(), [" " + e.strip() for e in endings], records.integer(obj, "label"))


def read_hellaswag(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE) -> list[Item]:
  return _jsonl(path, _hellaswag, max_bad_share)


def _choices(choices) -> list[tuple[str, str]]:
  """(label, text) from ARC's [{"text", "label"}] or the {"text": [...], "label": [...]} form."""
  if isinstance(choices, dict):
    texts, labels = choices.get("text"), choices.get("label")
    if not isinstance(texts, list) or not isinstance(labels, list) or len(texts) != len(labels):
      raise ValueError("'choices' needs 'text' and 'label' lists of one length")
    choices = [{"text": t, "label": l} for t, l in zip(texts, labels)]
  if not isinstance(choices, list) or not choices:
    raise ValueError("'choices' is not a non-empty list")
  out = []
  for c in choices:
    if not isinstance(c, dict):
      raise ValueError("a choice is not an object")
    out.append((records.string(c, "label").strip(), records.string(c, "text")))
  return out


def _arc(obj: dict) -> Item:
  q = obj.get("question")
  if isinstance(q, dict):
    stem, choices = records.string(q, "stem"), q.get("choices")
  elif "question_stem" in obj:
    stem, choices = records.string(obj, "question_stem"), obj.get("choices")
  else:
    raise ValueError("no 'question' object and no 'question_stem'")
  pairs = _choices(choices)
  key = records.string(obj, "answerKey").strip()
  labels = [l for l, _ in pairs]
  if key not in labels:
    raise ValueError(f"answerKey {key!r:.10} is not among the labels {labels}")
  return _item(_qa(stem), [" " + t.strip() for _, t in pairs], labels.index(key))


def read_arc(path: str, max_bad_share: float = DEFAULT_MAX_BAD_SHARE) -> list[Item]:
  return _jsonl(path, _arc, max_bad_share)


read_openbookqa = read_arc  # the same shape, and the question_stem variant, in one parser

_DETAIL_STARTS = ("First, get the", "Then use the", "Next, check the", "You will want a good",
                  "Do not forget the")


def synthetic_probe(n: int = 200, seed: int = 0, options: int = 4,
                    avoid: frozenset[str] = frozenset()) -> tuple[list[Item], int]:
  """(items, how many were passed over): the synthetic capability probe (see the module
  docstring), seeded and deterministic. An item whose prompt (the framed request up to the
  Assistant marker) has its digest in `avoid` (a run's training contexts, `data/fresh.py`)
  is passed over and another drawn."""
  from hh_jax.data import fresh, synthetic  # pylint: disable=g-import-not-at-top
  rng = random.Random(f"capability/{seed}")
  out, excluded = [], 0
  while len(out) < n:
    topic = rng.choice(synthetic.TOPICS)
    request = synthetic.frame_request(rng, rng.choice(topic.benign))
    others = rng.sample([t for t in synthetic.TOPICS if t.name != topic.name], options - 1)
    words = [rng.choice(topic.details)] + [rng.choice(t.details) for t in others]
    order = list(range(options))
    rng.shuffle(order)
    prompt = f"{HUMAN} {request}{ASSISTANT}"
    if fresh.digest(prompt) in avoid:
      excluded += 1
      if excluded > 100 * (n + 1):
        raise UserError("the synthetic capability probe finds no item outside the run's "
                        "training contexts; lower capability_items")
      continue
    out.append(Item(f"{prompt} {rng.choice(_DETAIL_STARTS)}",
                    tuple(f" {words[i]}." for i in order), order.index(0)))
  return out, excluded


def recall_probe(n: int = 500, seed: int = 0, options: int = 4,
                 avoid: frozenset[str] = frozenset()) -> tuple[list[Item], int]:
  """(items, how many were passed over): `n` distinct fact-recall items (see the module
  docstring), seeded. An item is a fact dialogue up to the Assistant's answer prefix
  ("... Greta's dog is called"); its options are the fact's value and `options` − 1 other
  values of the same slot, shuffled. Every one of the `synthetic.FACTS` is asked equally
  often (item j asks the j-th of a seeded cycle through them), so the accuracy is over the
  whole table, none weighted by chance, and only the dialogues around the questions are
  sampled. A dialogue whose recall prompt has its digest in `avoid` (the LM corpus's fact
  dialogues, `data/fresh.py`) or came before is passed over and redrawn."""
  from hh_jax.data import fresh, synthetic  # pylint: disable=g-import-not-at-top
  rng = random.Random(f"recall/{seed}")
  slots = {s.name: s for s in synthetic.FACT_SLOTS}
  facts = sorted(synthetic.FACTS)
  rng.shuffle(facts)
  out, seen, excluded, draws = [], set(), 0, 0
  while len(out) < n:
    draws += 1
    if draws > 100 * (n + 1):
      raise UserError(f"the recall probe finds no new item after {len(out)}; lower its size")
    fact = synthetic.fact_dialogue(rng, fact=facts[len(out) % len(facts)])
    values = [fact.value] + rng.sample([v for v in slots[fact.slot].values if v != fact.value],
                                       options - 1)
    order = list(range(options))
    rng.shuffle(order)
    d = fresh.digest(fact.prompt)
    if d in avoid:
      excluded += 1
      continue
    if d in seen:
      continue
    seen.add(d)
    out.append(Item(f"{fact.prompt} {fact.answer_prefix}",
                    tuple(f" {values[i]}." for i in order), order.index(0)))
  return out, excluded


def synthetic_items(n: int = 200, seed: int = 0, options: int = 4,
                    avoid: frozenset[str] = frozenset()) -> list[Item]:
  """The synthetic capability probe's items (`synthetic_probe`)."""
  return synthetic_probe(n, seed, options, avoid)[0]


def item_prompt(item: Item) -> str:
  """A synthetic item's prompt: its context up to the Assistant marker (what a run's
  training contexts are compared with)."""
  return item.context[:item.context.rindex(ASSISTANT) + len(ASSISTANT)]


READERS: dict[str, Callable[..., list[Item]]] = {
    "mmlu": read_mmlu, "lambada": read_lambada, "hellaswag": read_hellaswag, "arc": read_arc,
    "openbookqa": read_openbookqa, "obqa": read_openbookqa}
GREEDY = ("lambada",)  # formats scored by greedy last-word accuracy


SYNTHETIC_TASKS = ("synthetic", "recall")  # probes built from the synthetic world


def task_format(name: str, source: str) -> str:
  """The format a task name picks: its first `_`/`-` part (`arc_challenge` is ARC); the
  synthetic probes by name (`recall`), any other name with source "synthetic" the topic one."""
  if name in SYNTHETIC_TASKS:
    return name
  if source == "synthetic":
    return "synthetic"
  key = name.lower().replace("-", "_").split("_")[0]
  if key not in READERS:
    raise UserError(f"task {name!r}: unknown format; name it after one of "
                    f"{sorted(READERS) + ['synthetic']} (e.g. arc_easy:PATH)")
  return key


def read_task(name: str, source: str, synthetic_n: int = 200, seed: int = 0,
              synthetic_avoid: frozenset[str] = frozenset()) -> list[Item]:
  fmt = task_format(name, source)
  if fmt == "synthetic":
    return synthetic_items(synthetic_n, seed, avoid=synthetic_avoid)
  if fmt == "recall":
    return recall_probe(synthetic_n, seed, avoid=synthetic_avoid)[0]
  if files.is_remote(source):
    raise UserError(f"task {name!r}: {source} is remote; copy the file to local disk first")
  if not os.path.exists(source):
    raise UserError(f"task {name!r}: {source} does not exist; check the path")
  items = READERS[fmt](source)
  if not items:
    raise UserError(f"task {name!r}: no questions in {source}")
  return items


# ---------------------------------------------------------------------------------------
# Scoring.


def score_items(items: Sequence[Item], loglik: LogLik, greedy: bool = False) -> dict:
  """{"accuracy", "accuracy_norm", "n", "chance"} of `items` under `loglik`.

  greedy: LAMBADA's rule (the one option must be produced greedily); accuracy_norm None.
  """
  reqs = [(it.context, o) for it in items for o in it.options]
  lp, top = loglik(reqs)
  lp, top = np.asarray(lp, np.float64), np.asarray(top, bool)  # [options in all items]
  if greedy:
    correct = [int(top[i]) for i in range(len(items))]
    acc = float(np.mean(correct)) if items else 0.0
    return {"accuracy": acc, "accuracy_norm": None, "n": len(items), "chance": None,
            "se": binomial_se(acc, len(items)), "correct": correct}
  correct, right_norm = [], 0
  k = 0
  for it in items:
    n_opt = len(it.options)
    s = lp[k:k + n_opt]                                                   # [options]
    per_byte = s / np.asarray([max(1, len(o.encode())) for o in it.options])  # [options]
    correct.append(int(np.argmax(s) == it.answer))
    right_norm += int(np.argmax(per_byte) == it.answer)
    k += n_opt
  n = len(items)
  acc = sum(correct) / n if n else 0.0
  return {"accuracy": acc, "accuracy_norm": right_norm / n if n else 0.0,
          "n": n, "chance": float(np.mean([1 / len(it.options) for it in items])) if n else 0.0,
          "se": binomial_se(acc, n), "correct": correct}


def binomial_se(accuracy: float, n: int) -> float:
  """The standard error of an accuracy over n independent items, √(p(1 − p)/n)."""
  return math.sqrt(accuracy * (1.0 - accuracy) / n) if n else math.nan


def _bucket(n: int, cap: int) -> int:
  b = MIN_BUCKET
  while b < n:
    b *= 2
  return min(b, cap)


class LMLogLik:
  """The real `LogLik`: continuation log-probs from an LM's params, batched and jitted.

  Each request is `[EOS] + encode(context + continuation)` (EOS is what separates documents
  in pretraining, so it is the start-of-text the model knows); the continuation's tokens are
  those after `encode(context)` when that is a prefix of the whole, else after their longest
  common prefix. A too-long request keeps its end. Rows are sorted by length, right-padded
  to a power-of-two bucket (at most the model's max_len) and a fixed batch size: one compile
  per bucket.
  """

  def __init__(self, model_cfg, params, tokenizer, batch_size: int = 16, mesh=None):
    from hh_jax.model.transformer import Transformer  # pylint: disable=g-import-not-at-top
    from hh_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    self._mesh_lib = mesh_lib
    self.mesh = mesh if mesh is not None else mesh_lib.one_device_mesh()
    div = mesh_lib.batch_size_divisor(self.mesh)
    self.batch_size = -(-batch_size // div) * div
    self.params, self.tokenizer = params, tokenizer
    self.max_len = int(model_cfg.max_len)
    self._sh = mesh_lib.batch_sharding(self.mesh, 2)
    model = Transformer(model_cfg)

    def score(params, tokens, mask, targets, tmask):
      logits = model.apply({"params": params}, tokens, mask)["logits"]  # [batch, len, vocab]
      logp = jax.nn.log_softmax(logits, axis=-1)
      lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [batch, len]
      on = tmask > 0
      hit = jnp.argmax(logits, axis=-1) == targets                          # [batch, len]
      return jnp.sum(jnp.where(on, lp, 0.0), -1), jnp.all(hit | ~on, -1)  # [batch] each

    self._score = jax.jit(score)

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = 16, step: int | None = None,
                   mesh=None) -> "LMLogLik":
    from hh_jax.model import params as params_lib  # pylint: disable=g-import-not-at-top
    model_cfg, params, tok = params_lib.load_lm(workdir, mesh, step)
    return cls(model_cfg, params, tok, batch_size, mesh)

  def encode(self, context: str, continuation: str) -> tuple[list[int], int]:
    """(ids, start): ids[start:] are the continuation's tokens; len(ids) <= max_len + 1."""
    eos = self.tokenizer.eos_id
    ctx = [eos] + list(self.tokenizer.encode(context))
    ids = [eos] + list(self.tokenizer.encode(context + continuation))
    if ids[:len(ctx)] == ctx:
      start = len(ctx)
    else:
      start = next((i for i, (x, y) in enumerate(zip(ctx, ids)) if x != y), len(ids) - 1)
    start = min(start, len(ids) - 1)  # at least one token scored
    cut = max(0, len(ids) - 1 - self.max_len)
    return ids[cut:], max(1, start - cut)

  def __call__(self, requests: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    enc = [self.encode(c, o) for c, o in requests]
    order = np.argsort([len(ids) for ids, _ in enc], kind="stable")
    lp_out = np.zeros((len(enc),), np.float32)  # [n]
    top_out = np.zeros((len(enc),), bool)       # [n]
    bs = self.batch_size
    with self._mesh_lib.activate(self.mesh):
      for lo in range(0, len(enc), bs):
        idx = order[lo:lo + bs]
        width = _bucket(max(len(enc[i][0]) - 1 for i in idx), self.max_len)
        tokens = np.zeros((bs, width), np.int32)   # [batch, bucket]
        targets = np.zeros((bs, width), np.int32)  # [batch, bucket]
        mask = np.zeros((bs, width), np.int32)     # [batch, bucket]
        tmask = np.zeros((bs, width), np.int32)    # [batch, bucket]: continuation targets
        mask[:, 0] = 1  # padding rows see one token, so no row is all masked
        for r, i in enumerate(idx):
          ids, start = enc[i]
          n = len(ids) - 1
          tokens[r, :n], targets[r, :n], mask[r, :n] = ids[:-1], ids[1:], 1
          tmask[r, start - 1:n] = 1
        put = lambda x: jax.device_put(x, self._sh)  # noqa: E731
        lp, top = self._score(self.params, put(tokens), put(mask), put(targets), put(tmask))
        lp_out[idx] = np.asarray(jax.device_get(lp))[:len(idx)]
        top_out[idx] = np.asarray(jax.device_get(top))[:len(idx)]
    return lp_out, top_out


def evaluate(workdir: str | None, tasks: Mapping[str, str], batch_size: int = 16,
             limit: int | None = None, loglik: LogLik | None = None, synthetic_n: int = 200,
             seed: int = 0, step: int | None = None,
             synthetic_avoid: frozenset[str] = frozenset(),
             recall_n: int | None = None) -> dict[str, dict]:
  """{task: {"accuracy", "accuracy_norm", "n", "chance"}} for a run (or an injected loglik).

  tasks: {name: local path, or "synthetic"}; the name picks the format (`task_format`).
  limit: at most this many questions per task (the first ones), for quick looks.
  synthetic_avoid: context digests the synthetic probes' prompts must not be (a run's
  training contexts: `hh_jax.data.fresh`). recall_n: the recall probe's size (default
  synthetic_n).
  """
  if not tasks:
    raise UserError("no tasks; pass e.g. --task=synthetic or --task=mmlu:PATH")
  sizes = {"recall": synthetic_n if recall_n is None else recall_n}
  read = {name: read_task(name, src, sizes.get(task_format(name, src), synthetic_n), seed,
                          frozenset(synthetic_avoid))
          for name, src in tasks.items()}
  if loglik is None:
    if workdir is None:
      raise UserError("evaluate needs a workdir (an LM or policy run) or a loglik function")
    loglik = LMLogLik.from_workdir(workdir, batch_size, step)
  out = {}
  for name, items in read.items():
    items = items[:limit] if limit else items
    out[name] = score_items(items, loglik, greedy=task_format(name, tasks[name]) in GREEDY)
  return out


def tax(results: Mapping[str, Mapping[str, dict]], baseline: str
        ) -> dict[str, dict[str, float]]:
  """{model: {task: accuracy − the baseline's accuracy}} for every other model and every
  task both have: negative when RLHF cost capability (the alignment tax), positive when it
  helped."""
  if baseline not in results:
    raise UserError(f"baseline {baseline!r} is not among {sorted(results)}")
  base = {t: r["accuracy"] for t, r in results[baseline].items()}
  return {m: {t: r["accuracy"] - base[t] for t, r in res.items()
              if t in base and r.get("accuracy") is not None}
          for m, res in results.items() if m != baseline}


Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def paired_tax(results: Mapping[str, Mapping[str, dict]], baseline: str, z: float = Z95
               ) -> dict[str, dict[str, dict]]:
  """{model: {task: {"tax", "se", "lo", "hi", "n"}}}: each model's accuracy minus the
  baseline's on the same items, with the standard error of the mean per-item difference
  (d_i = correct_model,i − correct_baseline,i; se = sd(d)/√n, paired because both answered
  every item) and the normal interval tax ± z·se. Tasks whose results lack per-item outcomes
  (`correct`) or whose items differ in number are left out."""
  if baseline not in results:
    raise UserError(f"baseline {baseline!r} is not among {sorted(results)}")
  out = {}
  for m, res in results.items():
    if m == baseline:
      continue
    out[m] = {}
    for t, r in res.items():
      base = results[baseline].get(t, {})
      if "correct" not in r or "correct" not in base or len(r["correct"]) != len(base["correct"]):
        continue
      d = np.asarray(r["correct"], np.float64) - np.asarray(base["correct"], np.float64)  # [n]
      n = len(d)
      se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
      mean = float(d.mean()) if n else math.nan
      out[m][t] = {"tax": mean, "se": se, "lo": mean - z * se, "hi": mean + z * se, "n": n}
  return out


def tax_table(results: Mapping[str, Mapping[str, dict]], baseline: str) -> str:
  """Markdown: accuracy per task (rows) and model (columns), with each model's change from
  `baseline` (`tax`: the alignment tax when negative). Where the results carry per-item
  outcomes, accuracy ± its binomial standard error and the change with its paired 95%
  interval (`paired_tax`)."""
  change = tax(results, baseline)
  paired = paired_tax(results, baseline)
  models = list(results)
  tasks = list(results[baseline])
  lines = ["| task | n | " + " | ".join(models) + " |",
           "| --- | --- | " + " | ".join("---" for _ in models) + " |"]
  for t in tasks:
    cells = []
    for m in models:
      r = results[m].get(t, {})
      acc = r.get("accuracy")
      se = f" ± {r['se']:.3f}" if r.get("se") is not None and "correct" in r else ""
      if acc is None:
        cells.append("–")
      elif m == baseline:
        cells.append(f"{acc:.3f}{se}")
      elif t in paired.get(m, {}):
        p = paired[m][t]
        cells.append(f"{acc:.3f}{se} ({p['tax']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}])")
      else:
        cells.append(f"{acc:.3f} ({change[m][t]:+.3f})")
    lines.append(f"| {t} | {results[baseline][t]['n']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _parse_task(spec: str) -> tuple[str, str]:
  name, sep, path = spec.partition(":")
  if not sep:
    if name not in SYNTHETIC_TASKS:
      raise UserError(f"--task={spec}: give NAME:PATH (e.g. mmlu:data/test), 'synthetic' or "
                      "'recall'")
    return name, "synthetic"
  if not name or not path:
    raise UserError(f"--task={spec}: give NAME:PATH (e.g. mmlu:data/test)")
  return name, path


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m hh_jax.eval.capabilities",
                              description="Zero-shot capability evals of an LM/policy run.")
  p.add_argument("--workdir", required=True, help="an LM, distill or PPO run")
  p.add_argument("--task", action="append", default=[],
                 help="NAME:PATH (mmlu, lambada, hellaswag, arc*, openbookqa*), 'synthetic' or "
                      "'recall'")
  p.add_argument("--limit", type=int, default=None, help="questions per task at most")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--synthetic_n", type=int, default=200)
  p.add_argument("--out", default="", help="also write the JSON here (e.g. RUN/capabilities.json)")
  args = p.parse_args(argv)
  try:
    tasks = dict(_parse_task(t) for t in (args.task or ["synthetic"]))
    res = evaluate(args.workdir, tasks, args.batch_size, args.limit,
                   synthetic_n=args.synthetic_n)
  except UserError as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  text = json.dumps(res, indent=2, sort_keys=True)
  print(text)
  if args.out:
    files.write_text(args.out, text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
