"""Augmentation attacks: random geometric transforms during surrogate training.

A surrogate trained on (A, B') pairs that are flipped, rotated, cropped or rescaled (the same
transform on A and on B', so the task is unchanged) no longer sees the watermark at one fixed
place: this is the known weakness of spatial box-free watermarks (docs/zoo.md, Zhang
et al. arXiv 2108.02360). The zoo measures how much of the watermark survives it.

  augment(spec, x, y, rng) -> (x, y)

`x`, `y` are NHWC float arrays of the same shape; each image pair gets its own random draw
from `rng` (a numpy Generator). `spec` is one or more of, joined by '+':

  'none'        identity
  'flip'        horizontal flip with probability 1/2 (the reference attack code's only one)
  'vflip'       vertical flip with probability 1/2
  'rot90'       rotation by a random multiple of 90 degrees
  'rotate:D'    rotation by an angle uniform in [-D, D] degrees (bilinear, reflect borders)
  'crop:F'      a random crop whose side is uniform in [F, 1] of the image, resized back
  'rescale:F'   zoom about the centre by a factor uniform in [F, 1/F] (F in (0, 1]):
                zooming in crops, zooming out pads by reflection
  'shift:P'     a translation by a whole number of pixels uniform in [-P, P] along each
                axis, wrapping round. Where a kit repeats its watermark with the crop's
                period (a keyed kit tiles its windows), this is what an attacker sees who
                cuts its training crops at any offset of large served images
"""
import numpy as np
from scipy import ndimage

from deepwm_jax.zoo import specs
from deepwm_jax.errors import DeepwmError

# kind -> None (no value) or (value type, valid values, validity check, example): specs.py
KINDS = {"none": None, "flip": None, "vflip": None, "rot90": None,
         "rotate": (float, "an angle in degrees in (0, 180]", lambda v: 0 < v <= 180, 15),
         "crop": (float, "a fraction in (0, 1]", lambda v: 0 < v <= 1, 0.7),
         "rescale": (float, "a factor in (0, 1]", lambda v: 0 < v <= 1, 0.7),
         "shift": (int, "a whole number of pixels >= 1", lambda v: isinstance(v, int) and v >= 1,
                   16)}


def parse(spec: str) -> list[tuple[str, float | None]]:
  """'flip+crop:0.7' -> [('flip', None), ('crop', 0.7)]; raises DeepwmError when invalid."""
  return specs.parse(spec, KINDS, "augmentation")


def augment(spec: str, x, y, rng: np.random.Generator):
  """Applies the same random transform to each pair (x[i], y[i])."""
  steps = [s for s in parse(spec) if s[0] != "none"]
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  if x.shape != y.shape or x.ndim != 4:
    raise DeepwmError(f"augmentation needs two NHWC batches of one shape, got {x.shape} and "
                      f"{y.shape}")
  if not steps:
    return x, y
  xs, ys = x.copy(), y.copy()
  for i in range(len(x)):
    for kind, value in steps:
      xs[i], ys[i] = _ONE[kind](xs[i], ys[i], value, rng)
  return xs, ys


def _flip(a, b, value, rng, axis=1):
  del value
  if rng.random() < 0.5:
    return np.flip(a, axis), np.flip(b, axis)
  return a, b


def _vflip(a, b, value, rng):
  return _flip(a, b, value, rng, axis=0)


def _rot90(a, b, value, rng):
  del value
  k = int(rng.integers(0, 4))
  if a.shape[0] != a.shape[1] and k % 2:
    k = 2 * (k // 2)  # keep the shape of non-square images
  return np.rot90(a, k, (0, 1)), np.rot90(b, k, (0, 1))


def _warp(a, b, matrix_2x2, offset_2):
  """Output pixel o samples input pixel matrix @ (o - c) + c + offset (c the centre)."""
  h, w = a.shape[:2]
  c = np.array([(h - 1) / 2, (w - 1) / 2])
  m = np.eye(3)
  m[:2, :2] = matrix_2x2
  off = np.zeros(3)
  off[:2] = c + offset_2 - matrix_2x2 @ c
  warp = lambda img: ndimage.affine_transform(img, m, off, order=1, mode="reflect")
  return warp(a), warp(b)


def _rotate(a, b, degrees, rng):
  t = np.deg2rad(rng.uniform(-degrees, degrees))
  return _warp(a, b, np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]), np.zeros(2))


def _crop(a, b, frac, rng):
  s = rng.uniform(frac, 1.0)
  h, w = a.shape[:2]
  # The crop (side s) lies inside the image: its centre moves at most (1 - s) / 2 of a side.
  shift = (rng.uniform(-1, 1, 2) * (1 - s) / 2) * np.array([h - 1, w - 1])
  return _warp(a, b, s * np.eye(2), shift)


def _rescale(a, b, frac, rng):
  zoom = np.exp(rng.uniform(np.log(frac), -np.log(frac)))
  return _warp(a, b, np.eye(2) / zoom, np.zeros(2))


def _shift(a, b, pixels, rng):
  dy, dx = (int(v) for v in rng.integers(-pixels, pixels + 1, 2))
  return np.roll(a, (dy, dx), (0, 1)), np.roll(b, (dy, dx), (0, 1))


_ONE = {"flip": _flip, "vflip": _vflip, "rot90": _rot90, "rotate": _rotate, "crop": _crop,
        "rescale": _rescale, "shift": _shift}
