"""The quickstart with a content-dependent watermark: a plain-CNN embedder.

  deepwm run --config configs/quickstart_cnn.py --workdir runs/qs_cnn

The quickstart's U-Net embedder sees the whole crop and the watermark, and learns to add one
fixed, position-dependent pattern that only position-aware imitators (U-Nets) copy: its unseen
CNN surrogate was detected on 1.6% of images. Here H is 8 3x3 convs, 32 wide, that see neither
the watermark nor where they are (`embedder.arch='cnn'`, deepwm_jax/models/__init__.py): the
residual is a function of the local content, which every convolutional imitator can learn,
and R learns to draw the logo wherever it finds it. Measured (docs/quickstart_study.md): on
the CPU 47.0 dB / SSIM 0.9997, stage-2 U-Net and unseen CNN surrogates both 98% (seed 1: 91% and
86%); on an H100 the surrogates copied as much (residual corr 0.12) but R read them on only
33-36% of images.
"""
import os

from deepwm_jax import config as config_lib


def get_config():
  c = config_lib.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
  c.embedder.update(arch="cnn", ngf=32, depth=8)
  return c
