"""Study: the 64-bit owner message (quickstart_payload.py) with the plain-CNN embedder of
studies/quickstart_cnn.py, so that an unseen CNN surrogate's outputs carry the message.

  deepwm run --config configs/studies/quickstart_payload_cnn.py --workdir runs/qs_payload_cnn

docs/verdicts.md has what it measured.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.watermark.update(spec="payload", message="owner", bits=64, ecc_bytes=8, key=2024,
                     owner="deepwm-quickstart")  # as quickstart_payload.py
  c.embedder.update(arch="cnn", ngf=32, depth=8)  # as studies/quickstart_cnn.py
  return c
