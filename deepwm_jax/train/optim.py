"""Optimizers from the config: Adam (the reference's betas) with an optional schedule and
adaptive gradient clipping (METHOD.md section 8: both were needed for a stable run)."""
import optax


def make_optimizer(opt, num_steps: int) -> optax.GradientTransformation:
  """`opt` has lr, and optionally lr_end, schedule ('constant'|'cosine'), b1, b2, agc."""
  lr = opt.lr
  schedule = opt.get("schedule", "constant")
  if schedule == "cosine":
    end = opt.get("lr_end", lr * 0.1)
    lr = optax.cosine_decay_schedule(opt.lr, max(num_steps, 1), alpha=end / opt.lr)
  elif schedule != "constant":
    raise ValueError(f"unknown schedule {schedule!r}; use constant or cosine")
  parts = []
  if opt.get("agc", 0.0):
    parts.append(optax.adaptive_grad_clip(opt.agc))
  parts.append(optax.adam(lr, b1=opt.get("b1", 0.5), b2=opt.get("b2", 0.999)))
  return optax.chain(*parts)
