"""The quick zoo's rows about serving: a U-Net imitator, its outputs post-processed (JPEG, blur,
noise, resizes, crops), imitators that augment (flip, rotation, crop, rescale, shift), two nulls.

  deepwm attack --kit runs/keyed_robust_64/kit --config configs/zoo_served.py --workdir runs/zoo_served

Same member names, settings and seeds as zoo_quick.py, 8 trained instead of 18, one of them not in
the quick zoo: `shift:16`, pairs translated by up to 16 px (wrapping round), which is what an
attacker sees that cuts its training crops at any offset of large served images from a kit that
tiles its 32 px windows.
"""
from deepwm_jax.configs import zoo_quick


def get_config():
  c = zoo_quick.get_config()
  c.sweeps = [dict(arch=("unet",)),
              dict(augmentation=("flip", "rot90", "crop:0.7", "rescale:0.7", "shift:16")),
              dict(arch=("unet", "resnet6"), null=(True,))]
  c.removal.attacks = ("jpeg:90", "jpeg:75", "jpeg:50", "blur:1.0", "noise:0.03",
                       "rescale:0.5", "crop:0.9", "jpeg:75+blur:0.5")
  return c
