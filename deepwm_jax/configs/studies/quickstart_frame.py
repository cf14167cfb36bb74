"""Study: the band kit with a framed embedder: H leaves the outer 4 px of every crop unchanged, so the
watermark lies in the content, where blended windows of a large image and one-pixel shifts
keep it, rather than in the frame of the 32 px crops.

  deepwm run --config configs/studies/quickstart_frame.py --workdir runs/qs_frame
"""
from deepwm_jax.configs import quickstart_band


def get_config():
  c = quickstart_band.get_config()
  c.embedder.frame = 4
  return c
