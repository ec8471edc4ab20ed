"""Context distillation: train the LM to act, without a prompt, as it does with the HHH prompt.

The teacher is the initial LM reading `hhh_prompt + dialogue`; the student is the same LM
reading the dialogue alone. At every dialogue token the student is trained toward the
teacher's next-token distribution, restricted to the teacher's top-k tokens (k = 50 in
the paper) and renormalised there: loss = KL(q_topk || p_student). The student's
checkpoint is the initial policy (and KL reference) for PPO.

The prompt is run once into a KV cache (`transformer.init_cache`); each step the teacher
reads the batch's dialogues after that cache, which gives the same logits as re-reading
the prompt (the sampler's tests pin that) at a fraction of the cost.

`loss_fn` / `make_train_step` are pure over a batch that already holds the teacher's top-k
(`teacher_logp`, `teacher_idx`), as a precomputed dataset would; `make_distill_step` puts
the teacher in front of it for the stage's loop.
"""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from hh_jax import files
from hh_jax.data import hhh_prompt, lm_data, synthetic
from hh_jax.errors import UserError
from hh_jax.model import params as params_lib, transformer
from hh_jax.model.transformer import Transformer
from hh_jax.parallel import mesh as mesh_lib
from hh_jax.train import lm as lm_lib
from hh_jax.train import optimizer as optim_lib
from hh_jax.train import runner

BATCH_NDIMS = {"tokens": 2, "mask": 2}


def prompt_cache(model, params, prompt_ids, seq_len: int):
  """The prompt [1, prompt_len] run into a cache with room for `seq_len` more tokens."""
  tokens = jnp.asarray(prompt_ids, jnp.int32)[None]  # [1, prompt_len]
  cache = transformer.init_cache(model.cfg, 1, tokens.shape[1] + seq_len)
  return model.apply({"params": params}, tokens, cache=cache, last_only=True)["cache"]


def teacher_logits(model, params, cache, tokens, mask):
  """Logits [batch, seq, vocab] of the dialogues read after the cached prompt."""
  batch = tokens.shape[0]
  rows = lambda a: jnp.broadcast_to(a, (batch,) + a.shape[1:])  # noqa: E731  [1, ...] -> [batch, ...]
  cache = {"k": tuple(map(rows, cache["k"])), "v": tuple(map(rows, cache["v"])),
           "mask": rows(cache["mask"]), "index": cache["index"]}
  return model.apply({"params": params}, tokens, mask, cache=cache)["logits"]


def teacher_topk(model, params, cache, tokens, mask, k: int):
  """The teacher's top-k log-probs and ids at each token, each [batch, seq, k]."""
  logp = jax.nn.log_softmax(teacher_logits(model, params, cache, tokens, mask), axis=-1)
  values, idx = jax.lax.top_k(logp, k)
  return {"teacher_logp": values, "teacher_idx": idx.astype(jnp.int32)}


def topk_kl(student_logits, teacher_logp, teacher_idx):
  """KL(q || p_student) per token [batch, seq], q = the teacher renormalised on its top-k."""
  logp_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  logp_s = jnp.take_along_axis(logp_s, teacher_idx, axis=-1)  # [batch, seq, k]
  logq = jax.nn.log_softmax(teacher_logp, axis=-1)  # renormalised over the k ids
  return jnp.sum(jnp.exp(logq) * (logq - logp_s), axis=-1)


def full_kl(student_logits, teacher_logits_):
  """KL(p_teacher || p_student) over the whole vocabulary, per token [batch, seq]."""
  lt = jax.nn.log_softmax(teacher_logits_.astype(jnp.float32), axis=-1)
  ls = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)


def loss_fn(params, batch, model):
  """Mean top-k KL over the batch's real tokens."""
  logits = model.apply({"params": params}, batch["tokens"], batch["mask"])["logits"]
  kl = topk_kl(logits, batch["teacher_logp"], batch["teacher_idx"])  # [batch, seq]
  w = batch["mask"].astype(jnp.float32)
  return jnp.sum(kl * w) / jnp.maximum(jnp.sum(w), 1.0)


