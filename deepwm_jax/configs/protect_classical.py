"""Protect a classical (non-learned) image algorithm: the quickstart with scikit-image's TV
denoiser as the model M on the noise task; surrogates that imitate it inherit the watermark.

  deepwm run --config configs/protect_classical.py --workdir runs/classical

Any function images -> images works as task.source (deepwm_jax/examples/classical.py).
Add --config.protect.method=traditional for the spread-spectrum baseline instead of H/R.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.data.task = "noise"
  c.task.source = "python:deepwm_jax.examples.classical:denoise_tv"  # nothing trained for M
  return c
