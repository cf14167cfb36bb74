"""The probe zoo of pair.sh / pairm.sh: configs/zoo_quick.py's plainly trained members (every
family with L2, the U-Net with L1 and SSIM too, 1200 steps) and its two nulls; no augmentation
or removal attacks, which the option under test does not aim at."""
import os

from deepwm_jax import config as config_lib


def get_config():
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  c = config_lib.load(os.path.join(root, "configs", "zoo_quick.py"))
  c.sweeps = [
      dict(arch=tuple(c.archs.keys())),
      dict(loss=("l1", "ssim")),
      dict(arch=("unet", "resnet6"), null=(True,)),
  ]
  c.removal.update(attacks=(), members=(), on_nulls=False)
  return c
