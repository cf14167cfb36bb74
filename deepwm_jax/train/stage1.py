"""Stage 1: train the barrier - embedder H, extractor R and discriminator D together.

L_H = s * fidelity * MSE(B', B) + gan * LSGAN_G(D(B'))
      [+ fidelity_l1 * L1(B', B) + fidelity_ssim * (1 - SSIM(B', B))]
      [+ band * ramp * (dB outside the band of PSNR(B', B) and of SSIM(B', B), per image)]
L_R = s * [watermark * MSE(R(B'), w) + clean * (MSE(R(A), blank) + MSE(R(B), blank))
           + consistency * MSE(R(B'_first half), R(B'_second half))]
H and R step together on L_H + L_R; D steps on s * d * LSGAN_D(D(B), D(B')). s = loss_scale
(1e4 in the reference code).

With stage1.distortions set, R reads B', A and B through the distortion layer
(deepwm_jax/distortions.py), a distortion drawn per example.

With `key_cell` set (protect.method='keyed'), w is not one fixed image: every example of every
step draws a fresh random key and w is its cell pattern (data/watermarks.key_pattern), so R
learns to read any key and never learns the owner's. protect.keyed.reading_loss='hinge'
replaces MSE(R(B'), w) by mean(relu(margin - sign(bit) * reading)) over the key's cells: what
the exact test decides on, and no more. stage1.hardest_distortion adds, with that weight, the
hinge's mean over the examples of the layer's entry read worst in the batch.
"""

import jax
import jax.numpy as jnp

from deepwm_jax import distortions, losses, metrics, models
from deepwm_jax.data import watermarks
from deepwm_jax.train import common
from deepwm_jax.train.optim import make_optimizer


def networks(cfg):
  return models.embedder(cfg), models.extractor(cfg), models.discriminator(cfg)


def init_state(cfg, key, w_HxWxC):
  H, R, D = networks(cfg)
  s, c = cfg.data.image_size, cfg.data.channels
  x = jnp.zeros((2, s, s, c), jnp.float32)
  kh, kr, kd = jax.random.split(key, 3)
  zero_last = models.embedder_last_layer(cfg) if cfg.embedder.output == "residual" else None
  state = {
      "embedder": models.init_variables(H, kh, x, jnp.asarray(w_HxWxC), zero_last=zero_last),
      "extractor": models.init_variables(R, kr, x),
      "discriminator": models.init_variables(D, kd, x),
      "step": jnp.zeros((), jnp.int32),
      "lr_scale": jnp.ones((), jnp.float32),
  }
  opt_g, opt_d = optimizers(cfg)
  state["opt_g"] = opt_g.init(_gen_params(state))
  state["opt_d"] = opt_d.init(state["discriminator"]["params"])
  return state


def optimizers(cfg):
  return (make_optimizer(cfg.stage1.optimizer, cfg.stage1.steps),
          make_optimizer(cfg.stage1.discriminator_optimizer, cfg.stage1.steps))


def _gen_params(state):
  return {"embedder": state["embedder"]["params"], "extractor": state["extractor"]["params"]}


