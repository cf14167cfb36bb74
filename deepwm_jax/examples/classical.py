"""Classical (non-learned) image algorithms as the protected "model" (docs/strategies.md).

The barrier is model-agnostic: anything that maps images to images can sit in front of H.
Point the pipeline at one of these with

  task.source = 'python:deepwm_jax.examples.classical:unsharp_mask'

A task source is any importable function images -> images: float32 NHWC in [0, 1], same
shape out as in (the pipeline checks the shape and clips to [0, 1]). configs/protect_classical.py
protects `denoise_tv` on the noise task; `unsharp_mask` fits the blur task.
"""
import numpy as np
from scipy import ndimage
from skimage import restoration


def unsharp_mask(images_NxHxWxC, radius: float = 1.0, amount: float = 1.0) -> np.ndarray:
  """Sharpening: x + amount * (x - gaussian(x, radius)), clipped (for data.task='blur').

  skimage.filters.unsharp_mask's formula, computed with scipy: skimage's own returned NaN
  pixels for some float32 batches in our runs, at random.
  """
  x = np.asarray(images_NxHxWxC, np.float64)
  blurred = ndimage.gaussian_filter(x, sigma=(0, radius, radius, 0), mode="reflect")
  return np.clip(x + amount * (x - blurred), 0.0, 1.0).astype(np.float32)


def denoise_tv(images_NxHxWxC, weight: float = 0.08) -> np.ndarray:
  """Total-variation denoising, Chambolle's algorithm (for data.task='noise')."""
  x = np.asarray(images_NxHxWxC, np.float32)
  return np.stack([restoration.denoise_tv_chambolle(img, weight=weight, channel_axis=-1)
                   for img in x]).astype(np.float32)
