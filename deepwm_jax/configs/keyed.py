"""The quickstart with a keyed kit: H and R trained over random keys, the owner's key secret,
and a verdict whose false-claim bound holds for any innocent model (docs/verdicts.md).

  deepwm run --config configs/keyed.py --workdir runs/keyed
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.protect.method = "keyed"
  c.protect.keyed.cell = 4       # 8 x 8 cells on a 32 px crop: a 64-bit key
  # The report's imitators: 1500 steps each, on (A, B') and on clean (A, M(A)).
  c.attack.surrogate.n_blocks = 3
  return c