def make_train_step(model):
  """`train_step(state, batch) -> (state, metrics)` on a batch holding the teacher's top-k."""

  def train_step(state, batch):
    loss, grads = jax.value_and_grad(functools.partial(loss_fn, model=model))(state.params, batch)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    state, skipped = state.apply_gradients_if_finite(grads, loss)
    return state, {"loss": loss, "grad_norm": grad_norm, "nonfinite_steps": skipped}

  return train_step


def make_distill_step(model, k: int):
  """step(state, batch, teacher_params, cache): the teacher's top-k, then `train_step`."""
  train_step = make_train_step(model)

  def step(state, batch, teacher_params, cache):
    top = teacher_topk(model, teacher_params, cache, batch["tokens"], batch["mask"], k)
    return train_step(state, {**batch, **jax.lax.stop_gradient(top)})

  return step


def encode_dialogues(tok, texts, seq_len: int):
  """tokens, mask [n, seq_len]: each dialogue + EOS from its start, right-padded."""
  tokens = np.zeros((len(texts), seq_len), np.int32)  # [n, seq]
  mask = np.zeros((len(texts), seq_len), np.int32)  # [n, seq]
  for i, ids in enumerate(tok.encode_batch(list(texts))):
    ids = (list(ids) + [tok.eos_id])[:seq_len]
    tokens[i, :len(ids)] = ids
    mask[i, :len(ids)] = 1
  return tokens, mask


class DialogueBatches:
  """Batch `i` draws rows with an RNG seeded by (seed, i): the state is just the position."""

  def __init__(self, tokens, mask, batch_size: int, seed: int):
    self.tokens, self.mask, self.batch_size, self.seed = tokens, mask, batch_size, seed
    self.position = 0

  def batch(self, step: int) -> dict:
    rows = np.random.default_rng([self.seed, step]).integers(0, len(self.tokens), self.batch_size)
    return {"tokens": self.tokens[rows], "mask": self.mask[rows]}  # each [batch, seq]

  def __next__(self):
    out = self.batch(self.position)
    self.position += 1
    return out

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: dict) -> None:
    self.position = int(state.get("position", 0))


def dialogue_texts(data_cfg, num: int, seed: int) -> list[str]:
  if data_cfg.corpus == "synthetic":
    return synthetic.lm_corpus(num, seed)
  if data_cfg.corpus == "text_files":
    paths = [p for p in str(data_cfg.text_files).split(",") if p]
    if not paths:
      raise UserError("data.corpus='text_files' needs --config.data.text_files=PATH[,PATH]")
    docs = lm_data.read_text_files(paths)
    return [docs[i] for i in np.random.default_rng(seed).permutation(len(docs))[:num]]
  raise UserError(f"data.corpus={data_cfg.corpus!r}; use 'synthetic' or 'text_files'")


def make_eval_fn(model, teacher_params, cache, tokens, mask, k: int, batch_size: int, mesh):
  """Mean full-vocabulary and top-k KL to the teacher on held-out dialogues."""
  sh = mesh_lib.batch_sharding(mesh, 2)

  @jax.jit
  def sums(params, teacher_params, cache, tokens, mask):
    t = teacher_logits(model, teacher_params, cache, tokens, mask)
    s = model.apply({"params": params}, tokens, mask)["logits"]
    lt = jax.nn.log_softmax(t, axis=-1)
    values, idx = jax.lax.top_k(lt, k)
    w = mask.astype(jnp.float32)
    return (jnp.sum(full_kl(s, t) * w), jnp.sum(topk_kl(s, values, idx) * w), jnp.sum(w))

  def evaluate(params):
    full = top = n = 0.0
    for lo in range(0, len(tokens) - batch_size + 1, batch_size):
      out = sums(params, teacher_params, cache, jax.device_put(tokens[lo:lo + batch_size], sh),
                 jax.device_put(mask[lo:lo + batch_size], sh))
      f, t, c = (float(x) for x in jax.device_get(out))
      full, top, n = full + f, top + t, n + c
    return {"eval_kl_full": full / max(n, 1.0), "eval_kl_topk": top / max(n, 1.0)}

  return evaluate


