"""Training pairs (A, B): crops B of a split's photos and their degraded inputs A.

Every stage draws its pairs here, from the config's data source, seeded by (config seed, an
offset per use), so a resumed run and a notebook (deepwm_jax.api.pairs) see the same crops.
"""
import dataclasses

import numpy as np

from deepwm_jax.data import degrade, sources


@dataclasses.dataclass
class Pairs:
  a: np.ndarray   # task inputs A (degraded)
  b: np.ndarray   # clean targets B


# make_pairs seed offsets of the pipeline's draws; the api and the zoo use the same ones.
PROTECT, ATTACK, VAL, HELDOUT = 1, 2, 3, 4
SPLIT_OFFSETS = {"protect": PROTECT, "attack": ATTACK, "val": VAL}


def make_pairs(cfg, split: str, n: int, seed_offset: int) -> Pairs:
  return pairs_from(cfg, load_split(cfg, split), n, seed_offset)


def load_split(cfg, split: str) -> list[np.ndarray]:
  """The photos of `split` of the config's data source (for callers that crop them often)."""
  d = cfg.data
  return sources.load_split(d.source, split, d.channels, d.get("tfds_dir", ""),
                            d.get("tfds_max_images", 0))


def whole_images(cfg, split: str) -> list[np.ndarray]:
  """The split's photos as C-channel images (a paired source's collected outputs: the images
  its owner serves)."""
  images = load_split(cfg, split)
  if sources.is_paired(cfg.data.source):
    return [img[..., cfg.data.channels:] for img in images]
  return images


def pairs_from(cfg, images: list[np.ndarray], n: int, seed_offset: int) -> Pairs:
  """`n` (A, B) crops of already loaded photos; the same crops as make_pairs of their split."""
  d = cfg.data
  rng = np.random.default_rng([cfg.seed, seed_offset])
  b = sources.make_patches(images, n, d.image_size, rng, flip=True, scale=d.scale)
  if sources.is_paired(d.source):  # the owner's (input, output) pairs, cropped together
    return Pairs(b[..., :d.channels].astype(np.float32), b[..., d.channels:].astype(np.float32))
  return Pairs(degraded(cfg, b, seed_offset).astype(np.float32), b.astype(np.float32))


def degraded(cfg, b: np.ndarray, seed_offset: int) -> np.ndarray:
  """Task inputs A of clean images B [N, H, W, C], degraded as the config's task degrades
  them, drawn from (config seed, `seed_offset`) as every draw of pairs_from is."""
  d = cfg.data
  return degrade.degrade(b, d.task, seed=cfg.seed * 1000 + seed_offset, strength=d.strength)


def flat_images(n: int, size: int, channels: int, seed: int) -> np.ndarray:
  """Flat and smoothly shaded images, dark ones included: stage-2 negatives, since a
  fine-tuned extractor was seen to draw the logo on flat dark sky."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(0, 1, (n, 1, 1, channels)) ** 2
  ramp = np.linspace(-1, 1, size)[None, :, None, None] * rng.uniform(-0.2, 0.2, (n, 1, 1, 1))
  return np.clip(base + ramp, 0, 1).astype(np.float32) * np.ones((1, size, size, 1), np.float32)
