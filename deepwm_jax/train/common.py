"""Small helpers shared by the stage steps: applying a network with or without BatchNorm
statistics, and applying optimizer updates scaled by the divergence guard's lr_scale."""
import jax
import optax

from deepwm_jax.models import layers


def apply(model, variables, *args, train: bool):
  """Returns (output, variables with updated BatchNorm statistics when training)."""
  if train and "batch_stats" in variables:
    out, updates = model.apply(variables, *args, train=True, mutable=["batch_stats"])
    return out, {**variables, **updates}
  return model.apply(variables, *args, train=train), variables


def with_params(variables, params):
  return {**variables, "params": params}


def update(optimizer, grads, opt_state, params, lr_scale, value=None):
  """One optimizer step; `lr_scale` < 1 after the guard rolled back a divergence. `value`
  (the loss) feeds optimizers that need it (the 'plateau' schedule)."""
  extra = {}
  if value is not None and isinstance(optimizer, optax.GradientTransformationExtraArgs):
    extra = {"value": value}
  updates, opt_state = optimizer.update(grads, opt_state, params, **extra)
  updates = jax.tree.map(lambda u: u * lr_scale, updates)
  return optax.apply_updates(params, updates), opt_state


def jit_step(step):
  """jax.jit for a training step, with the CPU compiler options that speed up convolution
  gradients (about 2x on kernel gradients, docs/performance.md; none off CPU)."""
  return jax.jit(step, compiler_options=layers.cpu_compiler_options())


def hinge_margin(cfg, key_cell) -> float | None:
  """The hinge's margin when a keyed R is read by each cell's sign
  (protect.keyed.reading_loss='hinge'), None when R draws the key (or the kit is not keyed):
  one reading of the config for stage 1 and stage 2."""
  keyed = cfg.protect.get("keyed", {})
  if not key_cell or keyed.get("reading_loss", "drawing") != "hinge":
    return None
  return float(keyed.get("margin", 0.1))
