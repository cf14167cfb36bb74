"""The quick zoo's target rows only: its plain members and its nulls, no augmentation members
and no post-processing removal rows.

  deepwm attack --kit runs/qs/kit --config configs/zoo_plain.py --workdir runs/zoo_plain

The issue's robustness target is about these rows (every surrogate trained plainly on (A, B')
at >= 90%, every null at 0%), so this is the zoo to run when comparing kits for it: the same
members as configs/zoo_quick.py (same names, settings and seeds, so the same attackers against
the same H), 14 trained instead of 18: 867-966 s on an idle 2-core CPU against two kits, where
the whole quick zoo took 966-1258 s (docs/zoo.md).
The augmentation and removal attacks are left out, not passed: run zoo_quick.py for those.
"""
import os

from deepwm_jax import config as config_lib


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  c = config_lib.load(os.path.join(here, "zoo_quick.py"))
  c.sweeps = [s for s in c.sweeps if "augmentation" not in s]
  c.removal.update(attacks=(), members=(), on_nulls=False)
  return c
