"""The quick zoo's rows about serving: a U-Net imitator, its outputs post-processed (JPEG, blur,
noise, resizes, crops), imitators that augment (flip, rotation, crop, rescale), two nulls.

  deepwm attack --kit runs/keyed_robust_64/kit --config configs/zoo_served.py --workdir runs/zoo_served

Same member names, settings and seeds as zoo_quick.py, 7 trained instead of 18.
"""
from deepwm_jax.configs import zoo_quick


def get_config():
  c = zoo_quick.get_config()
  c.sweeps = [dict(arch=("unet",)),
              dict(augmentation=("flip", "rot90", "crop:0.7", "rescale:0.7")),
              dict(arch=("unet", "resnet6"), null=(True,))]
  c.removal.attacks = ("jpeg:90", "jpeg:75", "jpeg:50", "blur:1.0", "noise:0.03",
                       "rescale:0.5", "crop:0.9", "jpeg:75+blur:0.5")
  return c
