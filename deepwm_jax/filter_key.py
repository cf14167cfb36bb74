"""The keyed filter: a watermark that is a fixed function of the image's own content.

  B' = B + eps * sum_d K[d, c] * (Y(p + d) - Y(p - d))      for every pixel p and channel c

Y is the image's luma (the mean of its channels), d runs over half of the offsets of a
(2 radius + 1)^2 square (d and -d give the same difference, so one of each pair), and K, the
owner's secret key, holds one random sign per offset and output channel. The watermark is an
odd (antisymmetric) filter of the content: it sits on edges, it has no position, period or
frame, and a model that learns to serve B' learns the filter whatever its architecture,
because the filter is a function of what the model sees in any window. Convolutional
imitators of every family the package trains copy it, on crops and on whole photos (see
docs/filter.md).

Reading: a suspect's image S is regressed on the odd differences of a reference image by
least squares, one coefficient per key bit, and the coefficients are judged by the exact test
of secret_key.py. With a reference (the owner's own output M(A) for the input A the suspect
was given) the regression is of S - M(A): the suspect's residual against what the owner
would have served. Without one, S is regressed on its own differences: natural images have
no odd structure to speak of, so this reads protected images alone, more weakly. Either way
the coefficients of an image that does not carry the owner's key are independent of that key,
so the test's p-value holds for any innocent model (docs/verdicts.md).

Everything here is numpy over single images [H, W, C] in [0, 1], of any size, processed in
bands of rows so that memory stays bounded.
"""
import numpy as np

from deepwm_jax import secret_key
from deepwm_jax.errors import DeepwmError

BAND_ROWS = 256  # rows of features built at once: ~100 MB for a 4096 px wide image at radius 3


def offsets(radius: int) -> list[tuple[int, int]]:
  """The half of the (2 radius + 1)^2 offsets that are lexicographically after (0, 0)."""
  if radius < 1:
    raise DeepwmError(f"the filter's radius must be >= 1, got {radius}")
  r = range(-radius, radius + 1)
  return [(dy, dx) for dy in r for dx in r if (dy, dx) > (0, 0)]


def n_bits(radius: int, channels: int) -> int:
  return len(offsets(radius)) * channels


def new_key(radius: int, channels: int, seed: int | None = None) -> np.ndarray:
  """A random key of shape [len(offsets(radius)), channels] in {-1, +1}."""
  return secret_key.new_key(n_bits(radius, channels), seed).reshape(-1, channels)


def check_key(key, radius: int, channels: int) -> np.ndarray:
  k = np.asarray(key, np.float64)
  want = (len(offsets(radius)), channels)
  if k.shape != want or not np.all(np.abs(k) == 1):
    raise DeepwmError(f"a filter key for radius {radius} and {channels} channels is {want} "
                      f"signs, got shape {k.shape}")
  return k


def _luma_padded(img: np.ndarray, radius: int) -> np.ndarray:
  return np.pad(img.astype(np.float64).mean(-1), radius, mode="reflect")


def _band_features(y_pad: np.ndarray, radius: int, r0: int, r1: int, width: int) -> np.ndarray:
  """[r1 - r0, width, n_offsets]: Y(p + d) - Y(p - d) for the image rows r0..r1."""
  cols = []
  for dy, dx in offsets(radius):
    plus = y_pad[radius + r0 + dy:radius + r1 + dy, radius + dx:radius + dx + width]
    minus = y_pad[radius + r0 - dy:radius + r1 - dy, radius - dx:radius - dx + width]
    cols.append(plus - minus)
  return np.stack(cols, -1)


def _check_image(img: np.ndarray, radius: int, what: str) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim != 3 or min(img.shape[:2]) <= radius:
    raise DeepwmError(f"{what}: need an image [H, W, C] larger than {radius} px on each side, "
                      f"got shape {img.shape}")
  return img


def embed(img, key, eps: float, radius: int) -> np.ndarray:
  """B' for one image [H, W, C]: B plus eps times the keyed filter of its luma, clipped to
  [0, 1], float32, the same shape."""
  img = _check_image(img, radius, "embed")
  h, w, c = img.shape
  k = check_key(key, radius, c)
  y_pad = _luma_padded(img, radius)
  out = np.empty(img.shape, np.float32)
  for r0 in range(0, h, BAND_ROWS):
    r1 = min(h, r0 + BAND_ROWS)
    f = _band_features(y_pad, radius, r0, r1, w)
    out[r0:r1] = np.clip(img[r0:r1] + eps * (f @ k), 0.0, 1.0)
  return out