def validate(config, model_cfg, prompt_len: int) -> None:
  runner.validate_model(model_cfg)
  total = prompt_len + config.data.seq_len
  if model_cfg.pos_embedding == "learned" and total > model_cfg.max_len:
    raise UserError(f"the HHH prompt ({prompt_len} tokens) plus data.seq_len="
                    f"{config.data.seq_len} exceeds model.max_len={model_cfg.max_len}; "
                    "lower data.seq_len (or use distill.prompt=short)")
  if config.distill.top_k < 1:
    raise UserError(f"distill.top_k={config.distill.top_k}; use a positive count (50 in the paper)")


def run(config, workdir: str):
  """The distillation stage; returns (final state, eval dict). Reruns resume."""
  if not config.init.workdir:
    raise UserError("context distillation starts from an LM: pass "
                    "--config.init.workdir=LM_WORKDIR (or configs/distill.py:init=DIR)")
  stage = runner.open_stage(config, workdir)
  mesh = stage.mesh
  init_dir = files.abspath(config.init.workdir)
  model_cfg, teacher_params, tok = params_lib.load_lm(init_dir, mesh)
  prompt_ids = tok.encode(hhh_prompt.get(config.distill.prompt))
  validate(config, model_cfg, len(prompt_ids))
  with config.unlocked():
    config.model = model_cfg  # the student is the init run's model
  stage.write_config()
  stage.save_tokenizer(tok)

  seq_len, k = config.data.seq_len, config.distill.top_k
  train_texts = dialogue_texts(config.data, config.data.num_dialogues, config.data.seed)
  lm_lib.record_fact_prompts(stage.workdir, config.data, train_texts)  # the recall probe avoids them
  train_tok, train_mask = encode_dialogues(tok, train_texts, seq_len)
  eval_tok, eval_mask = encode_dialogues(
      tok, dialogue_texts(config.data, config.data.num_eval, config.data.seed + 1), seq_len)
  batches = DialogueBatches(train_tok, train_mask, config.data.batch_size, config.seed)

  model = Transformer(model_cfg)
  tx = optim_lib.make(config.optim, config.train.total_steps)
  example = jnp.zeros((config.data.batch_size, seq_len), jnp.int32)  # [batch, seq]
  # A fresh student starts as the LM itself (the teacher's params), not from a new init.
  state, shardings, resumed = stage.init_or_restore(model, tx, example, batches=batches,
                                                    init_params=teacher_params)

  with mesh_lib.activate(mesh):
    cache = jax.jit(functools.partial(prompt_cache, model, seq_len=seq_len))(
        teacher_params, np.asarray(prompt_ids, np.int32))
    step = jax.jit(make_distill_step(model, k), donate_argnums=(0,),
                   out_shardings=(shardings, mesh_lib.replicated(mesh)))
    eval_fn = make_eval_fn(model, teacher_params, cache, eval_tok, eval_mask, k,
                           config.data.batch_size, mesh)
    before = eval_fn(teacher_params)  # the undistilled LM, read without the prompt
    if not resumed:  # a rerun keeps the row its first run wrote, not a second copy
      stage.writer.write(0, {f"undistilled_{k_}": v for k_, v in before.items()})
    state = stage.train_loop(
        state=state, step_fn=lambda s, b: step(s, b, teacher_params, cache), batches=batches,
        batch_shardings={n: mesh_lib.batch_sharding(mesh, d) for n, d in BATCH_NDIMS.items()},
        total_steps=config.train.total_steps, desc="distill",
        tokens_per_step=config.data.batch_size * seq_len, eval_fn=lambda s: eval_fn(s.params))
    after = eval_fn(state.params)
  result = {"prompt": config.distill.prompt, "prompt_tokens": len(prompt_ids), "top_k": k,
            "eval_dialogues": int(len(eval_tok)), "step": int(jax.device_get(state.step)),
            "undistilled_kl_full": before["eval_kl_full"],
            "undistilled_kl_topk": before["eval_kl_topk"],
            "student_kl_full": after["eval_kl_full"], "student_kl_topk": after["eval_kl_topk"],
            "kl_ratio": after["eval_kl_full"] / max(before["eval_kl_full"], 1e-12)}
  stage.save_json("distill_eval.json", result)
  print(json.dumps(result), flush=True)
  stage.close()
  return state, result


__all__ = ["loss_fn", "make_train_step", "make_distill_step", "run"]
