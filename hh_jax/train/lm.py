"""Language-model pretraining: next-token loss on a dialogue corpus.

`loss_fn` and `train_step` are pure and importable (a notebook can run them on a CPU);
`run` is the stage: tokenizer, mesh, born-sharded state or resume, the compiled step, and
the loop. Gradient accumulation happens inside the step (a `lax.scan` over micro-batches),
so one step is one optimizer update whatever the accumulation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hh_jax import files
from hh_jax.data import lm_data, tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.model import flops, params as params_lib
from hh_jax.model.transformer import Transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.train import optimizer as optim_lib
from hh_jax.train import runner

BATCH_NDIMS = {"inputs": 2, "targets": 2, "mask": 2}


def token_nll(logits, targets):
  """Per-token negative log-likelihood. logits [batch, seq, vocab], targets [batch, seq]."""
  logits = logits.astype(jnp.float32)
  # logsumexp minus a one-hot dot rather than a gather: the gradient is then dense
  # (softmax − one_hot), which fuses, instead of a scatter into [batch, seq, vocab].
  picked = jnp.sum(logits * jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype), -1)
  return jax.nn.logsumexp(logits, axis=-1) - picked  # [batch, seq]


def loss_fn(params, batch, model, normalizer):
  """Sum of masked NLL divided by `normalizer` (the whole batch's token count)."""
  out = model.apply({"params": params}, batch["inputs"])
  nll = token_nll(out["logits"], batch["targets"])  # [batch, seq]
  w = batch["mask"].astype(jnp.float32)
  return jnp.sum(nll * w) / normalizer


def _split_micro(x, accum):
  # Row r goes to micro-batch r % accum, so each data shard feeds every micro-batch.
  return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)  # [accum, micro, ...]


def make_train_step(model, accum_steps: int = 1):
  """Returns the pure `train_step(state, batch) -> (state, metrics)` for `model`."""

  def train_step(state, batch):
    normalizer = jnp.maximum(jnp.sum(batch["mask"].astype(jnp.float32)), 1.0)
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, model=model, normalizer=normalizer))
    if accum_steps == 1:
      loss, grads = grad_fn(state.params, batch)
    else:
      micro = jax.tree.map(functools.partial(_split_micro, accum=accum_steps), batch)

      def body(carry, mb):
        loss, grads = grad_fn(state.params, mb)
        return jax.tree.map(jnp.add, carry, (loss, grads)), None

      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(body, zeros, micro)
    new_state, skipped = state.apply_gradients_if_finite(grads, loss)
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), "tokens": normalizer,
               "nonfinite_steps": skipped}
    return new_state, metrics

  return train_step


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def make_eval_fn(model, eval_batches, mesh):
  """Mean held-out loss over a fixed list of batches (same every time, so curves compare)."""
  sh = {k: mesh_lib.batch_sharding(mesh, nd) for k, nd in BATCH_NDIMS.items()}

  @jax.jit
  def nll_sum(params, batch):
    return loss_fn(params, batch, model, 1.0), jnp.sum(batch["mask"])

  def evaluate(state):
    total, count = 0.0, 0.0
    for b in eval_batches:
      s, n = jax.device_get(nll_sum(state.params, runner.to_global(b, sh)))
      total, count = total + float(s), count + float(n)
    return {"eval_loss": total / max(count, 1.0)}

  return evaluate


def corpus_texts(data_cfg, seed: int) -> list[str]:
  if data_cfg.corpus == "synthetic":
    from hh_jax.data import synthetic
    return synthetic.lm_corpus(data_cfg.num_dialogues, seed)
  if data_cfg.corpus == "text_files":
    paths = [p for p in str(data_cfg.text_files).split(",") if p]
    if not paths:
      raise UserError("data.corpus='text_files' needs --config.data.text_files=PATH[,PATH]")
    return lm_data.read_text_files(paths)
  raise UserError(f"data.corpus={data_cfg.corpus!r}; use 'synthetic' or 'text_files'")


def record_fact_prompts(workdir, data_cfg, texts) -> None:
  """The synthetic corpus's fact dialogues up to their recall, recorded as training contexts
  (`data/fresh.py`), so the recall probe's items are none of them."""
  if data_cfg.corpus == "synthetic":
    from hh_jax.data import fresh, synthetic  # pylint: disable=g-import-not-at-top
    fresh.record(workdir, fresh.TRAIN, "fact_prompts", synthetic.fact_prompts(texts))


