"""Protect a data set of image pairs: watermark the published targets, catch models trained on it.

  deepwm run --config configs/protect_dataset.py --workdir runs/dataset

The owner publishes a deraining data set (A, B). With task.source='dataset' the "outputs"
to protect are the targets B themselves: H watermarks them (B' = H(B)), the published data
set is (A, B'), and the pipeline's surrogates are exactly what a third party gets by
training a deraining model on the published data set. The report's surrogate rows say
whether such models carry the watermark; the kit verifies any suspect model's outputs.

To watermark an existing folder of images with a kit instead (`deepwm embed`), then train a
model on it and verify it, see deepwm_jax/examples/dataset.py. docs/strategies.md has the
measured numbers. Everything else is configs/quickstart.py.
"""
import os

from deepwm_jax import config as config_lib


def _quickstart():
  here = os.path.dirname(os.path.abspath(__file__))
  return config_lib.load(os.path.join(here, "quickstart.py"))


def get_config():
  c = _quickstart()
  c.task.source = "dataset"
  return c
