"""Supervised image-to-image training x -> y: the task model M (on (A, B)) and every surrogate
attacker SM (on (A, B'), the protected model's outputs), which imitates M by its outputs."""
import json

import jax
import jax.numpy as jnp

from deepwm_jax import losses, metrics, models
from deepwm_jax.train import common
from deepwm_jax.train.optim import make_optimizer


def model_for(spec, cfg):
  return models.image_model(spec, cfg.data.channels, cfg.data.image_size, cfg.conv_impl,
                            dtype=models.compute_dtype(cfg.get("compute_dtype", "float32")))


def init_state(spec, cfg, key, num_steps):
  model = model_for(spec, cfg)
  s, c = cfg.data.image_size, cfg.data.channels
  variables = models.init_variables(model, key, jnp.zeros((2, s, s, c), jnp.float32))
  opt = make_optimizer(spec.optimizer, num_steps)
  return {"model": variables, "opt": opt.init(variables["params"]),
          "step": jnp.zeros((), jnp.int32), "lr_scale": jnp.ones((), jnp.float32)}


def compiled_key(spec, cfg) -> str:
  """What a compiled step or predict function depends on: the spec without its seed, and the
  data's shape, conv implementation and compute dtype of `cfg`. Models that differ only by
  seed (the 24 null models of a model-level null come in 6 such kinds) then share one
  compilation: on the CPU compiling a small U-Net or ResNet step takes longer than training
  it for 300 steps."""
  s = spec.to_dict()
  s.pop("seed", None)
  return json.dumps([s, cfg.data.image_size, cfg.data.channels, cfg.conv_impl,
                     cfg.get("compute_dtype", "float32")], sort_keys=True, default=str)


def make_step(spec, cfg, num_steps):
  """The jitted training step; the same function object for the same key and schedule."""
  return _cached(("step", compiled_key(spec, cfg), num_steps),
                 lambda: _build_step(spec, cfg, num_steps))


def make_predict_fn(spec, cfg):
  """The jitted x -> clip(model(x), 0, 1); the same function object for the same key."""
  def build():
    model = model_for(spec, cfg)
    return jax.jit(lambda variables, x: jnp.clip(model.apply(variables, x, train=False), 0, 1))
  return _cached(("predict", compiled_key(spec, cfg)), build)


_COMPILED: dict = {}
_MAX_COMPILED = 64  # a zoo or study builds a few dozen kinds at most; the oldest go first


def _cached(key, build):
  if key not in _COMPILED:
    if len(_COMPILED) >= _MAX_COMPILED:
      del _COMPILED[next(iter(_COMPILED))]
    _COMPILED[key] = build()
  return _COMPILED[key]


def _build_step(spec, cfg, num_steps):
  model = model_for(spec, cfg)
  opt = make_optimizer(spec.optimizer, num_steps)

  def loss_fn(params, variables, x, y):
    out, variables = common.apply(model, common.with_params(variables, params), x, train=True)
    loss = losses.pixel_loss(spec.loss, out, y)
    return loss, (variables, {"loss": loss,
                              "psnr": jnp.mean(metrics.psnr(jnp.clip(out, 0, 1), y))})

  @common.jit_step
  def step(state, batch, key):
    del key
    variables = state["model"]
    grads, (variables, scalars) = jax.grad(loss_fn, has_aux=True)(
        variables["params"], variables, batch["x"], batch["y"])
    params, opt_state = common.update(opt, grads, state["opt"], variables["params"],
                                      state["lr_scale"], value=scalars["loss"])
    return {**state, "model": common.with_params(variables, params), "opt": opt_state,
            "step": state["step"] + 1}, scalars

  return step
