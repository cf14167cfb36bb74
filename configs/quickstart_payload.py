"""Quickstart with a 64-bit owner payload instead of the logo (issue 9, docs/verdicts.md).

  deepwm run --config configs/quickstart_payload.py --workdir runs/qs_payload

Everything else is configs/quickstart.py. The message binds the owner id and the SHA-256 of this
config ('owner'; see deepwm_jax/payload.py for 'text:', 'hex:', 'int:'), protected by 8
Reed-Solomon parity bytes: 128 coded bits drawn as 256 cells of 2x2 pixels at 32 px.
"""
import os

from deepwm_jax import config as config_lib


def _quickstart():
  here = os.path.dirname(os.path.abspath(__file__))
  return config_lib.load(os.path.join(here, "quickstart.py"))


def get_config():
  c = _quickstart()
  c.watermark.update(spec="payload", message="owner", bits=64, ecc_bytes=8, key=2024,
                     owner="deepwm-quickstart")
  return c