def make_step(cfg, w_HxWxC, blank_HxWxC, key_cell: int | None = None,
              key_symmetry: str = "none"):
  """The stage-1 step; with `key_cell`, w is a random key's pattern per example (`w_HxWxC`
  then only gives the shape), its cells tied by `key_symmetry`."""
  H, R, D = networks(cfg)
  opt_g, opt_d = optimizers(cfg)
  wt, s = cfg.stage1.weights, cfg.stage1.loss_scale
  w, blank = jnp.asarray(w_HxWxC), jnp.asarray(blank_HxWxC)
  band = cfg.stage1.get("fidelity_band")  # absent in kits written before it existed
  band_weight = band.weight if band is not None else 0.0
  band_ramp = tuple(band.get("ramp", (0.0, 0.0))) if band is not None else (0.0, 0.0)
  if band_weight:
    ssim_band_dB = tuple(float(losses.ssim_dB(x)) for x in band.ssim)

  ctx = cfg.stage1.get("context", 0)
  margin = common.hinge_margin(cfg, key_cell)
  hinge = margin is not None
  distort = distortions.parse(cfg.stage1.get("distortions", ""))
  ramp = tuple(cfg.stage1.get("distortion_ramp", (0.0, 0.0)))
  hardest = float(cfg.stage1.get("hardest_distortion", 0.0))

  def generator_loss(params, state, a, b, w, b_ctx=None, dkey=None):
    if ctx:  # H on the crop with its real surroundings; the crop kept (config stage1.context)
      b_wm, emb_vars = common.apply(
          H, common.with_params(state["embedder"], params["embedder"]), b_ctx, w, train=True)
      b_wm = b_wm[:, ctx:-ctx, ctx:-ctx]
    else:
      b_wm, emb_vars = common.apply(H, common.with_params(state["embedder"], params["embedder"]),
                                    b, w, train=True)
    n = b.shape[0]
    # One extractor call on B', A and B together: R dominates the step cost. With a
    # distortion layer R reads all three distorted, so it learns to draw w from a distorted
    # B' and the blank from distorted clean images alike.
    r_in = jnp.concatenate([b_wm, a, b])
    pick, wm_hardest = None, 0.0
    if distort:
      r_in, pick = distortions.apply(
          distort, r_in, dkey, distortions.ramp_share(state["step"], cfg.stage1.steps, ramp),
          with_pick=True)
    r_all = R.apply({"params": params["extractor"]}, r_in)
    r_wm, r_a, r_b = r_all[:n], r_all[n:2 * n], r_all[2 * n:]
    fid = losses.mse(b_wm, b)
    if hinge:  # each cell's reading on its bit's side of mid-grey by the margin
      wm_i = watermarks.key_hinge(r_wm, w, key_cell, key_symmetry, margin)
      wm = jnp.mean(wm_i)
      if hardest and distort:
        # The mean alone lets H and R give up one distortion (a sixth of the examples) to
        # hold the fidelity band: a training that learned to embed before the layer came in
        # kept reading every other entry and none of its JPEG examples.
        wm_hardest = distortions.hardest_entry_mean(wm_i, pick[:n], len(distort))
    else:
      wm = losses.mse(r_wm, w)
    clean = losses.mse(r_a, blank) + losses.mse(r_b, blank)
    cons = losses.consistency(r_wm)
    gan = losses.lsgan_generator(D.apply(state["discriminator"], b_wm))
    loss = (s * (wt.fidelity * fid + wt.watermark * (wm + hardest * wm_hardest)
                 + wt.clean * clean
                 + wt.consistency * cons) + wt.gan * gan + wt.fidelity_l1 * losses.l1(b_wm, b))
    if wt.get("fidelity_ssim", 0.0) or band_weight:  # one SSIM for both terms
      ssim_i = losses.ssim_per_image(b_wm, b)
    if wt.get("fidelity_ssim", 0.0):
      # SSIM minds high-frequency change in flat areas most and smooth shifts least: with this
      # term the quickstart's watermark moved into smooth shapes (docs/method.md).
      loss = loss + wt.fidelity_ssim * (1.0 - jnp.mean(ssim_i))  # pixel_loss('ssim')
    psnr_i = metrics.psnr(b_wm, b)
    scalars = {"loss": loss, "fid_mse": fid, "psnr": jnp.mean(psnr_i), "wm_mse": wm,
               "clean_mse": clean, "cons_mse": cons, "gan_g": gan}
    if hardest and hinge and distort:
      scalars["wm_hardest"] = wm_hardest
    if band_weight:
      outside = (losses.band(psnr_i, *band.psnr)
                 + losses.band(losses.ssim_dB(ssim_i), *ssim_band_dB))
      share = distortions.ramp_share(state["step"], cfg.stage1.steps, band_ramp)
      loss = loss + band_weight * share * jnp.mean(outside)
      scalars.update(loss=loss, ssim=jnp.mean(ssim_i), band_dB=jnp.mean(outside))
    return loss, (scalars, emb_vars, b_wm)

  @common.jit_step
  def step(state, batch, key):
    a, b = batch["a"], batch["b"]
    if key_cell:  # a new key per example, from the step's key (deterministic given the step)
      bits = watermarks.random_key_bits(key, b.shape[0], w.shape[0], key_cell, key_symmetry)
      w_step = watermarks.key_pattern(bits, w.shape[0], key_cell, w.shape[-1], key_symmetry)
    else:  # the one watermark, fixed (the step's key then only draws distortions)
      w_step = w
    grads, (scalars, emb_vars, b_wm) = jax.grad(generator_loss, has_aux=True)(
        _gen_params(state), state, a, b, w_step, batch.get("b_ctx"),
        jax.random.fold_in(key, 1))
    params, opt_g_state = common.update(opt_g, grads, state["opt_g"], _gen_params(state),
                                        state["lr_scale"], value=scalars["loss"])

    def d_loss(d_params):
      d_vars = {"params": d_params}
      return s * wt.discriminator * losses.lsgan_discriminator(
          D.apply(d_vars, b), D.apply(d_vars, jax.lax.stop_gradient(b_wm)))

    dl, d_grads = jax.value_and_grad(d_loss)(state["discriminator"]["params"])
    d_params, opt_d_state = common.update(opt_d, d_grads, state["opt_d"],
                                          state["discriminator"]["params"], state["lr_scale"],
                                          value=dl)
    new_state = {
        **state,
        "embedder": common.with_params(emb_vars, params["embedder"]),
        "extractor": common.with_params(state["extractor"], params["extractor"]),
        "discriminator": {"params": d_params},
        "opt_g": opt_g_state, "opt_d": opt_d_state, "step": state["step"] + 1,
    }
    return new_state, {**scalars, "d_loss": dl}

  return step


def make_embed_fn(cfg, w_HxWxC):
  """Jitted B -> B' with H in inference mode."""
  H = models.embedder(cfg)
  w = jnp.asarray(w_HxWxC)
  ctx = cfg.stage1.get("context", 0)
  return jax.jit(lambda variables, b: models.with_context(
      lambda x: H.apply(variables, x, w, train=False), b, ctx))


def make_extract_fn(cfg):
  R = models.extractor(cfg)
  return jax.jit(lambda variables, x: R.apply(variables, x))
