"""Protect a classical (non-learned) image algorithm: total-variation denoising.

  deepwm run --config configs/protect_classical.py --workdir runs/classical

The "model" M is `deepwm_jax.examples.classical:denoise_tv` (scikit-image's Chambolle TV
denoiser) on the noise task: nothing is trained for M, the barrier H watermarks its outputs,
and surrogates that learn to imitate the algorithm from its outputs inherit the watermark
(AAAI 2020: the barrier protects traditional algorithms as well as networks). Any function
images -> images works: see deepwm_jax/examples/classical.py. Everything else is the
quickstart's (configs/quickstart.py); add --config.protect.method=traditional for the
spread-spectrum baseline instead of H/R. docs/strategies.md has the measured numbers.
"""
import os

from deepwm_jax import config as config_lib


def _quickstart():
  here = os.path.dirname(os.path.abspath(__file__))
  return config_lib.load(os.path.join(here, "quickstart.py"))


def get_config():
  c = _quickstart()
  c.data.task = "noise"
  c.task.source = "python:deepwm_jax.examples.classical:denoise_tv"
  return c