def validate(config) -> None:
  runner.validate_model(config.model)
  if config.data.seq_len > config.model.max_len and config.model.pos_embedding == "learned":
    raise UserError(f"data.seq_len={config.data.seq_len} exceeds model.max_len="
                    f"{config.model.max_len}; lower data.seq_len")
  if "lm" not in config.model.heads:
    raise UserError("the LM stage needs model.heads to include 'lm'")


def build_data(config, workdir, tok):
  texts = corpus_texts(config.data, config.seed)
  record_fact_prompts(workdir, config.data, texts)
  n_eval = int(len(texts) * config.data.eval_fraction)
  train_docs, eval_docs = texts[n_eval:], texts[:n_eval]
  train_stream = lm_data.pack(tok.encode_batch(train_docs), tok.eos_id)
  batches = lm_data.LMBatches(train_stream, config.data.batch_size, config.data.seq_len,
                              config.seed)
  eval_batches = []
  if eval_docs and config.train.eval_batches:
    eval_stream = lm_data.pack(tok.encode_batch(eval_docs), tok.eos_id)
    if len(eval_stream) > config.data.seq_len + 2:
      held = lm_data.LMBatches(eval_stream, config.data.batch_size, config.data.seq_len,
                               config.seed + 1)
      eval_batches = [held.batch(i) for i in range(config.train.eval_batches)]
  return batches, eval_batches


def run(config, workdir: str):
  """The LM stage; returns the final state. Rerun on the same workdir to resume.

  With `init.workdir` (an imported Hugging Face run, or an earlier LM) the stage continues
  that model on this corpus: its architecture, its tokenizer and its weights, so pretraining
  on hh-rlhf transcripts can start from an open model rather than from scratch.
  """
  init = config.init.workdir if "init" in config else ""
  if init:
    src_tok = files.join(files.abspath(init), tok_lib.FILENAME)
    if not files.exists(files.join(files.abspath(init), "config.json")) or not files.exists(src_tok):
      raise UserError(f"init.workdir={init} is not an LM run (no config.json and "
                      f"{tok_lib.FILENAME}); import one with `python -m hh_jax.interop.hf import`")
    with config.unlocked():
      config.model = params_lib.model_from_run(config.model, init)
      config.data.tokenizer_path = config.data.tokenizer_path or src_tok
  validate(config)
  stage = runner.open_stage(config, workdir)
  workdir = stage.workdir
  stage.write_config()

  tok = tok_lib.load_or_train(workdir, lambda: corpus_texts(config.data, config.seed),
                              config.data.tokenizer_vocab, config.data.tokenizer_path or None)
  if tok.vocab_size > config.model.vocab_size:
    raise UserError(f"tokenizer has {tok.vocab_size} pieces but model.vocab_size="
                    f"{config.model.vocab_size}; raise model.vocab_size or use a smaller tokenizer")
  if config.data.tokenizer_path:
    stage.save_tokenizer(tok)  # later stages find it here
  batches, eval_batches = build_data(config, workdir, tok)

  model = Transformer(config.model)
  total = config.train.total_steps
  tx = optim_lib.make(config.optim, total)
  example = jnp.zeros((config.data.batch_size, config.data.seq_len), jnp.int32)  # [batch, seq]
  state, shardings, resumed = stage.init_or_restore(model, tx, example, batches=batches)
  if init and not resumed:  # the source's weights, each into its shards
    state, fresh = runner.init_params_from(state, files.abspath(init))
    if fresh:
      raise UserError(f"init.workdir={init} lacks {', '.join(fresh)} of the LM; point it at an "
                      "LM or imported run")
    print(f"lm: continuing {init}", flush=True)

  step_fn = make_train_step(model, config.optim.grad_accum_steps)
  tokens_per_step = config.data.batch_size * config.data.seq_len
  with mesh_lib.activate(stage.mesh):
    compiled, batch_sh = runner.compile_step(step_fn, shardings, stage.mesh, BATCH_NDIMS)
    eval_fn = make_eval_fn(model, eval_batches, stage.mesh) if eval_batches else None
    state = stage.train_loop(
        state=state, step_fn=compiled, batches=batches, batch_shardings=batch_sh,
        total_steps=total, desc="lm", tokens_per_step=tokens_per_step,
        flops_per_step=flops.train_flops_per_token(config.model, config.data.seq_len)
        * tokens_per_step, eval_fn=eval_fn)
  stage.close()
  return state


__all__ = ["loss_fn", "make_train_step", "run", "token_nll", "np"]
