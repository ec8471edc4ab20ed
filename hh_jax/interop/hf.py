"""Hugging Face export and import of LM runs.

  python -m hh_jax.interop.hf export --workdir=RUN --out=DIR
  python -m hh_jax.interop.hf import --hf_dir=DIR --workdir=RUN [--tokenizer=PATH] [--unrolled]

`export` reads an LM-family run (lm, distill, ppo: config.json with a `model` section,
checkpoints/, tokenizer.model) and writes a directory that
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads with hh_jax's logits
(GPT-2 for learned positions, GPT-NeoX for rotary), and that `AutoTokenizer` loads with
hh_jax's ids. `import` turns a GPT-2-family checkpoint (config.json + safetensors) into an
LM-stage workdir: config.json, an orbax checkpoint holding a `TrainState` at step 0 (params
at `state.params`, fresh optimizer moments), and tokenizer.model when one is given, so
`load_lm`, the PM stages' `init.workdir` and distillation read it as they read an LM run.

Only numpy, safetensors and json touch the weights: hh_jax never needs torch for this.
The name maps live in `hf_weights.py`, the tokenizer conversion in `hf_tokenizer.py`;
docs/interop.md says what maps to what and what is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hh_jax import checkpoint as ckpt_lib
from hh_jax.data import tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.interop import hf_tokenizer, hf_weights
from hh_jax.model import params as params_lib
from hh_jax.model import transformer

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Stages whose checkpoint is a language model (the PM stages hold a scalar-head trunk).
LM_STAGES = ("lm", "distill", "ppo")
# Only the optimizer state's structure matters at step 0 (zero moments, count 0), and it is
# the LM stage's (hh_jax.train.optimizer.make), so continuing pretraining resumes from it.
_OPTIM = ml_collections.ConfigDict({
    "learning_rate": 0.0, "warmup_steps": 0, "min_lr_ratio": 0.0, "grad_clip_norm": 1.0,
    "b1": 0.9, "b2": 0.95, "eps": 1e-8, "weight_decay": 0.0})


def _safetensors_numpy():
  try:
    import safetensors.numpy
  except ImportError:
    raise UserError("Hugging Face interop needs safetensors: pip install safetensors") from None
  return safetensors.numpy


def _write_json(path: str, obj) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")


def export(workdir: str, out: str) -> dict:
  """Writes RUN's LM as an HF model dir at `out`; returns the HF config written."""
  workdir = os.path.abspath(workdir)
  stage = ckpt_lib.read_run_config(workdir, "point --workdir at an lm, distill or ppo run").get("stage")
  if stage not in LM_STAGES:
    raise UserError(f"{workdir} is a {stage!r} run, not a language model; export an "
                    f"{', '.join(LM_STAGES)} workdir")
  st = _safetensors_numpy()
  cfg, params, tok = params_lib.load_lm(workdir)
  params = ckpt_lib.to_host(params)
  if tok.vocab_size > cfg.vocab_size:
    raise UserError(f"{workdir}'s tokenizer has {tok.vocab_size} pieces, more than the model's "
                    f"vocab_size={cfg.vocab_size}; it is not the tokenizer this model was trained with")
  hf_config, tensors = hf_weights.export(params, cfg, {"eos": tok.eos_id, "pad": tok.pad_id})
  os.makedirs(out, exist_ok=True)
  tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
  st.save_file(tensors, os.path.join(out, SAFETENSORS), metadata={"format": "pt"})
  _write_json(os.path.join(out, "config.json"), hf_config)
  # generate() stops a turn where hh_jax's sampler does (sampling.stop_ids_for).
  stops = sorted({tok.eos_id, tok.eoc_id, tok.human_id, tok.assistant_id})
  _write_json(os.path.join(out, "generation_config.json"),
              {"eos_token_id": stops, "pad_token_id": tok.pad_id, "bos_token_id": tok.eos_id})
  hf_tokenizer.write(tok, out)
  if cfg.dtype != "float32":
    print(f"note: {workdir} computes in {cfg.dtype}; the weights are written in float32, so "
          f"load with dtype=torch.{cfg.dtype} for its numerics", file=sys.stderr)
  return hf_config


def read_hf_checkpoint(hf_dir: str) -> tuple[dict, dict]:
  """(config.json, {name: float32 array}) of an HF model dir with safetensors weights."""
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"{hf_dir} has no config.json; point --hf_dir at a save_pretrained directory")
  with open(path) as f:
    hf = json.load(f)
  st = _safetensors_numpy()
  single, index = os.path.join(hf_dir, SAFETENSORS), os.path.join(hf_dir, SAFETENSORS_INDEX)
  if os.path.exists(single):
    shards = [single]
  elif os.path.exists(index):
    with open(index) as f:
      shards = [os.path.join(hf_dir, s) for s in sorted(set(json.load(f)["weight_map"].values()))]
  else:
    raise UserError(f"{hf_dir} has no {SAFETENSORS}; re-save the model with "
                    "save_pretrained(DIR, safe_serialization=True)")
  tensors = {}
  for shard in shards:
    try:
      tensors.update(st.load_file(shard))
    except (TypeError, ValueError) as e:  # e.g. bfloat16, which numpy cannot hold
      raise UserError(f"cannot read {shard} with numpy ({ckpt_lib.first_line(e)}); "
                      "re-save the model in float32 (model.float().save_pretrained(DIR))") from None
  return hf, tensors


