"""The quickstart with a 64-bit owner payload instead of the logo: the watermark carries a
message binding the owner id and the SHA-256 of this config.

  deepwm run --config configs/quickstart_payload.py --workdir runs/qs_payload

deepwm_jax/payload.py documents the message formats ('owner', 'text:', 'hex:', 'int:').
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # 64 message bits + 8 Reed-Solomon parity bytes = 128 coded bits, drawn as 256 cells of
  # 2x2 pixels at 32 px.
  c.watermark.update(spec="payload", message="owner", bits=64, ecc_bytes=8, key=2024,
                     owner="deepwm-quickstart")
  return c
