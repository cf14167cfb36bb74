"""Quickstart with a 64-bit owner payload instead of the logo (issue 9, docs/verdicts.md).

  deepwm run --config configs/quickstart_payload.py --workdir runs/qs_payload

Everything else is configs/quickstart.py. The message binds the owner id and the SHA-256 of this
config ('owner'; see deepwm_jax/payload.py for 'text:', 'hex:', 'int:'), protected by 8
Reed-Solomon parity bytes: 128 coded bits drawn as 256 cells of 2x2 pixels at 32 px.
"""
import importlib.util
import os


def _quickstart():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py")
  spec = importlib.util.spec_from_file_location("deepwm_quickstart_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  c = _quickstart()
  c.watermark.update(spec="payload", message="owner", bits=64, ecc_bytes=8, key=2024,
                     owner="deepwm-quickstart")
  return c
