"""Preference models: PMP and PM finetuning share one objective and one stage.

A comparison is read twice by the same trunk, chosen then rejected, and scored by the
scalar head at each sequence's EOC token. The loss is the Bradley-Terry one of the paper,
−log σ(r_chosen − r_rejected), plus two optional terms: an LM loss on the chosen
transcript (weight `pm.lm_loss_weight`, which keeps the trunk a language model) and a
reward-centering term `pm.center_weight · (r_chosen + r_rejected)²`, which pins the
otherwise free offset of the reward near 0 so scores from different runs compare.

`loss_fn` and `train_step` are pure and importable; `run` is the stage for both
`config.stage == "pmp"` (pairs from StackExchange/Reddit/Wikipedia, binarized) and
`"pm"` (hh-rlhf files or the synthetic comparisons). Either starts from another stage's
workdir (`config.init.workdir`): every parameter the source has is restored into the
target's shards, anything else (the scalar head, coming from an LM) starts fresh.
"""
from __future__ import annotations

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hh_jax import checkpoint as ckpt_lib
from hh_jax import files
from hh_jax.data import fresh as fresh_lib
from hh_jax.data import hh_rlhf, pairs as pairs_lib, tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.eval import bow_baseline
from hh_jax.model import flops, params as params_lib
from hh_jax.model.transformer import Transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.train import lm as lm_lib
from hh_jax.train import optimizer as optim_lib
from hh_jax.train import runner

BATCH_NDIMS = {"tokens": 3, "mask": 3, "eoc_pos": 2}


def rewards(params, model, tokens, mask, eoc_pos):
  """Scalar head read at EOC. tokens, mask [batch, 2, seq], eoc_pos [batch, 2] -> [batch, 2]."""
  b, n, s = tokens.shape
  out = model.apply({"params": params}, tokens.reshape(b * n, s), mask.reshape(b * n, s))
  scalar = out["scalar"].reshape(b, n, s)  # [batch, 2, seq]
  r = jnp.take_along_axis(scalar, eoc_pos[..., None], axis=-1)[..., 0]  # [batch, 2]
  return r, out


def chosen_lm_weights(mask, eoc_pos):
  """Next-token targets that count in the LM loss: real tokens of the chosen transcript.

  mask [batch, 2, seq], eoc_pos [batch, 2] -> [batch, seq - 1]; EOC itself is never a
  target (it is appended by id, not text the LM should learn to write).
  """
  m = mask[:, 0]
  target_pos = jnp.arange(1, m.shape[-1])[None, :]  # [1, seq - 1]
  return (m[:, :-1] * m[:, 1:]).astype(jnp.float32) * (target_pos != eoc_pos[:, :1])


def loss_fn(params, batch, model, *, num_pairs, num_lm_tokens=1.0, lm_weight=0.0,
            center_weight=0.0):
  """Batch sums divided by the *global* normalizers, so micro-batches add up exactly.

  Returns (loss, aux) with aux holding sums that `train_step` turns into metrics.
  """
  r, out = rewards(params, model, batch["tokens"], batch["mask"], batch["eoc_pos"])
  margin = r[:, 0] - r[:, 1]  # [batch]
  pref = -jax.nn.log_sigmoid(margin)  # [batch]
  loss = jnp.sum(pref) / num_pairs
  aux = {"pref_loss": jnp.sum(pref),
         "accuracy": jnp.sum((margin > 0) + 0.5 * (margin == 0)),
         "margin": jnp.sum(margin),
         "reward_sum": jnp.sum(r), "reward_sq": jnp.sum(jnp.square(r))}
  if center_weight:
    center = jnp.sum(jnp.square(jnp.sum(r, axis=-1)))
    loss += center_weight * center / num_pairs
    aux["center_loss"] = center
  if lm_weight:
    b, n, s = batch["tokens"].shape
    logits = out["logits"].reshape(b, n, s, -1)[:, 0]  # [batch, seq, vocab], chosen only
    w = chosen_lm_weights(batch["mask"], batch["eoc_pos"])  # [batch, seq - 1]
    nll = jnp.sum(lm_lib.token_nll(logits[:, :-1], batch["tokens"][:, 0, 1:]) * w)
    loss += lm_weight * nll / num_lm_tokens
    aux["lm_loss"] = nll
  return loss, aux


