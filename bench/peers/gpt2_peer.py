"""The PyTorch peer: Hugging Face GPT-2 timed at hh_jax's benchmark shapes.

hh_jax's speed is only meaningful next to what a user would otherwise run, on
the same machine in the same invocation. This script is that "otherwise": a
stock `GPT2LMHeadModel` (random init from a `GPT2Config`, nothing downloaded)
timed on one of three tasks that mirror hh_jax's stages:

  lm        AdamW train step on next-token loss, [batch, seq] tokens.
  rm        reward-model train step: scalar head on the last non-pad token,
            loss -log sigmoid(r_chosen - r_rejected), [batch, 2, seq] tokens.
  generate  model.generate with its KV cache, pure sampling, [batch, prompt]
            prompt and new_tokens new tokens per row.

It runs with bench/peers/.venv's python (never hh_jax's venv) and prints
exactly one JSON object on stdout so that bench/harness.py can parse it;
anything else (warnings, progress) goes to stderr.

Example (the 13M rung):
  bench/peers/.venv/bin/python bench/peers/gpt2_peer.py --task lm \
    --n_layer 4 --d_model 512 --n_head 8 --vocab 8192 --seq 256 --batch 8
"""

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import torch
import transformers


def parse_args(argv=None):
  """Flags mirror the model/shape fields hh_jax's benchmarks are keyed by."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--task", choices=("lm", "rm", "generate"), required=True)
  p.add_argument("--n_layer", type=int, default=4)
  p.add_argument("--d_model", type=int, default=512)
  p.add_argument("--n_head", type=int, default=8)
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--n_positions", type=int, default=None,
                 help="default: the longest sequence the task needs")
  p.add_argument("--seq", type=int, default=256,
                 help="tokens per sequence for lm and rm")
  p.add_argument("--batch", type=int, default=8,
                 help="sequences (lm), comparisons (rm) or prompts (generate)")
  p.add_argument("--steps", type=int, default=10, help="timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  p.add_argument("--threads", type=int, default=None,
                 help="torch.set_num_threads; default: all usable cores")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=64)
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--serve", action="store_true",
                 help="after the warm-up, print one JSON line of metadata, then time one "
                      "step per 'step' line read on stdin (one JSON line each) until EOF, "
                      "so a benchmark can alternate the peer's steps with its own")
  return p.parse_args(argv)


def build_model(args):
  """GPT-2 at the given size, matched to hh_jax's transformer.

  Dropout is off everywhere because hh_jax's train step has none, and a peer
  that spends time on dropout masks would flatter us. GPT-2's own choices
  already match ours: pre-LayerNorm, learned positions, tied input/output
  embedding, MLP width 4*d_model, GELU (the tanh form, `gelu_new`).
  """
  needed = (args.prompt_len + args.new_tokens if args.task == "generate"
            else args.seq)
  n_positions = args.n_positions or needed
  config = transformers.GPT2Config(
      vocab_size=args.vocab,
      n_positions=n_positions,
      n_embd=args.d_model,
      n_layer=args.n_layer,
      n_head=args.n_head,
      n_inner=4 * args.d_model,
      activation_function="gelu_new",
      resid_pdrop=0.0,
      embd_pdrop=0.0,
      attn_pdrop=0.0,
      tie_word_embeddings=True,
      # GPT-2's default ids (50256) lie outside a small vocab.
      bos_token_id=args.vocab - 1,
      eos_token_id=args.vocab - 1,
      pad_token_id=0,
  )
  model = transformers.GPT2LMHeadModel(config)
  return model.to(getattr(torch, args.dtype)), n_positions


def lm_step_fn(model, args, gen):
  """Returns one AdamW step on next-token loss over a fixed [batch, seq]."""
  tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
  opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
  model.train()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=tokens, labels=tokens).loss  # shift inside HF
    loss.backward()
    # hh_jax's LM step clips the global grad norm; the peer pays for it too.
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()

  return step, args.batch * args.seq


def rm_step_fn(model, args, gen):
  """Returns one reward-model AdamW step over [batch, 2, seq] comparisons.

  Each comparison is (chosen, rejected), right-padded to seq with a random
  length in [seq/2, seq], so the score really is gathered at the last non-pad
  token as in hh_jax's preference model, not simply at position seq-1.
  """
  b, s = args.batch, args.seq
  tokens = torch.randint(1, args.vocab, (b * 2, s), generator=gen)  # [2b, s]
  lengths = torch.randint(s // 2, s + 1, (b * 2,), generator=gen)    # [2b]
  mask = (torch.arange(s)[None, :] < lengths[:, None]).long()        # [2b, s]
  tokens = tokens * mask  # pad id 0
  head = torch.nn.Linear(args.d_model, 1).to(getattr(torch, args.dtype))
  trunk = model.transformer
  params = list(trunk.parameters()) + list(head.parameters())
  opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.1)
  trunk.train()
  rows = torch.arange(b * 2)

  def step():
    opt.zero_grad(set_to_none=True)
    hidden = trunk(input_ids=tokens, attention_mask=mask).last_hidden_state
    last = hidden[rows, lengths - 1]                 # [2b, d_model]
    r = head(last).squeeze(-1).view(b, 2).float()    # [b, 2]
    loss = -torch.nn.functional.logsigmoid(r[:, 0] - r[:, 1]).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()

  return step, b * 2 * s


def generate_step_fn(model, args, gen):
  """Returns one `generate` call: prefill [batch, prompt] + new_tokens decode.

  Sampling is plain (top_k=0, top_p=1.0, temperature 1) and exactly
  new_tokens long (min_new_tokens, no EOS stop), so every call does the same
  work. Tokens counted are the new ones only, batch * new_tokens.
  """
  prompt = torch.randint(1, args.vocab, (args.batch, args.prompt_len),
                         generator=gen)
  mask = torch.ones_like(prompt)
  model.eval()

  def step():
    with torch.inference_mode():
      out = model.generate(
          input_ids=prompt, attention_mask=mask, do_sample=True, top_k=0,
          top_p=1.0, temperature=1.0, max_new_tokens=args.new_tokens,
          min_new_tokens=args.new_tokens, use_cache=True, pad_token_id=0)
    assert out.shape == (args.batch, args.prompt_len + args.new_tokens)
    return None

  return step, args.batch * args.new_tokens


TASKS = {"lm": lm_step_fn, "rm": rm_step_fn, "generate": generate_step_fn}


def usable_cores():
  """Cores this process may run on (honours taskset / cgroup affinity)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def main(argv=None):
  args = parse_args(argv)
  threads = args.threads or usable_cores()
  torch.set_num_threads(threads)
  torch.manual_seed(args.seed)
  transformers.logging.set_verbosity_error()
  warnings.filterwarnings("ignore")
  gen = torch.Generator().manual_seed(args.seed)

  model, n_positions = build_model(args)
  step, tokens_per_step = TASKS[args.task](model, args, gen)
  for _ in range(args.warmup):
    step()

  def timed_step():
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0

  if args.serve:
    serve(args, model, n_positions, threads, tokens_per_step, timed_step)
    return
  times = [timed_step() for _ in range(args.steps)]
  step_time = statistics.median(times)
  result = describe(args, model, n_positions, threads, tokens_per_step)
  result.update(step_time_s=step_time, step_times_s=times,
                tokens_per_s=tokens_per_step / step_time)
  json.dump(result, sys.stdout)
  sys.stdout.write("\n")


def serve(args, model, n_positions, threads, tokens_per_step, timed_step):
  """The --serve loop: metadata first, then one timed step per request line."""
  emit_line(describe(args, model, n_positions, threads, tokens_per_step))
  for line in sys.stdin:
    if line.strip() != "step":
      break
    emit_line({"step_time_s": timed_step()})


def emit_line(obj):
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


def describe(args, model, n_positions, threads, tokens_per_step):
  """What was run: task, shape and versions, without timings."""
  shape = {"n_layer": args.n_layer, "d_model": args.d_model,
           "n_head": args.n_head, "vocab": args.vocab,
           "n_positions": n_positions, "batch": args.batch,
           "dtype": args.dtype}
  if args.task == "generate":
    shape.update(prompt_len=args.prompt_len, new_tokens=args.new_tokens)
  else:
    shape.update(seq=args.seq)
  return {
      "task": args.task,
      "shape": shape,
      "tokens_per_step": tokens_per_step,
      "params": sum(p.numel() for p in model.parameters()),
      "attn_implementation": model.config._attn_implementation,
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "threads": threads,
  }


if __name__ == "__main__":
  main()
