"""The quickstart: the papers' method (a U-Net H drawing a logo, a calibrated verdict) on a small
deraining U-Net and the builtin photos, about 16 minutes on a 2-core CPU. Most configs build on it.

  deepwm run --config configs/quickstart.py --workdir runs/qs

`--config.data.image_size=64` gives crops with more context at about 2.5x the time.
"""
from deepwm_jax.config import base_config


def get_config():
  c = base_config()
  c.data.image_size = 32         # 32x32 RGB crops of the photos, downscaled 4x (data.scale)
  c.conv_impl = "auto"           # faster CPU convolutions (sub-pixel transposed convs)
  c.extractor.channels = 32
  c.stage1.steps = 800
  # MSE weight 0.1 plus SSIM 8: the watermark moves into smooth shapes a U-Net surrogate
  # copies (with MSE weight 50 alone it sat at 67 dB, too faint for any surrogate to copy).
  c.stage1.weights.fidelity = 0.1
  c.stage1.weights.fidelity_ssim = 8.0
  c.task.steps = 500
  c.stage2.steps = 800
  c.stage2.weights.clean = 2.0   # false positives cost more than misses
  for spec in (c.attack.surrogate, c.attack.null):
    spec.steps = 1500
  # The unseen attacker: a plain deep CNN (no down-sampling), a family stage 2 never trains
  # on. A 3-block ResNet imitates too coarsely to copy the watermark at all.
  c.evaluate.surrogate.update(arch="cnn", ngf=32, depth=8, steps=1500)
  c.evaluate.null.steps = 800
  return c
