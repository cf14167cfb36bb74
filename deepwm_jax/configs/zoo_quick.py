"""The quick zoo: 18 surrogate attackers in 6 architecture settings, 4 losses, 4 augmentations,
an overwrite, 2 nulls and 7 removal attacks, sized for a 2-core CPU against a quickstart kit.

  deepwm attack --kit runs/keyed/kit --config configs/zoo_quick.py --workdir runs/zoo

The perceptual-loss member is skipped without a VGG16 weights file (docs/zoo.md).
"""
from deepwm_jax.zoo.config import base_config


def get_config():
  c = base_config()
  c.archs = dict(
      unet=dict(arch="unet", ngf=16, num_downs=0),        # the stage-2 surrogate's settings
      unet_small=dict(arch="unet", ngf=8, num_downs=3),   # narrower and shallower
      resnet1=dict(arch="resnet", ngf=16, n_blocks=1),
      resnet6=dict(arch="resnet", ngf=16, n_blocks=6),
      cnn=dict(arch="cnn", ngf=16, depth=8),              # DnCNN-like, no down-sampling
      edsr=dict(arch="edsr", ngf=16, n_blocks=4))         # a family no stage ever trains
  c.defaults.update(arch="unet", loss="l2", n_attack=1024, steps=1200, batch=16, lr=1e-3)
  c.sweeps = [
      dict(arch=tuple(c.archs.keys())),
      dict(loss=("l1", "ssim", "perceptual", "l2+lsgan", "l1+gan")),
      dict(augmentation=("flip", "rot90", "crop:0.7", "rescale:0.7")),
      dict(n_attack=(256,)),
      dict(overwrite=(True,)),
      dict(arch=("unet", "resnet6"), null=(True,)),
  ]
  c.removal.update(attacks=("jpeg:90", "jpeg:50", "blur:1.0", "noise:0.02", "rescale:0.5",
                            "crop:0.9", "jpeg:75+blur:0.5"), members=("unet-l2",))
  return c
