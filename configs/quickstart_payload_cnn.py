"""The 64-bit owner message with the content-dependent (plain-CNN) embedder.

  deepwm run --config configs/quickstart_payload_cnn.py --workdir runs/qs_payload_cnn

configs/quickstart_payload.py with H from configs/quickstart_cnn.py. With the U-Net H the
unseen CNN surrogate copied too little of the message (residual correlation 0.025) for its
outputs to be evidence; with the CNN H it copies 0.115 and the message decodes exactly from
each of 4 disjoint sets of 16 of its outputs (docs/verdicts.md).
"""
import os

from deepwm_jax import config as config_lib


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  c = config_lib.load(os.path.join(here, "quickstart_payload.py"))
  c.embedder = config_lib.load(os.path.join(here, "quickstart_cnn.py")).embedder
  return c
