"""The quick zoo's target rows only: its plain members and its nulls, the zoo to run when
comparing kits (zoo_quick.py without the augmentation members and the removal attacks).

  deepwm attack --kit runs/keyed/kit --config configs/zoo_plain.py --workdir runs/zoo_plain

Same member names, settings and seeds as zoo_quick.py, 14 trained instead of 18.
"""
from deepwm_jax.configs import zoo_quick


def get_config():
  c = zoo_quick.get_config()
  c.sweeps = [s for s in c.sweeps if "augmentation" not in s]  # 14 of zoo_quick's 18 members
  c.removal.update(attacks=(), members=(), on_nulls=False)     # no post-processing rows
  return c
