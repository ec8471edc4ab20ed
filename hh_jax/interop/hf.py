"""Hugging Face export and import of LM runs.

  python -m hh_jax.interop.hf export --workdir=RUN --out=DIR
  python -m hh_jax.interop.hf import --hf_dir=DIR --workdir=RUN [--tokenizer=PATH] [--unrolled]

`export` reads an LM-family run (lm, distill, ppo: config.json with a `model` section,
checkpoints/, tokenizer.model) and writes a directory that
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads with hh_jax's logits
(GPT-2 for learned positions; for rotary ones Llama for RMSNorm + SwiGLU, Qwen2 for that
with q/k/v biases, GPT-NeoX for LayerNorm + GELU), and that `AutoTokenizer` loads with
hh_jax's ids. `import` turns a `GPT2LMHeadModel`, `LlamaForCausalLM` (Llama 2/3, Mistral
without a sliding window), `Qwen2ForCausalLM` or `GPTNeoXForCausalLM` (Pythia) checkpoint
(config.json + safetensors, sharded or not) into an LM-stage workdir: config.json (the
full model section, so a stage started from it needs no --config.model.* flags), an orbax
checkpoint holding a `TrainState` at step 0 (params at `state.params`, fresh optimizer
moments), and its tokenizer: the model's own `tokenizer.json` (`hf_text_tokenizer`, EOS ids
from generation_config.json), or an hh_jax tokenizer.model given with --tokenizer, so
`load_lm`, the chat CLI, the PM stages' `init.workdir`, PPO and distillation read it as they
read an LM run.

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
from hh_jax.data import hf_text_tokenizer, tokenizer as tok_lib
from hh_jax.errors import UserError
from hh_jax.interop import hf_llama, hf_tokenizer, hf_weights
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
  if isinstance(tok, hf_text_tokenizer.HFTokenizer):
    # An imported model's own tokenizer goes back as it came; its EOS ids end generate().
    stops = sorted(tok.eos_ids)
    hf_tokenizer.write_hf(tok, out)
  else:
    # generate() stops a turn where hh_jax's sampler does (sampling.stop_ids_for).
    stops = sorted({tok.eos_id, tok.eoc_id, tok.human_id, tok.assistant_id})
    hf_tokenizer.write(tok, out)
  _write_json(os.path.join(out, "generation_config.json"),
              {"eos_token_id": stops, "pad_token_id": tok.pad_id, "bos_token_id": tok.eos_id})
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


def _eos_ids(hf_dir: str, hf: dict) -> list[int]:
  """EOS ids from generation_config.json (an int or a list), else config.json."""
  gen_path = os.path.join(hf_dir, "generation_config.json")
  gen = json.load(open(gen_path)) if os.path.exists(gen_path) else {}
  eos = gen.get("eos_token_id", hf.get("eos_token_id"))
  if eos is None:
    raise UserError(f"{hf_dir}'s config.json and generation_config.json give no eos_token_id; "
                    "add one so hh_jax's sampler knows where a reply ends")
  return [int(i) for i in (eos if isinstance(eos, list) else [eos])]


def hf_tokenizer_of(hf_dir: str, hf: dict, vocab_size: int):
  """The model's own tokenizer.json as an `HFTokenizer`, or None when the dir has none."""
  path = os.path.join(hf_dir, "tokenizer.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    text = f.read()
  eos = _eos_ids(hf_dir, hf)
  pad = hf.get("pad_token_id")
  try:
    tok = hf_text_tokenizer.HFTokenizer(hf_text_tokenizer.bundle(text, eos, pad))
  except ValueError as e:
    raise UserError(f"cannot use {path}: {ckpt_lib.first_line(e)}") from None
  if tok.vocab_size > vocab_size:
    raise UserError(f"{path} has {tok.vocab_size} tokens but the model's vocab_size is "
                    f"{vocab_size}; it is not this model's tokenizer")
  return tok


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


# model_type -> (model section from config.json, params from tensors)
FAMILIES = {
    "gpt2": (hf_weights.model_config_from_gpt2, hf_weights.params_from_gpt2),
    "gpt_neox": (hf_weights.model_config_from_neox, hf_weights.params_from_neox),
    **{t: (hf_llama.model_config, hf_llama.params_from_hf) for t in hf_llama.MODEL_TYPES},
}


def import_(hf_dir: str, workdir: str, tokenizer: str | None = None,
            scan_layers: bool = True) -> dict:
  """Writes an LM-stage workdir from an HF checkpoint (`FAMILIES`); returns its model section."""
  hf_dir, workdir = os.path.abspath(hf_dir), os.path.abspath(workdir)
  hf, tensors = read_hf_checkpoint(hf_dir)
  model_type = hf.get("model_type")
  if model_type not in FAMILIES:
    raise UserError(f"config.json has model_type={model_type!r}; hh_jax imports "
                    f"{', '.join(sorted(FAMILIES))}")
  config_of, params_of = FAMILIES[model_type]
  try:
    mc = config_of(hf, scan_layers)
  except KeyError as e:
    raise UserError(f"config.json lacks {e.args[0]}, which a {model_type} config has; "
                    "point --hf_dir at a save_pretrained directory") from None
  if tokenizer:
    tok = _load_tokenizer(tokenizer, mc["vocab_size"])
  elif os.path.exists(os.path.join(hf_dir, tok_lib.FILENAME)):
    tok = _load_tokenizer(os.path.join(hf_dir, tok_lib.FILENAME), mc["vocab_size"])
  else:
    tok = hf_tokenizer_of(hf_dir, hf, mc["vocab_size"])
  params = params_of(tensors, mc)
  _check_tree(params, mc)
  write_workdir(workdir, mc, params, tok, source={"hf_dir": hf_dir, "model_type": model_type})
  if tok is None:
    print(f"note: {hf_dir} has neither tokenizer.json nor tokenizer.model: pass "
          "--tokenizer=PATH (an hh_jax tokenizer.model) before running a stage on this "
          "workdir", file=sys.stderr)
  return mc


def _parse(argv):
  p = argparse.ArgumentParser(prog="python -m hh_jax.interop.hf", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  e = sub.add_parser("export", help="an hh_jax LM run -> a transformers model dir")
  e.add_argument("--workdir", required=True, help="the lm / distill / ppo run")
  e.add_argument("--out", required=True, help="the HF model directory to write")
  i = sub.add_parser("import", help="a GPT-2 / Llama / Mistral / Qwen2 / GPT-NeoX safetensors "
                     "checkpoint -> an LM-stage workdir")
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
      print(f"wrote an LM workdir ({mc['size']}, {mc['n_layers']} layers) to {args.workdir}; "
            f"start a stage from it with --config.init.workdir={args.workdir} (the model "
            "config comes from its config.json)")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
