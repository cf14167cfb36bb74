"""embedder.texture_mask: H's residual scaled by the local contrast of B."""
import jax
import numpy as np
import pytest
from scipy import ndimage

from deepwm_jax import config, models
from deepwm_jax.errors import DeepwmError


def test_the_mask_is_the_local_contrast_over_sigma0_capped_at_one():
  rng = np.random.default_rng(0)
  x = np.full((2, 40, 56, 3), 0.5, np.float32)
  x[:, :, 28:] += rng.normal(0, 0.1, (2, 40, 28, 3)).astype(np.float32)  # right half textured
  m = np.asarray(models.texture_mask(x, 0.02))
  assert m.shape == (2, 40, 56, 1) and m.min() >= 0 and m.max() <= 1
  # The same local standard deviation from scipy (a mirrored edge, the same 6 px radius).
  y = x.mean(-1).astype(np.float64)
  blur = lambda a: ndimage.gaussian_filter(a, (0, 2, 2), mode="mirror", truncate=3.0)
  sd = np.sqrt(np.maximum(blur(y * y) - blur(y) ** 2, 0))
  np.testing.assert_allclose(m[..., 0], np.clip(sd / 0.02, 0, 1), atol=2e-3)
  assert m[:, :, :20].max() < 1e-3 and m[:, :, 36:].min() > 0.99  # flat: 0; texture: 1


def test_a_masked_embedder_leaves_smooth_areas_and_changes_texture_as_before():
  cfg = config.load("tiny")
  cfg.embedder.update(arch="cnn", depth=2)
  x = np.full((2, 32, 32, 3), 0.5, np.float32)
  x[:, :, 16:] = np.random.default_rng(1).uniform(size=(2, 32, 16, 3))
  H = models.embedder(cfg)
  v = H.init(jax.random.PRNGKey(0), x, None)
  # The last layer starts at zero (B' = B); give it weights so that there is a residual.
  v = jax.tree_util.tree_map(lambda p: p + 0.05, v)
  y = np.asarray(H.apply(v, x, None))
  cfg.embedder.texture_mask = 0.02
  ym = np.asarray(models.embedder(cfg).apply(v, x, None))
  assert np.abs(y - x)[:, :, :8].mean() > 1e-3  # unmasked: the flat half changes too
  np.testing.assert_allclose(ym[:, :, :8], x[:, :, :8], atol=1e-5)  # masked: left alone
  np.testing.assert_allclose(ym[:, :, 24:], y[:, :, 24:], atol=1e-5)  # texture: unchanged


@pytest.mark.parametrize("value", [-0.1, 2.0])
def test_an_invalid_texture_mask_is_refused(value):
  cfg = config.load("tiny")
  cfg.embedder.texture_mask = value
  with pytest.raises(DeepwmError, match="embedder.texture_mask"):
    config.validate(cfg)
