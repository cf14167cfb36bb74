"""An embed-time fidelity budget: each protected image's residual B' - B scaled down, as a
whole, until the image's PSNR reaches a floor (`Kit.embed(..., psnr_floor=40)`,
`deepwm embed --psnr-floor 40`).

A kit's fidelity is a mean over its training crops; on one served image it varies with the
content. Keyed kits fade their residual over smooth areas (embedder.texture_mask), so a photo
that is all texture gets the full residual everywhere (32 dB where smoother photos get 41-51).
The floor is a promise per image: images already above it are returned unchanged, the others
get the same residual at a lower gain, spread as before. It costs robustness exactly where it
acts (a weaker residual survives less JPEG: docs/robustness.md) and nothing elsewhere.
Unlike `embedder.psnr_floor`, which H is trained under (per window), this one needs no
training and applies to any kit.
"""
import numpy as np

from deepwm_jax import models
from deepwm_jax.errors import DeepwmError

FLOOR_RANGE = (20.0, 80.0)


def check_floor(psnr_floor) -> float:
  """The floor in dB as a float: 0 (off) or within FLOOR_RANGE; else a one-line error."""
  try:
    f = float(psnr_floor)
  except (TypeError, ValueError):
    f = float("nan")
  lo, hi = FLOOR_RANGE
  if not (f == 0 or lo <= f <= hi):
    raise DeepwmError(f"psnr_floor={psnr_floor}; use 0 (off) or a PSNR in dB in "
                      f"[{lo:g}, {hi:g}], e.g. 40")
  return f


def cap(images: list[np.ndarray], marked: list[np.ndarray], psnr_floor: float) -> list:
  """Each marked image with its residual scaled down to `psnr_floor` dB where stronger (and
  clipped to [0, 1], which only brings it closer to its original)."""
  f = check_floor(psnr_floor)
  if f == 0:
    return list(marked)
  out = []
  for b, bm in zip(images, marked):
    r = np.asarray(bm, np.float32) - np.asarray(b, np.float32)
    gain = float(np.asarray(models.floor_gain(r[None], f)).ravel()[0])
    out.append(bm if gain >= 1.0 else np.clip(b + gain * r, 0.0, 1.0).astype(np.float32))
  return out