def normal_equations(img, reference, radius: int) -> tuple[np.ndarray, np.ndarray]:
  """(F^T F [n, n], F^T e [n, C]) of the regression of one image's residual e on the odd
  differences F of the reference's luma; without a reference, of the image (less its mean)
  on its own differences. Sums over images give a set's regression."""
  img = _check_image(img, radius, "reading")
  h, w, c = img.shape
  if reference is not None:
    reference = np.asarray(reference)
    if reference.shape != img.shape:
      raise DeepwmError(f"a reference must have its image's shape: got {reference.shape} for "
                        f"an image of {img.shape}")
    base, target = reference, img.astype(np.float64) - reference
  else:
    base, target = img, img.astype(np.float64) - img.mean((0, 1))
  y_pad = _luma_padded(base, radius)
  n = len(offsets(radius))
  ftf, fte = np.zeros((n, n)), np.zeros((n, c))
  for r0 in range(0, h, BAND_ROWS):
    r1 = min(h, r0 + BAND_ROWS)
    f = _band_features(y_pad, radius, r0, r1, w).reshape(-1, n)
    ftf += f.T @ f
    fte += f.T @ target[r0:r1].reshape(-1, c)
  return ftf, fte


def solve(ftf: np.ndarray, fte: np.ndarray) -> np.ndarray:
  """Least-squares coefficients [n * C] (offset-major, as the key is flattened); a flat image
  (no differences at all) reads all zeros."""
  scale = max(float(np.trace(ftf)) / len(ftf), 1e-300)
  coef = np.linalg.solve(ftf + 1e-9 * scale * np.eye(len(ftf)), fte)
  return coef.ravel()


def align(img, reference, max_shift: int):
  """(img, reference) cut to their overlap after the integer translation, within max_shift px,
  that best registers img onto reference (phase correlation of their lumas), and the shift.
  The shift is found from the two images alone, never from the key, so reading the aligned
  pair keeps the exact bound without counting the shifts tried."""
  from skimage.registration import phase_cross_correlation  # only where a search is asked for
  img, reference = np.asarray(img), np.asarray(reference)
  shift, _, _ = phase_cross_correlation(reference.mean(-1), img.mean(-1),
                                        normalization="phase")
  dy, dx = (int(np.clip(round(float(v)), -max_shift, max_shift)) for v in shift)
  h, w = img.shape[:2]
  # img moved by (dy, dx) matches reference: reference[y, x] ~ img[y - dy, x - dx].
  ys, yd = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
  xs, xd = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
  return img[ys, xs], reference[yd, xd], (dy, dx)


def _equations(images, radius: int, references=None) -> list:
  refs = [None] * len(images) if references is None else list(references)
  if len(refs) != len(images):
    raise DeepwmError(f"{len(images)} images but {len(refs)} references; give one reference "
                      f"(the owner's output for the same input) per image")
  return [normal_equations(x, ref, radius) for x, ref in zip(images, refs)]


def readings(images, radius: int, references=None) -> np.ndarray:
  """Per-image readings [N, n_bits]: each image's least-squares coefficients, one per key bit
  (with `references`, one per image, against the owner's outputs)."""
  return np.stack([solve(*eq) for eq in _equations(images, radius, references)])


def read(images, radius: int, references=None) -> tuple[np.ndarray, np.ndarray]:
  """(per-image readings [N, n_bits], the set's reading [n_bits]). The set is read by one
  regression over all its pixels (the images' normal equations summed), which weighs each
  image by how much it says: a flat crop, whose own coefficients are mostly noise, counts for
  little, where summing per-image coefficients would let it swamp the rest."""
  eqs = _equations(images, radius, references)
  per_image = np.stack([solve(*eq) for eq in eqs])
  pooled = solve(sum(e[0] for e in eqs), sum(e[1] for e in eqs))
  return per_image, pooled


def decide(per_image: np.ndarray, pooled: np.ndarray, key, alpha: float) -> secret_key.KeyVerdict:
  """The exact signed-rank verdict (secret_key.py) on each image's reading and on the set's.
  Both are functions of the images (and references) alone, so for images that do not carry
  the key the bound holds."""
  k = secret_key.check_key(np.asarray(key).ravel())
  if not 0 < alpha < 1:
    raise DeepwmError(f"alpha must be in (0, 1), got {alpha}")
  return secret_key.verdict(k.size, secret_key.rank_sum(per_image, k),
                            secret_key.matches(per_image, k),
                            float(secret_key.rank_sum(pooled, k)),
                            int(secret_key.matches(pooled, k)), alpha)
