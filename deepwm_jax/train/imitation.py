"""Supervised image-to-image training x -> y: the task model M (on (A, B)) and every surrogate
attacker SM (on (A, B'), the protected model's outputs), which imitates M by its outputs."""
import jax
import jax.numpy as jnp

from deepwm_jax import losses, models
from deepwm_jax.train import common
from deepwm_jax.train.optim import make_optimizer


def model_for(spec, cfg):
  dtype = jnp.bfloat16 if cfg.get("compute_dtype", "float32") == "bfloat16" else None
  return models.image_model(spec, cfg.data.channels, cfg.data.image_size, cfg.conv_impl,
                            dtype=dtype)


def init_state(spec, cfg, key, num_steps):
  model = model_for(spec, cfg)
  s, c = cfg.data.image_size, cfg.data.channels
  variables = models.init_variables(model, key, jnp.zeros((2, s, s, c), jnp.float32))
  opt = make_optimizer(spec.optimizer, num_steps)
  return {"model": variables, "opt": opt.init(variables["params"]),
          "step": jnp.zeros((), jnp.int32), "lr_scale": jnp.ones((), jnp.float32)}


def make_step(spec, cfg, num_steps):
  model = model_for(spec, cfg)
  opt = make_optimizer(spec.optimizer, num_steps)

  def loss_fn(params, variables, x, y):
    out, variables = common.apply(model, common.with_params(variables, params), x, train=True)
    loss = losses.pixel_loss(spec.loss, out, y)
    return loss, (variables, {"loss": loss, "psnr": jnp.mean(
        losses.psnr_from_mse(jnp.mean(jnp.square(jnp.clip(out, 0, 1) - y), axis=(1, 2, 3))))})

  @common.jit_step
  def step(state, batch, key):
    del key
    variables = state["model"]
    grads, (variables, metrics) = jax.grad(loss_fn, has_aux=True)(
        variables["params"], variables, batch["x"], batch["y"])
    params, opt_state = common.update(opt, grads, state["opt"], variables["params"],
                                      state["lr_scale"], value=metrics["loss"])
    return {**state, "model": common.with_params(variables, params), "opt": opt_state,
            "step": state["step"] + 1}, metrics

  return step


def make_predict_fn(spec, cfg):
  model = model_for(spec, cfg)
  return jax.jit(lambda variables, x: jnp.clip(model.apply(variables, x, train=False), 0, 1))
