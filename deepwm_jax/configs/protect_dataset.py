"""Protect a data set of image pairs: the quickstart with the published targets B watermarked
(B' = H(B)), so models trained on the published (A, B') are the suspects the kit catches.

  deepwm run --config configs/protect_dataset.py --workdir runs/dataset

The pipeline's surrogates are what a third party gets by training on the published data set.
To watermark an existing folder with a kit instead (`deepwm embed`), see
deepwm_jax/examples/dataset.py.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.task.source = "dataset"      # the "outputs" to protect are the data set's targets B
  return c