def _load_tokenizer(path: str, vocab_size: int) -> tok_lib.Tokenizer:
  if not os.path.exists(path):
    raise UserError(f"no tokenizer at {path}; pass --tokenizer=PATH to an hh_jax tokenizer.model")
  try:
    tok = tok_lib.Tokenizer.load(path)
  except ValueError:
    raise UserError(f"{path} is not an hh_jax tokenizer (it lacks the <eoc> and dialogue-marker "
                    "pieces); pass --tokenizer=PATH to one trained by hh_jax") from None
  if tok.vocab_size > vocab_size:
    raise UserError(f"{path} has {tok.vocab_size} pieces but the model's vocab_size is "
                    f"{vocab_size}; pass the tokenizer this model was trained with")
  return tok


def _shapes(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(k.key) for k in path): tuple(x.shape) for path, x in flat}


def _check_tree(params: dict, mc: dict) -> None:
  """The imported tree must be exactly the Transformer's for `mc` (names and shapes)."""
  model = transformer.Transformer(ml_collections.ConfigDict(mc))
  init = lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]  # noqa: E731
  want, have = _shapes(nn.unbox(jax.eval_shape(init))), _shapes(params)
  for name in sorted(set(want) | set(have)):
    if want.get(name) != have.get(name):
      raise UserError(f"params/{name}: the checkpoint gives {have.get(name)}, the model "
                      f"{want.get(name)}; config.json and the weights disagree")


def write_workdir(workdir: str, model_section: dict, params, tok=None, source=None) -> None:
  """An LM-stage workdir holding `params` as an LM run at step 0 stores them.

  config.json (stage "lm" and `model_section`), checkpoints/ with a `TrainState` (params,
  the LM stage's optimizer state, step 0, an RNG key) written by `Checkpointer`, and
  tokenizer.model when `tok` is given. Refuses a workdir that already has checkpoints.
  """
  from hh_jax.train import optimizer as optim_lib, state as state_lib  # train imports model

  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise UserError(f"{workdir} already holds checkpoints; import into a new --workdir")
  os.makedirs(workdir, exist_ok=True)
  params = jax.tree.map(jnp.asarray, params)
  tx = optim_lib.make(_OPTIM, 1)
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=tx.init(params), rng=jax.random.PRNGKey(0), tx=tx)
  checkpointer = ckpt_lib.Checkpointer(ckpt_dir, async_save=False)
  checkpointer.save(0, state)
  checkpointer.close()
  config = {"stage": "lm", "seed": 0, "model": model_section}
  if source:
    config["source"] = source
  _write_json(os.path.join(workdir, "config.json"), config)
  if tok is not None:
    tok.save(os.path.join(workdir, tok_lib.FILENAME))


def import_(hf_dir: str, workdir: str, tokenizer: str | None = None,
            scan_layers: bool = True) -> dict:
  """Writes an LM-stage workdir from a GPT-2 checkpoint; returns its model section."""
  hf_dir, workdir = os.path.abspath(hf_dir), os.path.abspath(workdir)
  hf, tensors = read_hf_checkpoint(hf_dir)
  mc = hf_weights.model_config_from_gpt2(hf, scan_layers)
  tok_path = tokenizer or os.path.join(hf_dir, tok_lib.FILENAME)
  tok = _load_tokenizer(tok_path, mc["vocab_size"]) if os.path.exists(tok_path) or tokenizer else None
  params = hf_weights.params_from_gpt2(tensors, mc)
  _check_tree(params, mc)
  write_workdir(workdir, mc, params, tok,
                source={"hf_dir": hf_dir, "model_type": hf["model_type"]})
  if tok is None:
    print(f"note: {hf_dir} has no sentencepiece tokenizer.model and hh_jax cannot use a BPE "
          "tokenizer.json: pass --tokenizer=PATH (an hh_jax tokenizer.model) before running a "
          "stage on this workdir", file=sys.stderr)
  return mc


def model_flags(mc: dict) -> str:
  """The --config.model.* overrides that make a stage's model this one."""
  keys = ("n_layers", "d_model", "n_heads", "head_dim", "mlp_dim", "vocab_size", "max_len",
          "layer_norm_eps", "scan_layers")
  return " ".join(f"--config.model.{k}={mc[k]}" for k in keys)


def _parse(argv):
  p = argparse.ArgumentParser(prog="python -m hh_jax.interop.hf", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  e = sub.add_parser("export", help="an hh_jax LM run -> a transformers model dir")
  e.add_argument("--workdir", required=True, help="the lm / distill / ppo run")
  e.add_argument("--out", required=True, help="the HF model directory to write")
  i = sub.add_parser("import", help="a GPT-2 safetensors checkpoint -> an LM-stage workdir")
  i.add_argument("--hf_dir", required=True, help="a save_pretrained directory")
  i.add_argument("--workdir", required=True, help="the new hh_jax workdir")
  i.add_argument("--tokenizer", default=None, help="an hh_jax tokenizer.model to put beside it")
  i.add_argument("--unrolled", action="store_true",
                 help="store layers as layer_0, layer_1, ... (model.scan_layers=False)")
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = _parse(sys.argv[1:] if argv is None else argv)
  try:
    if args.cmd == "export":
      hf_config = export(args.workdir, args.out)
      print(f"wrote {hf_config['architectures'][0]} to {args.out}")
    else:
      mc = import_(args.hf_dir, args.workdir, args.tokenizer, scan_layers=not args.unrolled)
      print(f"wrote an LM workdir to {args.workdir}; start a stage from it with "
            f"--config.init.workdir={args.workdir} {model_flags(mc)}")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
