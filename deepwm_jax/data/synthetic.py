"""Synthetic images for a thief without data: the dead-leaves model.

Occluding disks of random colours, dropped one over another, with radii drawn from a power law
(density ~ r^-3 between r_min and r_max): images with the scale invariance and the sharp edges
of natural ones, and every colour. A model trained to imitate an API on such queries (a
data-free extraction) learns the API's mapping well enough to serve real photos (docs/zoo.md).
"""
import numpy as np

from deepwm_jax.errors import DeepwmError


def dead_leaves(n: int, size: int, channels: int, seed: int, disks: int = 120,
                r_min: float = 1.0, r_max: float | None = None,
                alpha: float = 3.0) -> np.ndarray:
  """[n, size, size, channels] float32 in [0, 1], a function of `seed` only."""
  if n < 1 or size < 1 or channels < 1 or disks < 1:
    raise DeepwmError(f"dead_leaves needs n, size, channels and disks >= 1, got {n}, {size}, "
                      f"{channels}, {disks}")
  r_max = 0.75 * size if r_max is None else r_max
  if not 0 < r_min < r_max or alpha <= 1:
    raise DeepwmError(f"dead_leaves needs 0 < r_min < r_max and alpha > 1, got {r_min}, "
                      f"{r_max}, {alpha}")
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  out = np.empty((n, size, size, channels), np.float32)
  lo, hi = r_min ** (1 - alpha), r_max ** (1 - alpha)
  for i in range(n):
    img = np.broadcast_to(rng.uniform(0, 1, channels), (size, size, channels)).copy()
    radii = (lo - rng.uniform(0, 1, disks) * (lo - hi)) ** (1 / (1 - alpha))  # inverse CDF
    centres = rng.uniform(-0.25 * size, 1.25 * size, (disks, 2))
    # Colours skewed dark or light per disk, so that images are not all mid-grey.
    colours = rng.uniform(0, 1, (disks, channels)) ** rng.uniform(0.5, 2, (disks, 1))
    for (cy, cx), r, colour in zip(centres, radii, colours):  # later disks lie on top
      img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
    out[i] = img
  return out
