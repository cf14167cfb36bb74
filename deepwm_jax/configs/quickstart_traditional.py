"""The quickstart with the traditional baseline in place of the deep barrier H/R: a key-seeded
DCT spread-spectrum watermark at about 40 dB, detected by correlation; no stage 1 or 2.

  deepwm run --config configs/quickstart_traditional.py --workdir runs/qs_traditional

The same task model, data, surrogate and null specs as the quickstart; protect.traditional in
base_config holds the method's settings (deepwm_jax/traditional.py).
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.protect.method = "traditional"
  return c
