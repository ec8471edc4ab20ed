"""AdamW with linear warm-up, cosine decay and global-norm clipping, as one optax chain."""
import jax
import optax


def schedule(optim_cfg, total_steps: int):
  warmup = min(int(optim_cfg.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=optim_cfg.learning_rate * optim_cfg.min_lr_ratio)


def _decay_mask(params):
  # Decay matrices only: biases and LayerNorm scales keep their scale.
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(optim_cfg.grad_clip_norm),
      optax.adamw(schedule(optim_cfg, total_steps), b1=optim_cfg.b1, b2=optim_cfg.b2,
                  eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay, mask=_decay_mask),
  )
