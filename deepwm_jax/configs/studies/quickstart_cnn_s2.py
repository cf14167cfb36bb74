"""Study: the CNN-embedder quickstart with stage 2 against a U-Net and a plain-CNN surrogate:
the two-family kit (quickstart_band.py without the band, weak copies and longer stage 2).

  deepwm run --config configs/studies/quickstart_cnn_s2.py --workdir runs/qs_cnn_s2

docs/method.md and docs/zoo.md have what it measured.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.embedder.update(arch="cnn", ngf=32, depth=8)  # as studies/quickstart_cnn.py
  # Stage 2 also trains R on a plain-CNN surrogate, whose weaker copy teaches R to read weak
  # copies. Add only families whose surrogate copies the watermark (not ResNets).
  c.attack.extra_surrogate_archs = ("cnn",)
  return c
