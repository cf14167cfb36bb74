"""A paper-scale zoo for accelerators: 86 surrogate attackers at 256 px with the reference widths
(ResNets with 0-16 blocks, U-Nets, DnCNN, EDSR; every loss with and without GAN terms).

  deepwm attack --kit runs/derain/kit --config configs/zoo_paper.py --workdir runs/zoo_paper

Hardware: 80 GB GPUs (3 members per device); `deepwm attack --plan-steps 0 --config
configs/zoo_paper.py` checks each group's memory on the device first. The 18 perceptual-loss
members need a VGG16 weights file (docs/zoo.md).
"""
from deepwm_jax.zoo.config import base_config


def get_config():
  c = base_config()
  c.conv_impl = "xla"             # XLA's convolutions are first-class on GPU/TPU
  c.data.n_eval = 100             # the paper's 100 test images
  c.archs = dict(
      unet256=dict(arch="unet", ngf=64, num_downs=8),
      unet128=dict(arch="unet", ngf=64, num_downs=7),
      resnet0=dict(arch="resnet", ngf=64, n_blocks=0),
      resnet1=dict(arch="resnet", ngf=64, n_blocks=1),
      resnet6=dict(arch="resnet", ngf=64, n_blocks=6),
      resnet9=dict(arch="resnet", ngf=64, n_blocks=9),
      resnet16=dict(arch="resnet", ngf=64, n_blocks=16),
      dncnn=dict(arch="cnn", ngf=64, depth=17),
      edsr=dict(arch="edsr", ngf=64, n_blocks=16))
  c.defaults.update(arch="resnet9", loss="l2", n_attack=6000, steps=20000, batch=16, lr=1e-4)
  losses = ("l1", "l2", "ssim", "perceptual", "l1+lsgan", "l2+lsgan", "l1+gan",
            "perceptual+lsgan")
  c.sweeps = [
      dict(arch=tuple(c.archs.keys()), loss=losses),                           # 72
      dict(augmentation=("flip", "rot90", "rotate:15", "crop:0.7", "rescale:0.7",
                         "flip+rot90+crop:0.8")),                              # 6
      dict(n_attack=(500, 2000), seed=(0, 1)),                                 # 4
      dict(overwrite=(True,)),
      dict(arch=("unet256", "resnet9", "dncnn"), null=(True,)),
  ]
  c.removal.update(attacks=("jpeg:90", "jpeg:70", "jpeg:50", "jpeg:30", "blur:0.5", "blur:1.0",
                            "blur:2.0", "noise:0.01", "noise:0.03", "rescale:0.75",
                            "rescale:0.5", "crop:0.9", "crop:0.8", "jpeg:70+blur:1.0"),
                   members=("resnet9-l2", "unet256-l2"))
  c.gan.widths = (64, 128, 256, 512)
  c.overwrite.update(steps=20000, embedder_ngf=64, extractor_channels=128)
  c.bench.update(arch="resnet9", members=8, image_size=256, channels=3, steps=5)
  # One step of its 15 ResNet-9s at 256 px, batch 16, needs about 94 GiB (XLA's memory
  # analysis, docs/zoo.md); 3 members per device keep every group of this zoo under about
  # 41 GiB, which fits an 80 GB GPU with JAX's default 75% preallocation. Check on the device
  # itself with `deepwm attack --plan-steps 0 --config configs/zoo_paper.py`.
  c.max_members_per_device = 3
  c.log_every = 100
  c.ckpt_every = 2000
  return c
