"""The stage-1 fidelity band: a cost in dB outside [lo, hi], none inside."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepwm_jax import config, losses, metrics, pipeline
from deepwm_jax.errors import DeepwmError

TINY = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py")


def test_band_is_the_distance_outside_and_zero_inside():
  v = jnp.array([38.0, 40.0, 41.0, 42.0, 45.5])
  np.testing.assert_allclose(losses.band(v, 40.0, 42.0), [2.0, 0.0, 0.0, 0.0, 3.5])
  np.testing.assert_allclose(losses.ssim_dB(jnp.array([0.99, 0.999])), [20.0, 30.0], rtol=1e-4)


def _images():
  rng = np.random.default_rng(0)
  b = jnp.asarray(rng.uniform(0.2, 0.8, (2, 16, 16, 3)), jnp.float32)
  noise = jnp.asarray(rng.normal(0, 1, b.shape), jnp.float32)
  return b, noise


@pytest.mark.parametrize("which", ["psnr", "ssim"])
def test_band_pushes_too_faint_residuals_up_and_too_strong_ones_down(which):
  """d cost / d strength of a residual: < 0 above the band (too faithful: add more), > 0
  below it (too visible: add less), 0 inside."""
  b, noise = _images()
  lo, hi = (40.0, 42.0) if which == "psnr" else (
      float(losses.ssim_dB(0.997)), float(losses.ssim_dB(0.9985)))

  def value_dB(eps):
    b_wm = b + eps * noise
    if which == "psnr":
      return metrics.psnr(b_wm, b)
    return losses.ssim_dB(metrics.ssim(b_wm, b))

  def cost(eps):
    return jnp.mean(losses.band(value_dB(eps), lo, hi))

  strengths = np.geomspace(1e-4, 1e-1, 200)
  values = np.array([float(jnp.mean(value_dB(e))) for e in strengths])
  faint, inside, strong = (strengths[values > hi + 1][0], strengths[(values > lo + 0.2)
                           & (values < hi - 0.2)][0], strengths[values < lo - 1][0])
  assert float(jax.grad(cost)(faint)) < 0
  assert float(cost(inside)) == 0.0 and float(jax.grad(cost)(inside)) == 0.0
  assert float(jax.grad(cost)(strong)) > 0


def _band_steps(ramp=(0.0, 0.0), n=2):
  from deepwm_jax.train import stage1
  cfg = config.load(TINY)
  cfg.stage1.fidelity_band.update(weight=1.0, ramp=ramp)
  s, c = cfg.data.image_size, cfg.data.channels
  w = np.random.default_rng(4).uniform(0, 1, (s, s, c)).astype(np.float32)
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), w)
  step = stage1.make_step(cfg, w, np.ones_like(w))
  rng = np.random.default_rng(5)
  batch = {k: jnp.asarray(rng.uniform(0, 1, (cfg.stage1.batch, s, s, c)), jnp.float32)
           for k in ("a", "b")}
  for k in range(n):
    state, m = step(state, batch, jax.random.PRNGKey(k))
  return {k: float(v) for k, v in m.items()}


def test_stage1_with_the_band_logs_it_and_pays_it():
  """Two stage-1 steps with the band on: H starts at the identity (far above the band), so
  the step's loss carries band_dB > 0, and the metrics say so."""
  m = _band_steps()
  assert all(np.isfinite(v) for v in m.values())
  assert m["psnr"] > 42.0 and m["band_dB"] > m["psnr"] - 42.0 > 0  # SSIM adds its own part
  assert 0.99 < m["ssim"] <= 1.0


def test_a_ramped_band_costs_nothing_before_it_starts():
  """stage1.fidelity_band.ramp = (0.5, 1): at the first step the band is measured (band_dB)
  but weighs nothing, so the loss is the band-free loss; without the ramp it is added."""
  ramped, full = _band_steps((0.5, 1.0), n=1), _band_steps(n=1)
  assert ramped["band_dB"] == pytest.approx(full["band_dB"]) and full["band_dB"] > 0
  assert full["loss"] - ramped["loss"] == pytest.approx(full["band_dB"], rel=1e-3)


@pytest.mark.parametrize("field, bad", [("weight", -1.0), ("psnr", (42.0, 40.0)),
                                        ("psnr", (40.0,)), ("ssim", (0.99, 1.0)),
                                        ("ramp", (0.8, 0.2)), ("ramp", (0.5,))])
def test_bad_band_values_are_refused(field, bad):
  cfg = config.load(TINY)
  cfg.stage1.fidelity_band[field] = bad
  with pytest.raises(DeepwmError, match=f"stage1.fidelity_band.{field}"):
    config.validate(cfg)


def test_a_workdir_from_before_the_band_resumes(tmp_path):
  """A run written before stage1.fidelity_band existed had no band: same config, resumable."""
  cfg = config.load(TINY)
  saved = json.loads(cfg.to_json_best_effort())
  del saved["stage1"]["fidelity_band"]
  with open(tmp_path / "config.json", "w") as f:
    json.dump(saved, f)
  pipeline.check_workdir_config(cfg, str(tmp_path))  # no error
  cfg.stage1.fidelity_band.weight = 1.0
  with pytest.raises(DeepwmError, match="stage1.fidelity_band.weight"):
    pipeline.check_workdir_config(cfg, str(tmp_path))


def test_stage1_guard_waits_for_the_band_to_reach_full_weight():
  """PSNR falls on purpose while a ramped band is not yet at full weight (H and R begin to
  embed): the collapse check starts at the ramp's end, or at a tenth of the steps without one."""
  from deepwm_jax.stages import common
  c = config.load("keyed")
  c.stage1.steps = 800
  assert common.stage1_guard(c).warmup == 400  # the band ramped in over the first half
  c.stage1.fidelity_band.ramp = (0.0, 0.0)
  assert common.stage1_guard(c).warmup == 80
  c.stage1.fidelity_band.update(weight=0.0, ramp=(0.0, 0.9))  # no band: the ramp means nothing
  assert common.stage1_guard(c).warmup == 80
