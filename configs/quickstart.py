"""Quickstart: protect a small deraining U-Net on the builtin photos, on a laptop CPU.

  deepwm run --config configs/quickstart.py --workdir runs/qs

64x64 RGB crops, narrow networks (METHOD.md section 8's small-scale variants: residual embedder,
linear extractor, fidelity weight 50, cosine decay, adaptive clipping).
"""
from deepwm_jax.config import base_config


def get_config():
  return base_config()
