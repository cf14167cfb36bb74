"""Quickstart: protect a small deraining U-Net on the builtin photos, on a laptop CPU.

  deepwm run --config configs/quickstart.py --workdir runs/qs

32x32 RGB crops of the scikit-image photos (downscaled 4x first so crops hold structure),
narrow networks, and METHOD.md section 8's small-scale variants: residual embedder, linear
extractor, fidelity weight 50 on the 1e4-scaled MSE, cosine decay and adaptive clipping.
`--config.data.image_size=64` gives crops with more context at about 2.5x the time.
"""
from deepwm_jax.config import base_config


def get_config():
  c = base_config()
  c.data.image_size = 32
  return c
