"""Degradations that turn clean images B into task inputs A (deraining is the default task).

All kinds are deterministic given the seed, vectorised over the batch, and clip to [0, 1].
Rain is drawn in the Fourier domain: sparse drops convolved with a per-image line kernel
(random angle, length, width), which is one batched FFT instead of N small convolutions.
Streaks wrap around the image borders (circular convolution); on rain that is invisible.
"""
import numpy as np
from scipy import fft, ndimage

from deepwm_jax.errors import DeepwmError

KINDS = ("rain", "noise", "blur", "none")

# Rain parameters at strength 1, chosen to look like the synthetic sets (Rain100L/H):
# near-vertical streaks, a few px to a few tens of px long, one direction per image.
_RAIN_ANGLE_DEG = 25.0          # |angle from vertical| <= this.
_RAIN_LENGTH_PX = (6.0, 20.0)   # Streak length, capped at half the image side.
_RAIN_WIDTH_PX = (0.45, 0.9)    # Gaussian cross-section: a slightly blurred 1-2 px line.
_RAIN_DENSITY = (0.004, 0.012)  # Drops per pixel.
_RAIN_BRIGHTNESS = (0.35, 0.9)  # Peak streak value before the screen blend.
_NOISE_SIGMA = 0.1
_BLUR_SIGMA = 1.5
_CHUNK_PIXELS = 2 ** 20         # Pixels per FFT batch: bounds memory at a few tens of MB.


def _wrapped_coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel offsets from the origin with wrap-around (0, 1, ..., -1), as FFT kernels need."""
  return (np.fft.fftfreq(h) * h).astype(np.float32), (np.fft.fftfreq(w) * w).astype(np.float32)


def _line_kernels(h: int, w: int, angle_N: np.ndarray, length_N: np.ndarray,
                  width_N: np.ndarray) -> np.ndarray:
  """NxHxW kernels: a line segment through the origin, Gaussian profile, peak 1."""
  ys, xs = _wrapped_coords(h, w)
  y_1xHx1, x_1x1xW = ys[None, :, None], xs[None, None, :]
  dy, dx = np.cos(angle_N)[:, None, None], np.sin(angle_N)[:, None, None]
  along = y_1xHx1 * dy + x_1x1xW * dx
  across = -y_1xHx1 * dx + x_1x1xW * dy
  half = length_N[:, None, None] / 2
  # Distance to the segment: perpendicular inside it, to the nearer end outside it.
  beyond = np.maximum(np.abs(along) - half, 0.0)
  d2 = across ** 2 + beyond ** 2
  return np.exp(-d2 / (2 * width_N[:, None, None] ** 2)).astype(np.float32)


def rain_layers(n: int, h: int, w: int, rng: np.random.Generator,
                strength: float = 1.0) -> np.ndarray:
  """NxHxW rain streak layers in [0, 1], a different pattern per image."""
  def u(lo_hi, size):
    return rng.uniform(lo_hi[0], lo_hi[1], size).astype(np.float32)
  angle = np.deg2rad(rng.uniform(-_RAIN_ANGLE_DEG, _RAIN_ANGLE_DEG, n)).astype(np.float32)
  length = np.minimum(u(_RAIN_LENGTH_PX, n), min(h, w) / 2)
  width = u(_RAIN_WIDTH_PX, n)
  density = u(_RAIN_DENSITY, n) * strength
  brightness = np.clip(u(_RAIN_BRIGHTNESS, n) * strength, 0.0, 1.0)
  drops = (rng.random((n, h, w), np.float32) < density[:, None, None]).astype(np.float32)
  # Drops vary in brightness so streaks do not all look alike.
  drops *= 0.6 + 0.4 * rng.random((n, h, w), np.float32)
  kernels = _line_kernels(h, w, angle, length, width)
  layer = fft.irfft2(fft.rfft2(drops, workers=-1) * fft.rfft2(kernels, workers=-1), s=(h, w),
                     workers=-1)
  return np.clip(layer * brightness[:, None, None], 0.0, 1.0).astype(np.float32)


def _rain(b_NxHxWxC: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  n, h, w, _ = b_NxHxWxC.shape
  out = np.empty_like(b_NxHxWxC)
  chunk = max(1, _CHUNK_PIXELS // (h * w))
  for i in range(0, n, chunk):
    b = b_NxHxWxC[i:i + chunk]
    r = rain_layers(len(b), h, w, rng, strength)[..., None]
    out[i:i + chunk] = b + r - b * r  # Screen blend: streaks brighten, never exceed 1.
  return out


def degrade(b_NxHxWxC: np.ndarray, kind: str, seed: int, strength: float = 1.0) -> np.ndarray:
  """Task inputs A from clean images B: kind in KINDS, deterministic given `seed`."""
  if kind not in KINDS:
    raise DeepwmError(f"unknown degradation '{kind}'; use one of {', '.join(KINDS)}")
  b = np.asarray(b_NxHxWxC, np.float32)
  if b.ndim != 4:
    raise ValueError(f"expected NxHxWxC images, got shape {b.shape}")
  rng = np.random.default_rng(seed)
  if kind == "rain":
    a = _rain(b, rng, strength)
  elif kind == "noise":
    a = b + _NOISE_SIGMA * strength * rng.standard_normal(b.shape, np.float32)
  elif kind == "blur":
    s = _BLUR_SIGMA * strength
    a = ndimage.gaussian_filter(b, sigma=(0, s, s, 0), mode="reflect") if s > 0 else b.copy()
  else:
    a = b.copy()
  return np.clip(a, 0.0, 1.0).astype(np.float32)
