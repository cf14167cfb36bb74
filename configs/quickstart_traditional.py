"""Quickstart with the traditional baseline in place of the deep barrier H/R.

  deepwm run --config configs/quickstart_traditional.py --workdir runs/qs_traditional

The same task model, data, surrogate and null specs as configs/quickstart.py; the outputs are
watermarked with a key-seeded spread-spectrum pattern in the DCT domain at the deep barrier's
fidelity (about 40 dB) and detected by correlation (deepwm_jax/traditional.py). No stage 1 or
2. `deepwm verify --kit runs/qs_traditional/kit` reads the kit. See docs/strategies.md.
"""
import os

from deepwm_jax import config as config_lib


def _quickstart():
  here = os.path.dirname(os.path.abspath(__file__))
  return config_lib.load(os.path.join(here, "quickstart.py"))


def get_config():
  c = _quickstart()
  c.protect.method = "traditional"
  return c
