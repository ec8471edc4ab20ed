"""The reward every later stage asks for: a trained PM that scores (context, response) texts.

The reward, stated once (`pm_reward`): the PM's score at the EOC after a reply that
stopped, normalized by the PM's reference mean/std (`normalize`), and `NO_STOP_PENALTY`
(or the run's `ppo.no_stop_penalty`) for a reply that never produced a stop token — the
"EOS trick", or rambling to the length limit would be safe. PPO's rollout
(`hh_jax.rl.rollout`) applies it to token ids, `PMScorer.reward` to texts with the
sampler's stop flags (`stopped_flags`), which travel with the texts from the sampler;
rejection sampling and online best-of-k pick by it, and the report shows its two parts (the
PM score of the replies that stopped, the stop rate) apart.

`PMScorer.from_workdir(pm_workdir)` loads the PM's config, tokenizer and latest params
(only the params: an orbax partial restore into the scorer's own shardings) and the
normalization statistics that the PM stage wrote beside its checkpoint. Scoring encodes
each `context + response` with EOC appended (keeping the end of a too-long dialogue),
pads to a power-of-two length bucket and a fixed batch size, so a sampler calling it
with ragged text triggers only a handful of compilations.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hh_jax import checkpoint as ckpt_lib
from hh_jax import files
from hh_jax.data import pairs as pairs_lib, tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.model import params as params_lib
from hh_jax.model.transformer import Transformer
from hh_jax.parallel import mesh as mesh_lib

MIN_BUCKET = 16
NO_STOP_PENALTY = -3.0  # the reward of a reply that never stopped (configs/ppo.py's default)


def normalize(raw, mean, std):
  """A raw PM score on the reward's scale: mean 0 / std 1 on the PM's reference set."""
  return (raw - mean) / std


def normalized_head(params: dict, mean: float, std: float) -> dict:
  """A PM's params whose scalar head outputs `normalize(raw, mean, std)`: the value model
  PPO copies from the PM starts on the reward's scale (kernel / std, (bias - mean) / std).

  Otherwise V starts off by a constant c that GAE turns into -c·(γλ)^(T-t) on the advantages,
  the full -c on the stop token: a push towards or away from stopping until V catches up.
  """
  head = params["scalar_head"]
  return {**params, "scalar_head": {**head, "kernel": head["kernel"] / std,
                                    "bias": (head["bias"] - mean) / std}}


def pm_reward(normalized, stopped, no_stop_penalty: float = NO_STOP_PENALTY):
  """The reward: the normalized PM score where the reply stopped, the penalty elsewhere.

  normalized, stopped: [n] (jax or numpy; the result is a jax array of float32).
  """
  return jnp.where(jnp.asarray(stopped, bool), jnp.asarray(normalized, jnp.float32),
                   jnp.float32(no_stop_penalty))


def stopped_flags(response, lengths, stop_ids):
  """Whether each sampled reply ended with a stop token: response [n, T] ids, lengths [n]
  (tokens produced, the stop token included) -> [n] bool. jax or numpy in, jax out."""
  response, lengths = jnp.asarray(response), jnp.asarray(lengths, jnp.int32)
  last = jnp.take_along_axis(response, jnp.maximum(lengths - 1, 0)[:, None], 1)[:, 0]
  return (lengths > 0) & jnp.isin(last, jnp.asarray(tuple(stop_ids), response.dtype))


def _bucket(n: int, seq_len: int) -> int:
  b = MIN_BUCKET
  while b < n:
    b *= 2
  return min(b, seq_len)


def scalar_model_config(model_cfg) -> ml_collections.ConfigDict:
  """The PM's rung with only the scalar head: the tied LM head adds no params, only FLOPs."""
  cfg = ml_collections.ConfigDict(dict(model_cfg))
  cfg.heads = ("scalar",)
  return cfg


