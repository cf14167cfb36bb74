"""A subset of the quick zoo for comparing protections side by side (agnostic kit, absorbed M',
traditional kit): one member per attack family, 8 trained members at 1000 steps.

  deepwm attack --kit runs/qs/kit --config configs/zoo_strategies.py --workdir runs/zoo_agn

Run it once per kit (runs/qs_specific/kit, runs/qs_traditional/kit, ...); docs/strategies.md.
"""
from deepwm_jax.configs import zoo_quick

KEEP_ARCHS = ("unet", "resnet6", "cnn")


def get_config():
  c = zoo_quick.get_config()
  # Members: unet-l2 (the stage-2 surrogate's family, the removal attacks' target), resnet6-l2
  # and cnn-l2 (families stage 2 never trains on), unet-l2+lsgan, unet-l2-aug=flip,
  # unet-l2-aug=crop:0.7, unet-l2-overwrite and unet-l2-null (must never be detected).
  c.archs = {k: dict(c.archs[k]) for k in KEEP_ARCHS}
  c.defaults.steps = 1000        # zoo_quick: 1200; this zoo runs once per kit
  c.sweeps = [
      dict(arch=KEEP_ARCHS),
      dict(loss=("l2+lsgan",)),
      dict(augmentation=("flip", "crop:0.7")),
      dict(overwrite=(True,)),
      dict(null=(True,)),
  ]
  # zoo_quick's 7 removal attacks on unet-l2 (and, with on_nulls, on the null) are kept as is.
  return c
