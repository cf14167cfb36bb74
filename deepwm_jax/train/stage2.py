"""Stage 2: adversarial fine-tuning of the extractor R (H frozen).

R learns to read the watermark through the distortion that imitation adds: R(SM(A)) -> w for a
surrogate SM trained on (A, B'), R(B') -> w so it does not forget, and R(negative) -> blank
for clean images and the outputs of a null surrogate that never saw the watermark
(docs/method.md: without those negatives stage 2 creates false positives).
"""
import jax
import jax.numpy as jnp

from deepwm_jax import distortions, losses, models
from deepwm_jax.data import watermarks
from deepwm_jax.train import common
from deepwm_jax.train.optim import make_optimizer


def init_state(cfg, extractor_variables):
  opt = make_optimizer(cfg.stage2.optimizer, cfg.stage2.steps)
  return {"extractor": extractor_variables, "opt": opt.init(extractor_variables["params"]),
          "step": jnp.zeros((), jnp.int32), "lr_scale": jnp.ones((), jnp.float32)}


def make_step(cfg, w_HxWxC, blank_HxWxC, patterns_KxHxWxC=None, key_cell: int = 0,
              key_symmetry: str = "none"):
  """The stage-2 step. With `patterns_KxHxWxC` (the keyed method) each surrogate output and
  its paired watermarked image has its own target, patterns[batch['key_index']]: surrogates
  of several training keys, none of them the owner's. With `key_cell` and a keyed kit read by
  the hinge (protect.keyed.reading_loss), R is asked for each cell's sign, as in stage 1:
  the drawing's MSE would pull a hinge-trained R back to full amplitude."""
  R = models.extractor(cfg)
  opt = make_optimizer(cfg.stage2.optimizer, cfg.stage2.steps)
  wt, s = cfg.stage2.weights, cfg.stage2.loss_scale
  blank = jnp.asarray(blank_HxWxC)
  patterns = None if patterns_KxHxWxC is None else jnp.asarray(patterns_KxHxWxC)
  distort = distortions.parse(cfg.stage2.get("distortions", ""))
  margin = common.hinge_margin(cfg, key_cell)

  def reading(r, target):
    if margin is None:
      return losses.mse(r, target)
    return jnp.mean(watermarks.key_hinge(r, target, key_cell, key_symmetry, margin))

  def loss_fn(params, batch, key):
    sur, wm, neg = batch["surrogate"], batch["watermarked"], batch["negative"]
    w = jnp.asarray(w_HxWxC) if patterns is None else patterns[batch["key_index"]]
    n1, n2 = sur.shape[0], wm.shape[0]
    r_in = jnp.concatenate([sur, wm, neg])
    if distort:  # served images are distorted, a surrogate's as much as the owner's
      r_in = distortions.apply(distort, r_in, key)
    r = R.apply({"params": params}, r_in)
    r_sur, r_wm, r_neg = r[:n1], r[n1:n1 + n2], r[n1 + n2:]
    sur_mse, wm_mse, neg_mse = reading(r_sur, w), reading(r_wm, w), losses.mse(r_neg, blank)
    cons = losses.consistency(r_sur)
    loss = s * (wt.surrogate * sur_mse + wt.watermark * wm_mse + wt.clean * neg_mse
                + wt.consistency * cons)
    return loss, {"loss": loss, "sur_mse": sur_mse, "wm_mse": wm_mse, "neg_mse": neg_mse,
                  "cons_mse": cons}

  @common.jit_step
  def step(state, batch, key):
    params = state["extractor"]["params"]
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, batch, key)
    params, opt_state = common.update(opt, grads, state["opt"], params, state["lr_scale"],
                                      value=metrics["loss"])
    return {**state, "extractor": {"params": params}, "opt": opt_state,
            "step": state["step"] + 1}, metrics

  return step
