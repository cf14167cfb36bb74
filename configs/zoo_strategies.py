"""A subset of configs/zoo_quick.py for comparing protections side by side: the same zoo run
against the deep agnostic kit, the absorbed M' and the traditional spread-spectrum kit
(docs/strategies.md).

  deepwm attack --kit runs/qs_final/kit        --config configs/zoo_strategies.py --workdir runs/zoo_agn
  deepwm attack --kit runs/qs_specific/kit     --config configs/zoo_strategies.py --workdir runs/zoo_spec
  deepwm attack --kit runs/qs_traditional/kit  --config configs/zoo_strategies.py --workdir runs/zoo_trad

Why a subset: one quick zoo costs about as much CPU as a quickstart run, and this one runs
three times on a shared 2-core CPU. It keeps one member per attack family the comparison
needs: 8 trained members in 4 groups instead of 18 in 7, at 1000 steps instead of 1200.
  unet-l2             the stage-2 surrogate's family, plain L2 (the removal attacks' target)
  resnet6-l2          another family the protector's stage 2 never trained on
  cnn-l2              plain CNN (zoo_quick's: ngf 16, depth 8, L2): the unseen family. The
                      quickstart's unseen spec is wider (ngf 32) with L1 and 1500 steps
  unet-l2+lsgan       one adversarial loss
  unet-l2-aug=flip, unet-l2-aug=crop:0.7   augmentation attacks
  unet-l2-overwrite   the attacker's own barrier over B'
  unet-l2-null        trained on clean M(A): must never be detected
and all 7 of zoo_quick's post-processing removal attacks on unet-l2 and on the null.
Dropped: unet_small, resnet1, edsr, the l1/ssim/perceptual/gan losses, rot90 and rescale
augmentation, the n_attack=256 member and the resnet6 null.
"""
import os

from deepwm_jax import config as config_lib

KEEP_ARCHS = ("unet", "resnet6", "cnn")


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  c = config_lib.load(os.path.join(here, "zoo_quick.py"))
  c.archs = {k: dict(c.archs[k]) for k in KEEP_ARCHS}
  c.defaults.steps = 1000
  c.sweeps = [
      dict(arch=KEEP_ARCHS),
      dict(loss=("l2+lsgan",)),
      dict(augmentation=("flip", "crop:0.7")),
      dict(overwrite=(True,)),
      dict(null=(True,)),
  ]
  # zoo_quick's removal attacks and target (unet-l2; on_nulls adds the null) are kept as is.
  return c