class PMScorer:
  """Jitted batch scorer over a PM's params; `score` normalizes by the stored mean/std."""

  def __init__(self, model_cfg, params, tokenizer, seq_len: int, stats: dict | None,
               mesh=None, batch_size: int = 32, no_stop_penalty: float = NO_STOP_PENALTY):
    self.mesh = mesh if mesh is not None else mesh_lib.one_device_mesh()
    div = mesh_lib.batch_size_divisor(self.mesh)
    self.batch_size = -(-batch_size // div) * div
    self.model = Transformer(scalar_model_config(model_cfg))
    self.params = params
    self.tokenizer = tokenizer
    self.seq_len = int(seq_len)
    self.stats = dict(stats or {"mean": 0.0, "std": 1.0})
    self.no_stop_penalty = float(no_stop_penalty)
    self._sh = mesh_lib.batch_sharding(self.mesh, 2)
    self._sh1 = mesh_lib.batch_sharding(self.mesh, 1)
    model = self.model

    def score(params, tokens, mask, eoc_pos):
      out = model.apply({"params": params}, tokens, mask)  # scalar [batch, seq]
      return jnp.take_along_axis(out["scalar"], eoc_pos[:, None], axis=-1)[:, 0]  # [batch]

    self._score = jax.jit(score)

  @classmethod
  def from_workdir(cls, workdir: str, mesh=None, batch_size: int = 32, step: int | None = None,
                   seq_len: int | None = None,
                   no_stop_penalty: float = NO_STOP_PENALTY) -> "PMScorer":
    workdir = files.abspath(workdir)
    config = ckpt_lib.read_run_config(workdir, "point the scorer at a PM workdir")
    model_cfg = ml_collections.ConfigDict(config["model"])
    if "scalar" not in model_cfg.heads and config.get("stage") not in ("pm", "pmp"):
      raise UserError(f"{workdir} is a {config.get('stage')!r} run, not a PM; "
                      "point the scorer at a pm or pmp workdir")
    mesh = mesh if mesh is not None else mesh_lib.one_device_mesh()
    model = Transformer(scalar_model_config(model_cfg))
    params, missing = params_lib.restore_run_params(model, workdir, mesh, step)
    if missing:
      raise UserError(f"{workdir} checkpoint lacks {', '.join(missing)}; it is not a PM")
    stats = None
    stats_path = files.join(workdir, ckpt_lib.REWARD_STATS_FILE)
    if files.exists(stats_path):
      stats = files.read_json(stats_path)
    tok = tok_lib.Tokenizer.load(files.join(workdir, tok_lib.FILENAME))
    return cls(model_cfg, params, tok, seq_len or config["data"]["seq_len"], stats, mesh,
               batch_size, no_stop_penalty)

  def encode(self, texts: Sequence[str]):
    """Right-padded rows to the smallest bucket that holds them: tokens/mask [n, bucket]."""
    ids = [pairs_lib.encode_text(self.tokenizer, t, self.seq_len) for t in texts]
    width = _bucket(max((len(x) for x in ids), default=1), self.seq_len)
    tokens = np.full((len(ids), width), self.tokenizer.pad_id, np.int32)  # [n, bucket]
    mask = np.zeros((len(ids), width), np.int32)  # [n, bucket]
    eoc = np.zeros((len(ids),), np.int32)  # [n]
    for i, x in enumerate(ids):
      tokens[i, :len(x)] = x
      mask[i, :len(x)] = 1
      eoc[i] = len(x) - 1
    return tokens, mask, eoc

  def score_raw(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """PM scores at EOC of `context + response`, float32 [n], in input order."""
    if len(contexts) != len(responses):
      raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
    texts = [c + r for c, r in zip(contexts, responses)]
    # Sort by length so each batch pads to a short bucket; undo the order at the end.
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts),), np.float32)
    bs = self.batch_size
    with mesh_lib.activate(self.mesh):
      for lo in range(0, len(texts), bs):
        idx = order[lo:lo + bs]
        tokens, mask, eoc = self.encode([texts[i] for i in idx])
        pad = bs - len(idx)
        if pad:  # fixed batch shape: one compilation per bucket
          tokens = np.pad(tokens, ((0, pad), (0, 0)))
          mask = np.pad(mask, ((0, pad), (0, 0)))
          eoc = np.pad(eoc, (0, pad))
        r = self._score(self.params, jax.device_put(tokens, self._sh),
                        jax.device_put(mask, self._sh), jax.device_put(eoc, self._sh1))
        out[idx] = np.asarray(jax.device_get(r))[:len(idx)]
    return out

  def normalize(self, raw: np.ndarray) -> np.ndarray:
    return np.asarray(normalize(raw, self.stats["mean"], self.stats["std"]), np.float32)

  def score(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Scores normalized to mean 0 / std 1 on the PM's reference set, float32 [n].

    The PM's opinion of each text whether or not the reply stopped; `reward` is what PPO
    and best-of-k optimize."""
    return self.normalize(self.score_raw(contexts, responses))

  def reward(self, contexts: Sequence[str], responses: Sequence[str],
             stopped: Sequence[bool]) -> np.ndarray:
    """PPO's reward of each reply, float32 [n]: `pm_reward` of its normalized score and
    the sampler's stop flag (a reply that hit the token limit gets the penalty)."""
    if len(stopped) != len(responses):
      raise ValueError(f"{len(responses)} responses but {len(stopped)} stop flags")
    return np.asarray(pm_reward(self.score(contexts, responses), np.asarray(stopped, bool),
                                self.no_stop_penalty))
