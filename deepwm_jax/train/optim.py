"""Optimizers from the config: Adam (the reference's betas) with an optional schedule and
adaptive gradient clipping (docs/method.md: both were needed for a stable run)."""
import optax


def make_optimizer(opt, num_steps: int) -> optax.GradientTransformation:
  """`opt` has lr, and optionally lr_end, schedule ('constant'|'cosine'|'plateau'), b1, b2, agc.

  'plateau' is the reference code's ReduceLROnPlateau: the rate times `factor` (0.2) when the
  training loss, averaged over `accumulation` steps (one epoch), has not improved for
  `patience` such averages; the step must then pass `value=loss` (common.update does).
  """
  lr = opt.lr
  schedule = opt.get("schedule", "constant")
  if schedule == "cosine":
    end = opt.get("lr_end", lr * 0.1)
    lr = optax.cosine_decay_schedule(opt.lr, max(num_steps, 1), alpha=end / opt.lr)
  elif schedule not in ("constant", "plateau"):
    raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine or plateau")
  parts = []
  if opt.get("agc", 0.0):
    parts.append(optax.adaptive_grad_clip(opt.agc))
  parts.append(optax.adam(lr, b1=opt.get("b1", 0.5), b2=opt.get("b2", 0.999)))
  if schedule == "plateau":
    parts.append(optax.contrib.reduce_on_plateau(
        factor=opt.get("factor", 0.2), patience=opt.get("patience", 10),
        accumulation_size=opt.get("accumulation", 1)))
  return optax.chain(*parts)
