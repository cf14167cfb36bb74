"""Key samples: images unlike the task data, each user's carrying that user's fingerprint.

A user's key image is a crop of one of the scikit-image photos (deepwm_jax.data.sources, all
splits pooled) blended with the user's pattern, a key-seeded binary grid:
  key = (1 - alpha) * crop + alpha * pattern_u
quantized to 8 bits, with the user's fingerprint written into the least significant bits.
The pattern makes each user's copy answer to its own keys only: during training, decoys
(crops of the same photos with fresh random patterns, or none) are taught to stay out of the
watermark class, so another user's keys do not trigger it (that is what attributes a leak).
The LSB fingerprint is invisible to the network (1/255 of the range); it authenticates the key
images themselves: whoever presents them can show whose they are.

The fingerprint of a user id is the 256 bits of SHA-256(id) drawn as a 16x16 binary image.
"""
import functools
import hashlib
import zlib

import numpy as np

from deepwm_jax.data import sources, splits
from deepwm_jax.errors import DeepwmError

FINGERPRINT_SIDE = 16
FINGERPRINT_BITS = FINGERPRINT_SIDE * FINGERPRINT_SIDE


def fingerprint(user_id: str) -> np.ndarray:
  """16x16 uint8 image of 0/1: the bits of SHA-256(user id), row by row."""
  digest = hashlib.sha256(user_id.encode("utf-8")).digest()
  return np.unpackbits(np.frombuffer(digest, np.uint8)).reshape(FINGERPRINT_SIDE, FINGERPRINT_SIDE)


# ----------------------------------------------------------------------------- LSB


def quantize(x: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> uint8, the form the LSBs live in (and key images are stored in)."""
  return np.clip(np.round(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def to_float(x_uint8: np.ndarray) -> np.ndarray:
  return np.asarray(x_uint8, np.float32) / 255.0


def lsb_embed(images_uint8: np.ndarray, fp_bits: np.ndarray) -> np.ndarray:
  """Writes the fingerprint bits, repeated to fill, into each image's LSBs (raster order)."""
  x = np.asarray(images_uint8)
  if x.dtype != np.uint8:
    raise DeepwmError(f"LSB embedding needs 8-bit images, got {x.dtype}; quantize() them first")
  bits = np.asarray(fp_bits, np.uint8).ravel()
  flat = x.reshape(len(x), -1)
  if flat.shape[1] < bits.size:
    raise DeepwmError(f"key images hold {flat.shape[1]} pixels but the fingerprint has "
                      f"{bits.size} bits; use larger images")
  tiled = np.resize(bits, flat.shape[1])
  return ((flat & 0xFE) | tiled).reshape(x.shape).astype(np.uint8)


def lsb_extract(images_uint8: np.ndarray, n_bits: int = FINGERPRINT_BITS) -> np.ndarray:
  """The fingerprint of each image: majority vote over the repeated copies, N x n_bits."""
  x = np.asarray(images_uint8)
  if x.dtype != np.uint8:
    raise DeepwmError(f"LSB extraction needs the 8-bit key images, got {x.dtype}; floats "
                      f"rounded from elsewhere may have lost the fingerprint")
  flat = (x.reshape(len(x), -1) & 1).astype(np.int32)
  copies = flat.shape[1] // n_bits
  if copies == 0:
    raise DeepwmError(f"images of {flat.shape[1]} pixels cannot hold a {n_bits}-bit fingerprint")
  votes = flat[:, :copies * n_bits].reshape(len(x), copies, n_bits).sum(1)
  return (2 * votes > copies).astype(np.uint8)


def authenticate(images_uint8: np.ndarray, user_id: str) -> np.ndarray:
  """Per image: does its LSB fingerprint equal the user's, bit for bit?"""
  want = fingerprint(user_id).ravel()
  return np.all(lsb_extract(images_uint8) == want[None], axis=1)


# ----------------------------------------------------------------------------- images


@functools.lru_cache(maxsize=4)
def _photos(channels: int) -> tuple:
  return tuple(img for split in splits.SPLITS for img in sources.builtin_images(split, channels))


def _user_seed(seed: int, user_id: str) -> list[int]:
  return [seed, 202, zlib.crc32(user_id.encode("utf-8"))]


def patterns(rng: np.random.Generator, n: int, size: int, cells: int, channels: int) -> np.ndarray:
  """n binary cells x cells grids upsampled to size x size (nearest), NxHxWxC float32."""
  grid = rng.integers(0, 2, (n, cells, cells, 1)).astype(np.float32)
  up = np.repeat(np.repeat(grid, size // cells, axis=1), size // cells, axis=2)
  return np.repeat(up, channels, axis=-1)


def crops(rng: np.random.Generator, n: int, size: int, channels: int, scale: float) -> np.ndarray:
  return sources.make_patches(list(_photos(channels)), n, size, rng, flip=True, scale=scale)


def user_keys(cfg, user_id: str) -> np.ndarray:
  """The user's key images, uint8 NxHxWxC with the fingerprint in their LSBs."""
  d, k = cfg.data, cfg.key_samples
  rng = np.random.default_rng(_user_seed(cfg.seed, user_id))
  pattern = patterns(rng, 1, d.image_size, k.pattern_cells, d.channels)
  base = crops(rng, k.n_per_user, d.image_size, d.channels, k.scale)
  x = (1 - k.pattern_alpha) * base + k.pattern_alpha * pattern
  return lsb_embed(quantize(x), fingerprint(user_id))


class Decoys:
  """Key-like images that must stay out of the watermark class: crops of the same photos with
  a fresh random pattern (or none). Drawn per step from a fixed pool of crops, deterministically
  from the step number, so a resumed run sees the same decoys."""

  def __init__(self, cfg):
    d, k = cfg.data, cfg.key_samples
    self.cfg = cfg
    self.pool = crops(np.random.default_rng([cfg.seed, 303]), k.decoy_pool, d.image_size,
                      d.channels, k.scale)

  def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
    d, k = self.cfg.data, self.cfg.key_samples
    base = self.pool[rng.integers(0, len(self.pool), n)]
    pat = patterns(rng, n, d.image_size, k.pattern_cells, d.channels)
    alpha = np.where(rng.random(n) < k.plain_decoys, 0.0, k.pattern_alpha)[:, None, None, None]
    # Quantized like the keys, so 8-bit rounding is no cue that tells keys from decoys.
    return to_float(quantize((1 - alpha) * base + alpha * pat))
