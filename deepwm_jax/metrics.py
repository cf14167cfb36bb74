"""Image metrics of the method: fidelity (PSNR, SSIM) and the paper's watermark correlation (NC).

Every function takes a batch of NHWC float images in [0, 1] and returns one value per image, so
they can be jitted and averaged by the caller. The paper's NC is reported for comparison only:
the detection decision uses `deepwm_jax.verdict` (docs/verdicts.md says why).
"""
import dm_pix
import jax.numpy as jnp
import numpy as np

from deepwm_jax.errors import DeepwmError

# PSNR of identical images is infinite; 100 dB (MSE 1e-10) is far beyond any real output and
# keeps means and JSON finite.
PSNR_MAX_DB = 100.0
_MSE_FLOOR = 10.0 ** (-PSNR_MAX_DB / 10.0)

# docs/verdicts.md: Gaussian window 11, sigma 1.5, data range 1.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5

# The paper's success threshold on NC.
PAPER_NC_THRESHOLD = 0.95

_IMAGE_AXES = (-3, -2, -1)


def _check_pair(a, b, what: str) -> None:
  """Shapes are static under jit, so this check costs nothing at run time."""
  if a.ndim != 4 or a.shape != b.shape:
    raise DeepwmError(
        f"{what} needs two NHWC batches of the same shape, got {a.shape} and {b.shape}; "
        "pass images as [N, H, W, C] arrays.")


def psnr(a_NxHxWxC, b_NxHxWxC) -> jnp.ndarray:
  """Per-image PSNR in dB (data range 1), clamped at `PSNR_MAX_DB` for identical images."""
  _check_pair(a_NxHxWxC, b_NxHxWxC, "psnr")
  a = jnp.asarray(a_NxHxWxC, jnp.float32)
  b = jnp.asarray(b_NxHxWxC, jnp.float32)
  mse_N = jnp.mean(jnp.square(a - b), axis=_IMAGE_AXES)
  # Same formula as dm_pix.psnr, with the MSE floored so identical images give a finite value.
  return -10.0 * jnp.log10(jnp.maximum(mse_N, _MSE_FLOOR))


def ssim(a_NxHxWxC, b_NxHxWxC) -> jnp.ndarray:
  """Per-image SSIM (Gaussian window 11, sigma 1.5, data range 1), via dm_pix.

  Images smaller than the window (tiny test configs) use a window of their own size, since a
  valid-mode filter needs at least one full window.
  """
  _check_pair(a_NxHxWxC, b_NxHxWxC, "ssim")
  a = jnp.asarray(a_NxHxWxC, jnp.float32)
  b = jnp.asarray(b_NxHxWxC, jnp.float32)
  window = min(SSIM_WINDOW, a.shape[1], a.shape[2])
  return dm_pix.ssim(a, b, max_val=1.0, filter_size=window, filter_sigma=SSIM_SIGMA)


def _broadcast_watermark(r_NxHxWxC, w, what: str):
  """Clips r to [0, 1] (R's output is linear; docs/method.md) and broadcasts w to it."""
  r = jnp.clip(jnp.asarray(r_NxHxWxC, jnp.float32), 0.0, 1.0)
  w = jnp.asarray(w, jnp.float32)
  if r.ndim != 4 or w.ndim not in (3, 4) or w.shape[-3:] != r.shape[-3:]:
    raise DeepwmError(
        f"{what} needs extractions [N, H, W, C] and a watermark [H, W, C] of the same image "
        f"size, got {r.shape} and {w.shape}.")
  return r, jnp.broadcast_to(w, r.shape)


def nc(r_NxHxWxC, w_HxWxC, eps: float = 1e-12) -> jnp.ndarray:
  """The paper's normalized correlation sum(w*r) / sqrt(sum(w^2) * sum(r^2)), per image.

  Uncentered, so an all-white extraction already scores high against a dark-on-white logo;
  kept only to compare with the paper.
  """
  r, w = _broadcast_watermark(r_NxHxWxC, w_HxWxC, "nc")
  num = jnp.sum(w * r, axis=_IMAGE_AXES)
  den = jnp.sqrt(jnp.sum(w * w, axis=_IMAGE_AXES) * jnp.sum(r * r, axis=_IMAGE_AXES))
  return num / (den + eps)


def centered_nc(r_NxHxWxC, w_HxWxC, eps: float = 1e-12) -> jnp.ndarray:
  """Pearson correlation between r and w, per image (0 when either image is flat).

  Blind to amplitude: a faint trace of w on a blank extraction scores close to 1.
  """
  r, w = _broadcast_watermark(r_NxHxWxC, w_HxWxC, "centered_nc")
  rc = r - jnp.mean(r, axis=_IMAGE_AXES, keepdims=True)
  wc = w - jnp.mean(w, axis=_IMAGE_AXES, keepdims=True)
  num = jnp.mean(rc * wc, axis=_IMAGE_AXES)
  den = jnp.sqrt(jnp.mean(rc * rc, axis=_IMAGE_AXES) * jnp.mean(wc * wc, axis=_IMAGE_AXES))
  return num / (den + eps)


def paper_success_rate(nc_values, threshold: float = PAPER_NC_THRESHOLD) -> float:
  """Fraction of images whose NC exceeds `threshold`, as the papers report success."""
  values = np.asarray(nc_values, dtype=np.float64).ravel()
  if values.size == 0:
    raise DeepwmError("paper_success_rate got no NC values; extract from at least one image.")
  return float(np.mean(values > threshold))