def make_train_step(model, *, lm_weight: float = 0.0, center_weight: float = 0.0,
                    accum_steps: int = 1):
  """Returns the pure `train_step(state, batch) -> (state, metrics)` for `model`."""

  def train_step(state, batch):
    num_pairs = jnp.float32(batch["tokens"].shape[0])
    num_lm = (jnp.maximum(jnp.sum(chosen_lm_weights(batch["mask"], batch["eoc_pos"])), 1.0)
              if lm_weight else 1.0)
    grad_fn = jax.value_and_grad(functools.partial(
        loss_fn, model=model, num_pairs=num_pairs, num_lm_tokens=num_lm, lm_weight=lm_weight,
        center_weight=center_weight), has_aux=True)
    if accum_steps == 1:
      (loss, aux), grads = grad_fn(state.params, batch)
    else:
      micro = jax.tree.map(functools.partial(lm_lib._split_micro, accum=accum_steps), batch)

      def body(carry, mb):
        return jax.tree.map(jnp.add, carry, grad_fn(state.params, mb)), None

      zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                           jax.eval_shape(grad_fn, state.params,
                                          jax.tree.map(lambda x: x[0], micro)))
      ((loss, aux), grads), _ = jax.lax.scan(body, zeros, micro)
    new_state, skipped = state.apply_gradients_if_finite(grads, loss)
    grad_norm = lm_lib._global_norm(grads)  # pylint: disable=protected-access
    return new_state, {**summarize(loss, aux, num_pairs, num_lm, grad_norm),
                       "nonfinite_steps": skipped}

  return train_step


def summarize(loss, aux, num_pairs, num_lm_tokens=1.0, grad_norm=None):
  """Metric means from the sums of `loss_fn`'s aux."""
  mean_r = aux["reward_sum"] / (2 * num_pairs)
  m = {"loss": loss, "pref_loss": aux["pref_loss"] / num_pairs,
       "accuracy": aux["accuracy"] / num_pairs, "margin": aux["margin"] / num_pairs,
       "reward_mean": mean_r,
       "reward_std": jnp.sqrt(jnp.maximum(aux["reward_sq"] / (2 * num_pairs) - mean_r ** 2, 0.0))}
  if "lm_loss" in aux:
    m["lm_loss"] = aux["lm_loss"] / num_lm_tokens
  if "center_loss" in aux:
    m["center_loss"] = aux["center_loss"] / num_pairs
  if grad_norm is not None:
    m["grad_norm"] = grad_norm
  return m


def train_flops_per_token(model_cfg, seq_len: int) -> float:
  """The LM formula less the vocabulary projection when there is no LM head to run."""
  f = flops.train_flops_per_token(model_cfg, seq_len)
  return f if "lm" in model_cfg.heads else f - 6 * model_cfg.vocab_size * model_cfg.d_model


# ---------------------------------------------------------------------------------------
# The stage.


def model_config(config):
  """The ladder rung with the heads this objective needs (LM logits only when weighted)."""
  cfg = ml_collections.ConfigDict(config.model.to_dict())
  cfg.heads = ("lm", "scalar") if config.pm.lm_loss_weight else ("scalar",)
  return cfg


def validate(config) -> None:
  runner.validate_model(config.model)
  if config.data.seq_len > config.model.max_len and config.model.pos_embedding == "learned":
    raise UserError(f"data.seq_len={config.data.seq_len} exceeds model.max_len="
                    f"{config.model.max_len}; lower data.seq_len")
  if config.pm.lm_loss_weight < 0 or config.pm.center_weight < 0:
    raise UserError("pm.lm_loss_weight and pm.center_weight must be >= 0")


def _files(spec) -> list[str]:
  return [p for p in str(spec or "").split(",") if p]


def read_pair_files(paths, max_bad_share: float = hh_rlhf.DEFAULT_MAX_BAD_SHARE):
  out = []
  for path in paths:
    got, report = hh_rlhf.read_file(path, max_bad_share)
    print(f"pm: {report.summary()}", flush=True)
    out.extend(got)
  return out


SOURCES = ("synthetic", "hh_rlhf", "pmp")
HALVES = ("none", "first", "second")


def in_half(context: str, half: str) -> bool:
  """Whether a comparison on `context` belongs to `half` of the comparisons: "first" when
  the first hex digit of its normalised text's digest (`fresh.digest`) is below 8. A context
  is in one half only, so PMs trained on the two halves share no comparison (the paper's
  train PM and test PM); "none" keeps everything."""
  if half == "none":
    return True
  return (int(fresh_lib.digest(context)[0], 16) < 8) == (half == "first")


def _half(config) -> str:
  half = str(config.data.get("half", "none") or "none")
  if half not in HALVES:
    raise UserError(f"data.half={half!r}; use one of {', '.join(HALVES)}")
  return half


