"""A thief without data: imitators trained on what the protected API returns for synthetic
dead-leaves queries, judged on the owner's held-out photos.

  deepwm attack --kit runs/keyed/kit --config configs/zoo_datafree.py --workdir runs/datafree

The quick zoo's U-Net, ResNet-6, plain CNN and EDSR and a null U-Net, 1200 steps each on 4096
queries (data/synthetic.py), each also serving four held-out photos whole. About 10 minutes on
a 2-core CPU.
"""
from deepwm_jax.configs import zoo_quick


def get_config():
  c = zoo_quick.get_config()
  c.data.queries = "deadleaves"
  c.defaults.n_attack = 4096  # synthetic queries cost nothing; the photos' split has fewer
  c.sweeps = [dict(arch=("unet", "resnet6", "cnn", "edsr")), dict(null=(True,))]
  c.removal.update(attacks=(), members=(), on_nulls=False)
  return c
