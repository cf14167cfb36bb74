"""A tiny zoo for tests and smoke runs (seconds): two families, a GAN member, an augmentation,
an overwrite and a null, two removal attacks; its numbers mean nothing.

  deepwm attack --kit runs/tiny/kit --config configs/zoo_tiny.py --workdir runs/zoo_tiny
"""
from deepwm_jax.zoo.config import base_config


def get_config():
  c = base_config()
  c.conv_impl = "xla"
  c.data.n_eval = 8
  c.archs = dict(unet=dict(arch="unet", ngf=4, num_downs=3),
                 cnn=dict(arch="cnn", ngf=4, depth=3))
  c.defaults.update(n_attack=32, steps=3, batch=4)
  c.sweeps = [dict(arch=("unet", "cnn")),
              dict(loss=("l1", "l2+lsgan")),
              dict(augmentation=("rot90",)),
              dict(overwrite=(True,)),
              dict(null=(True,))]
  c.removal.update(attacks=("jpeg:50", "crop:0.8"), members=("unet-l2",))
  c.gan.widths = (4, 8)
  c.overwrite.update(steps=2, embedder_ngf=4, extractor_channels=4)
  c.log_every = 1
  c.ckpt_every = 2
  return c
