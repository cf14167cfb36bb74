"""The stage-2 step on its own: its loss is the documented formula, and a few steps move R's
extractions of surrogate outputs toward the watermark and of negatives toward the blank."""
import jax
import jax.numpy as jnp
import numpy as np

from deepwm_jax import losses, models
from deepwm_jax.data import watermarks
from deepwm_jax.train import stage2


def _setup(tiny_cfg):
  cfg = tiny_cfg.copy_and_resolve_references()
  cfg.stage2.optimizer.lr = 3e-3  # a few steps must show the direction
  cfg.stage2.steps = 30  # the schedule's length
  s, c = cfg.data.image_size, cfg.data.channels
  w = watermarks.watermark_image("logo", s, c)
  blank = watermarks.blank_image(s, c)
  R = models.extractor(cfg)
  variables = models.init_variables(R, jax.random.PRNGKey(0), jnp.zeros((2, s, s, c)))
  rng = np.random.default_rng(0)
  noise = lambda n: rng.uniform(size=(n, s, s, c)).astype(np.float32)
  # Positives carry a visible trace of w, negatives none: R can tell them apart.
  batch = {"surrogate": 0.4 * noise(4) + 0.6 * w, "watermarked": 0.3 * noise(4) + 0.7 * w,
           "negative": 0.4 * noise(8) + 0.3}
  batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
  return cfg, R, {"params": variables["params"]}, w, blank, batch


def _terms(R, params, batch, w, blank):
  r = lambda x: R.apply({"params": params}, x)
  return (losses.mse(r(batch["surrogate"]), w), losses.mse(r(batch["watermarked"]), w),
          losses.mse(r(batch["negative"]), blank), losses.consistency(r(batch["surrogate"])))


def test_stage2_loss_is_the_documented_sum(tiny_cfg):
  cfg, R, ext, w, blank, batch = _setup(tiny_cfg)
  state = stage2.init_state(cfg, ext)
  _, m = stage2.make_step(cfg, w, blank)(state, batch, jax.random.PRNGKey(0))
  sur, wm, neg, cons = _terms(R, ext["params"], batch, w, blank)
  wt, s = cfg.stage2.weights, cfg.stage2.loss_scale
  expected = s * (wt.surrogate * sur + wt.watermark * wm + wt.clean * neg + wt.consistency * cons)
  np.testing.assert_allclose(float(m["loss"]), float(expected), rtol=1e-4)
  np.testing.assert_allclose([float(m[k]) for k in ("sur_mse", "wm_mse", "neg_mse", "cons_mse")],
                             [float(sur), float(wm), float(neg), float(cons)], rtol=1e-4)


def test_stage2_steps_pull_surrogates_to_w_and_negatives_to_blank(tiny_cfg):
  cfg, R, ext, w, blank, batch = _setup(tiny_cfg)
  step = stage2.make_step(cfg, w, blank)
  state = stage2.init_state(cfg, ext)
  before = _terms(R, ext["params"], batch, w, blank)
  for i in range(30):
    state, m = step(state, batch, jax.random.PRNGKey(i))
  after = _terms(R, state["extractor"]["params"], batch, w, blank)
  assert int(state["step"]) == 30
  assert float(after[0]) < 0.75 * float(before[0])  # R(SM(A)) -> w
  assert float(after[2]) < 0.75 * float(before[2])  # R(negative) -> blank
  # The state holds R alone: stage 2 cannot move H.
  assert set(state) == {"extractor", "opt", "step", "lr_scale"}