def synthetic_half(d, seed: int, half: str) -> list:
  """`d.num_train` synthetic comparisons of `half`: the seeded stream is read (a longer list
  of the same seed extends a shorter one) until that many fall in the half."""
  from hh_jax.data import synthetic_pairs  # pylint: disable=g-import-not-at-top
  want = int(d.num_train)
  drawn = want if half == "none" else 2 * want + 64
  while True:
    pool = synthetic_pairs.comparisons(drawn, seed, d.mixture, d.temperature)
    kept = [p for p in pool if in_half(p.context, half)]
    if len(kept) >= want:
      return kept[:want]
    drawn *= 2


def build_pairs(config, workdir):
  """(train pairs, held-out pairs) of the configured sources, concatenated.

  `data.source` may name several ("synthetic,hh_rlhf"): the online loop trains each new PM
  on the old comparisons (synthetic or published) plus the files it labeled since.
  """
  names = [s.strip() for s in str(config.data.source).split(",") if s.strip()]
  bad = [s for s in names if s not in SOURCES]
  if bad or not names:
    raise UserError(f"data.source={config.data.source!r}; use one or more of "
                    f"{', '.join(SOURCES)}, comma-separated")
  half = _half(config)
  train, held = [], []
  for name in names:
    t, h = source_pairs(config, workdir, name)
    train, held = train + [p for p in t if in_half(p.context, half)], held + h
  return train, held


def source_pairs(config, workdir, source: str):
  """(train pairs, held-out pairs) of one source."""
  d = config.data
  if source == "synthetic":
    from hh_jax.data import synthetic_pairs  # pylint: disable=g-import-not-at-top
    train = synthetic_half(d, config.seed, _half(config))
    held = synthetic_pairs.comparisons(d.num_eval, config.seed + 1000, d.mixture, 0.0)
    return train, held
  if source == "hh_rlhf":
    train_files = _files(d.train_files)
    if not train_files:
      raise UserError("data.source='hh_rlhf' needs --config.data.train_files=PATH[,PATH] "
                      "(hh-rlhf jsonl or jsonl.gz)")
    share = d.get("max_bad_share", hh_rlhf.DEFAULT_MAX_BAD_SHARE)
    train = read_pair_files(train_files, share)
    if _files(d.eval_files):
      held = read_pair_files(_files(d.eval_files), share)
    else:  # without eval files, a share of the training file (whole contexts) is held out
      fraction = d.get("eval_fraction", 0.0)
      if not 0 <= fraction < 1:
        raise UserError(f"data.eval_fraction={fraction:g}; use a share in [0, 1)")
      held, train = hh_rlhf.hold_out_contexts(train, round(fraction * len(train)),
                                              f"pm-heldout/{config.seed}")
      print(f"pm: no data.eval_files; held out {len(held)} of the {len(held) + len(train)} "
            f"training pairs (data.eval_fraction={fraction:g})", flush=True)
    if d.num_train and str(d.source).strip() == "hh_rlhf":  # with other sources: every file pair
      train = [p for p in train if in_half(p.context, _half(config))][:d.num_train]
    return train, held
  return pmp_pairs(config, workdir)


def pmp_pairs(config, workdir):
  """PMP pairs from the dumps named in config.data (or a synthetic Posts.xml), binarized."""
  from hh_jax.data import pmp  # pylint: disable=g-import-not-at-top
  d = config.data
  se_path = d.stackexchange
  if d.synthetic_questions and not se_path:
    from hh_jax.data import synthetic_pairs  # pylint: disable=g-import-not-at-top
    # The PMP readers parse local files: for a gs:// workdir each process writes its own
    # local copy (the text is a function of the seed, so every copy is the same).
    local = (tempfile.mkdtemp(prefix="hh_jax_pmp_") if files.is_remote(workdir) else workdir)
    se_path = os.path.join(local, "Posts.xml")
    if (files.is_remote(workdir) or jax.process_index() == 0) and not os.path.exists(se_path):
      with open(se_path, "w") as f:
        f.write(synthetic_pairs.stackexchange_posts_xml(d.synthetic_questions, config.seed))
  share = d.get("max_bad_share", pmp.DEFAULT_MAX_BAD_SHARE)
  sources = {"stackexchange": pmp.stackexchange_pairs(se_path, share) if se_path else [],
             "reddit": (pmp.reddit_pairs(d.reddit_comments, d.reddit_submissions or None,
                                         max_bad_share=share)
                        if d.reddit_comments else []),
             "wikipedia": pmp.wikipedia_pairs(d.wikipedia, share) if d.wikipedia else []}
  weights = {s: float(d.weights[s]) if sources[s] else 0.0 for s in sources}
  if not any(weights.values()):
    raise UserError("PMP has no pairs: set data.stackexchange / data.reddit_comments / "
                    "data.wikipedia, or data.synthetic_questions > 0")
  # Held out before mixing: mixing cycles a small source, and a cycled pair cut on both
  # sides of the split would make the held-out accuracy a training accuracy.
  train_sources, held = pmp.hold_out(sources, weights, d.num_pairs, d.eval_fraction,
                                     config.seed)
  num_train = d.num_pairs - len(held)
  if num_train < 1:
    raise UserError(f"data.num_pairs={d.num_pairs} leaves no training pairs after holding "
                    f"out {len(held)}; raise data.num_pairs or lower data.eval_fraction")
  for s, count in pmp.mixture_counts(train_sources, weights, num_train).items():
    n = len(train_sources[s])
    if count > n:
      print(f"pmp: {s} {n} pairs cycled {count / n:.1f}× (to {count} of {num_train})",
            flush=True)
  train = pmp.mix(train_sources, weights, num_train, config.seed)
  if d.binarize:
    train, held = pmp.binarize(train), pmp.binarize(held)
  return train, held


