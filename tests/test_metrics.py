"""Fidelity metrics against known values, and the two NC pitfalls of docs/verdicts.md."""
import jax
import numpy as np
import pytest

from deepwm_jax import metrics
from deepwm_jax.errors import DeepwmError


def _logo(size: int = 32, channels: int = 1) -> np.ndarray:
  """A dark 'T' on white covering ~13% of the image, like the probe's logo."""
  w = np.ones((size, size, channels), np.float32)
  w[6:10, 5:27] = 0.0
  w[10:26, 14:18] = 0.0
  return w


def test_psnr_identical_is_clamped():
  a = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype(np.float32)
  p = np.asarray(metrics.psnr(a, a))
  assert p.shape == (3,)
  np.testing.assert_allclose(p, metrics.PSNR_MAX_DB)


def test_psnr_constant_offset_is_20db():
  a = np.full((2, 16, 16, 1), 0.5, np.float32)
  np.testing.assert_allclose(np.asarray(metrics.psnr(a, a + 0.1)), 20.0, atol=1e-3)


def test_ssim_identical_is_one_and_bounded():
  rng = np.random.default_rng(1)
  a = rng.uniform(size=(2, 24, 24, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
  np.testing.assert_allclose(np.asarray(metrics.ssim(a, a)), 1.0, atol=1e-5)
  s = np.asarray(metrics.ssim(a, b))
  assert s.shape == (2,) and np.all(s < 0.9) and np.all(s >= -1.0)


def test_metrics_are_jittable_and_check_shapes():
  a = np.zeros((2, 8, 8, 1), np.float32)  # smaller than the SSIM window
  assert jax.jit(metrics.ssim)(a, a).shape == (2,)
  with pytest.raises(DeepwmError):
    metrics.psnr(a, a[:1])


def test_nc_of_watermark_is_one():
  w = _logo()
  np.testing.assert_allclose(np.asarray(metrics.nc(w[None], w)), 1.0, atol=1e-6)


def test_nc_pitfall_blank_scores_high():
  w = _logo()
  blank = np.ones_like(w)
  value = float(metrics.nc(blank[None], w)[0])
  assert 0.9 < value < 0.95  # the paper's NC calls an empty extraction almost a success


def test_centered_nc_pitfall_faint_trace():
  w = _logo()
  blank = np.ones_like(w)
  faint = blank + 0.001 * (w - blank)  # within 1e-6 MSE of the blank
  np.testing.assert_allclose(np.asarray(metrics.centered_nc(w[None], w)), 1.0, atol=1e-5)
  assert float(metrics.centered_nc(faint[None], w)[0]) > 0.99
  assert float(metrics.centered_nc(blank[None], w)[0]) == 0.0


def test_nc_clips_and_broadcasts():
  w = _logo(channels=3)
  r = np.stack([w * 2.0, w])  # values above 1 are clipped away
  np.testing.assert_allclose(np.asarray(metrics.nc(r, w)), 1.0, atol=1e-6)


def test_paper_success_rate():
  assert metrics.paper_success_rate(np.array([0.9, 0.96, 0.99, 0.95])) == 0.5
  with pytest.raises(DeepwmError):
    metrics.paper_success_rate(np.array([]))
