"""The absorb step: the task network M fine-tuned into M', which emits watermarked outputs itself.

After stages 1 and 2 (H and R trained as usual), M is fine-tuned into M' so that one network
emits watermarked outputs directly and no separate embedder is deployed:

  L = s * [fidelity * MSE(M'(A), H(M(A))) + watermark * MSE(R(M'(A)), w) + task * MSE(M'(A), B)]

H, R and M are frozen; R is the kit's extractor (after stage 2), so the same kit verifies M'
and its surrogates. M' starts at M: M(A) is already ~40 dB from H(M(A)), so fidelity starts
high and the watermark term teaches M' the residual H adds. The fidelity term keeps that
residual H's (a pattern R was hardened to read through imitation) instead of any adversarial
perturbation that happens to excite R; the small task term keeps M' anchored to B.
The stage that drives this step and evaluates M' is deepwm_jax/stages/absorb.py.
"""
import jax
import jax.numpy as jnp

from deepwm_jax import distortions, losses, metrics, models
from deepwm_jax.train import common, imitation
from deepwm_jax.train.optim import make_optimizer

STAGE = "absorb"


def init_state(cfg, task_variables):
  opt = make_optimizer(cfg.protect.absorb.optimizer, cfg.protect.absorb.steps)
  return {"model": task_variables, "opt": opt.init(task_variables["params"]),
          "step": jnp.zeros((), jnp.int32), "lr_scale": jnp.ones((), jnp.float32)}


def make_step(cfg, extractor_variables, w_HxWxC):
  """One step on a batch {a: inputs A, target: H(M(A)), b: clean B}."""
  a_cfg = cfg.protect.absorb
  model = imitation.model_for(cfg.task, cfg)
  R = models.extractor(cfg)
  opt = make_optimizer(a_cfg.optimizer, a_cfg.steps)
  wt, s = a_cfg.weights, a_cfg.loss_scale
  w = jnp.asarray(w_HxWxC)
  distort = distortions.parse(a_cfg.get("distortions", ""))

  def loss_fn(params, variables, ext_vars, batch, key):
    out, variables = common.apply(model, common.with_params(variables, params), batch["a"],
                                  train=True)
    r = R.apply(ext_vars, distortions.apply(distort, out, key) if distort else out)
    fid = losses.mse(out, batch["target"])
    wm = losses.mse(r, w)
    task = losses.mse(out, batch["b"])
    loss = s * (wt.fidelity * fid + wt.watermark * wm + wt.task * task)
    return loss, (variables, {"loss": loss, "fid_mse": fid, "wm_mse": wm, "task_mse": task,
                              "psnr": jnp.mean(metrics.psnr(out, batch["target"]))})

  @common.jit_step
  def step(state, batch, key):
    variables = state["model"]
    # R's variables travel with the batch rather than as baked-in constants of the program.
    ext_vars = jax.lax.stop_gradient(batch["extractor"])
    grads, (variables, m) = jax.grad(loss_fn, has_aux=True)(
        variables["params"], variables, ext_vars, batch, key)
    params, opt_state = common.update(opt, grads, state["opt"], variables["params"],
                                      state["lr_scale"])
    return {**state, "model": common.with_params(variables, params), "opt": opt_state,
            "step": state["step"] + 1}, m

  return step
