"""The quickstart with the model-specific strategy: after the usual run, the task U-Net M is
fine-tuned into M' that emits H(M(A)) itself, and the surrogates are trained on M' outputs.

  deepwm run --config configs/quickstart_specific.py --workdir runs/qs_specific

report.md compares the agnostic and the absorbed model side by side; the kit verifies M'
outputs. docs/strategies.md explains the strategies.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.protect.strategy = "specific"  # M absorbs H (train/absorb.py)
  c.protect.absorb.steps = 250     # about 3 minutes on a 2-core CPU; M' settles by step ~125
  return c