def load_tokenizer(config, workdir):
  """The source stage's tokenizer (ids must match its embedding), copied into this workdir."""
  own = files.join(workdir, tok_lib.FILENAME)
  if files.exists(own):
    return tok_lib.Tokenizer.load(own)
  src = config.data.get("tokenizer_path") or files.join(config.init.workdir, tok_lib.FILENAME)
  if not files.exists(src):
    raise UserError(f"no tokenizer at {src}; set --config.init.workdir to the LM/PMP workdir "
                    "this stage starts from")
  tok = tok_lib.Tokenizer.load(src)
  if jax.process_index() == 0:
    tok.save(own)
  return tok


def source_learning_rate(init_workdir: str) -> float | None:
  path = files.join(init_workdir, "config.json")
  if not files.exists(path):
    return None
  return float(files.read_json(path).get("optim", {}).get("learning_rate", 0.0)) or None


def learning_rate(config) -> float:
  """`optim.lr_fraction` × the source run's LR (the paper's recipe), else optim.learning_rate."""
  frac = config.optim.get("lr_fraction", 0.0)
  if frac and config.init.workdir:
    src = source_learning_rate(config.init.workdir)
    if src:
      return frac * src
  return config.optim.learning_rate


def make_score_fn(model, mesh):
  """Jitted rewards [batch, 2] for held-out batches, batch sharded like training."""
  sh = {k: mesh_lib.batch_sharding(mesh, nd) for k, nd in BATCH_NDIMS.items()}

  @jax.jit
  def score(params, batch):
    return rewards(params, model, batch["tokens"], batch["mask"], batch["eoc_pos"])[0]

  def run_batches(params, batches):
    out = [np.asarray(jax.device_get(score(params, runner.to_global(b, sh)))) for b in batches]
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

  return run_batches


def held_out_batches(pairs, tok, config, limit=None):
  """Fixed held-out batches (the last partial one dropped), same every evaluation."""
  bs, n = config.data.batch_size, len(pairs)
  n = n if limit is None else min(n, limit * bs)
  return [pairs_lib.encode_pairs(pairs[i:i + bs], tok, config.data.seq_len, config.data.pad_side)
          for i in range(0, n - bs + 1, bs)]


def held_out_metrics(r) -> dict:
  """Accuracy, preference loss and margin of rewards r [n, 2] (chosen, rejected)."""
  margin = r[:, 0] - r[:, 1]
  return {"eval_accuracy": float(np.mean((margin > 0) + 0.5 * (margin == 0))),
          "eval_pref_loss": float(np.mean(np.logaddexp(0.0, -margin))),
          "eval_margin": float(np.mean(margin)),
          "eval_pairs": int(len(margin))}  # the n of the accuracy's interval (report.md)


def make_eval_fn(score_fn, batches):
  return lambda state: held_out_metrics(score_fn(state.params, batches))


def save_reward_stats(workdir, step, r):
  """Mean/std of raw scores on a reference set, so scorers can normalize rewards to ~N(0, 1)."""
  flat = np.asarray(r, np.float64).ravel()
  stats = {"mean": float(flat.mean()), "std": float(max(flat.std(), 1e-6)),
           "num_scores": int(flat.size), "step": int(step)}
  runner.save_json(workdir, ckpt_lib.REWARD_STATS_FILE, stats)
  return stats


