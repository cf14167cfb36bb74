"""Study: the quickstart with a content-dependent watermark, a plain-CNN embedder that
imitators of every convolutional family copy (the first step towards quickstart_band.py).

  deepwm run --config configs/studies/quickstart_cnn.py --workdir runs/qs_cnn

docs/method.md has what it measured.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # H: 8 plain 3x3 convs, 32 wide, that see neither the watermark nor the position
  # (models.embedder): the residual follows the local content, which every imitator can learn.
  c.embedder.update(arch="cnn", ngf=32, depth=8)
  return c
