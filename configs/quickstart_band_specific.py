"""The band kit with the model-specific strategy: H absorbed into M', every plain member read.

  deepwm run --config configs/quickstart_band_specific.py --workdir runs/qs_band_spec
  deepwm attack --kit runs/qs_band_spec/kit --config configs/zoo_strategies.py --workdir runs/zoo_band_spec

configs/quickstart_band.py (the agnostic kit runs first, as in configs/quickstart_specific.py),
then the task model M is fine-tuned into M' that emits H(M(A)) itself
(`protect.strategy='specific'`, deepwm_jax/train/absorb.py) for 250 steps, and the pipeline's
stage-2 and unseen surrogate specs are trained on M' outputs. The kit (same R, same
calibration) verifies M' outputs. Measured per seed in docs/strategies.md ("The fidelity
band on M'"); about 22 minutes on the 2-core CPU (1348 s, measured beside the test
suite), of which the absorb stage and the M' surrogates take 3.
"""
import os

from deepwm_jax import config as config_lib


def get_config():
  c = config_lib.load(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "quickstart_band.py"))
  c.protect.strategy = "specific"
  c.protect.absorb.steps = 250  # as configs/quickstart_specific.py: M' settles by step ~125
  return c