def run(config, workdir: str):
  """The PMP or PM stage; returns the final state. Rerun on the same workdir to resume."""
  if config.init.workdir:  # an imported / Llama-family source brings its own model config
    with config.unlocked():
      config.model = params_lib.model_from_run(config.model, config.init.workdir)
  validate(config)
  stage = runner.open_stage(config, workdir)
  workdir, mesh = stage.workdir, stage.mesh
  if not stage.resuming and not config.init.workdir:
    raise UserError(f"the {config.stage} stage starts from another stage's workdir: pass "
                    "--config.init.workdir=DIR (an LM or PMP run)")
  config.optim.learning_rate = learning_rate(config)  # same on a resume: a pure function
  stage.write_config()
  tok = load_tokenizer(config, workdir)
  if tok.vocab_size > config.model.vocab_size:
    raise UserError(f"tokenizer has {tok.vocab_size} pieces but model.vocab_size="
                    f"{config.model.vocab_size}; use the model size of the source run")

  train_pairs, held_pairs = build_pairs(config, workdir)
  if not train_pairs:
    raise UserError(f"no training comparisons in data.half={_half(config)!r} of "
                    f"data.source={config.data.source!r}; check the files or use data.half=none")
  # What this PM trained on, for the evaluations that must not score it (`data/fresh.py`).
  fresh_lib.record(workdir, fresh_lib.TRAIN, f"{config.stage}_comparisons",
               [p.context for p in train_pairs])
  batches = pairs_lib.PairIterator(train_pairs, tok, batch_size=config.data.batch_size,
                                   seq_len=config.data.seq_len, seed=config.seed,
                                   pad_side=config.data.pad_side)
  total = config.train.total_steps or config.train.num_epochs * batches.steps_per_epoch
  print(f"{config.stage}: {len(train_pairs)} train pairs (data.half={_half(config)}), "
        f"{len(held_pairs)} held out, "
        f"{total} steps of {config.data.batch_size} pairs", flush=True)

  model = Transformer(model_config(config))
  tx = optim_lib.make(config.optim, total)
  example = jnp.zeros((config.data.batch_size * 2, config.data.seq_len), jnp.int32)  # [2·batch, seq]
  state, shardings, resumed = stage.init_or_restore(model, tx, example, batches=batches)
  if not resumed:  # the trunk (and whatever else it shares) from the init run
    state, fresh = runner.init_params_from(state, config.init.workdir)
    print(f"{config.stage}: restored from {config.init.workdir}; fresh: "
          f"{', '.join(fresh) or 'nothing'}", flush=True)

  step_fn = make_train_step(model, lm_weight=config.pm.lm_loss_weight,
                            center_weight=config.pm.center_weight,
                            accum_steps=config.optim.grad_accum_steps)
  tokens_per_step = 2 * config.data.batch_size * config.data.seq_len
  with mesh_lib.activate(mesh):
    compiled, batch_sh = runner.compile_step(step_fn, shardings, mesh, BATCH_NDIMS)
    score_fn = make_score_fn(model, mesh)
    eval_batches = held_out_batches(held_pairs, tok, config, config.train.eval_batches or None)
    eval_fn = make_eval_fn(score_fn, eval_batches) if eval_batches else None
    state = stage.train_loop(
        state=state, step_fn=compiled, batches=batches, batch_shardings=batch_sh,
        total_steps=total, desc=config.stage, tokens_per_step=tokens_per_step,
        flops_per_step=train_flops_per_token(model.cfg, config.data.seq_len) * tokens_per_step,
        eval_fn=eval_fn)
    step = int(jax.device_get(state.step))
    if step >= total:
      ref = eval_batches or held_out_batches(train_pairs, tok, config, 8)
      r = score_fn(state.params, ref)  # [n, 2]
      stats = save_reward_stats(workdir, step, r)
      if eval_batches:
        final = held_out_metrics(r)
        # the bag-of-words bar on the very pairs scored (the last partial batch is dropped)
        final["bow"] = bow_baseline.beside_pm(r[:, 0] - r[:, 1], train_pairs,
                                              held_pairs[:len(r)])
        stage.save_json("final_eval.json", {**final, "step": step, "reward": stats})
        b = final["bow"]
        print(f"{config.stage}: step {step} held-out accuracy {final['eval_accuracy']:.4f}; "
              f"bag-of-words on the same {b['pairs']} pairs {b['bow_accuracy']:.4f}, "
              f"difference {b['difference']:+.4f} ± {b['difference_se']:.4f} (paired SE)",
              flush=True)
  stage.close()
  return state


__all__ = ["loss_fn", "make_train_step", "rewards", "run", "summarize", "in_half", "HALVES"]
