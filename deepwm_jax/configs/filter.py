"""The keyed filter: no networks to train, a secret key, the exact verdict, and imitators of every
family the report trains caught when queried with the owner's inputs (docs/filter.md).

  deepwm run --config configs/filter.py --workdir runs/filter
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.protect.method = "filter"
  # The report's imitators train 1500 steps each; 3 ResNet blocks instead of 6 halve their time.
  c.attack.surrogate.n_blocks = 3
  return c
