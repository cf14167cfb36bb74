"""The probe zoo of pair.sh / pairm.sh: configs/zoo_quick.py's plainly trained members at 1200
steps (every family with L2, the U-Net with L1 and SSIM too) and its two nulls; no augmentation
or removal attacks, which the option under test does not aim at."""
from deepwm_jax.zoo.config import base_config


def get_config():
  c = base_config()
  c.archs = dict(
      unet=dict(arch="unet", ngf=16, num_downs=0),
      unet_small=dict(arch="unet", ngf=8, num_downs=3),
      resnet1=dict(arch="resnet", ngf=16, n_blocks=1),
      resnet6=dict(arch="resnet", ngf=16, n_blocks=6),
      cnn=dict(arch="cnn", ngf=16, depth=8),
      edsr=dict(arch="edsr", ngf=16, n_blocks=4))
  c.defaults.update(arch="unet", loss="l2", n_attack=1024, steps=1200, batch=16, lr=1e-3)
  c.sweeps = [
      dict(arch=tuple(c.archs.keys())),
      dict(loss=("l1", "ssim")),
      dict(arch=("unet", "resnet6"), null=(True,)),
  ]
  c.removal.update(attacks=(), members=(), on_nulls=False)
  return c
