"""Classifier fingerprinting on Fashion-MNIST from a prepared tfds dataset (no download), the
28 px images resized to 32 px (the key pattern's 8x8 grid must divide the size); for accelerators.

  deepwm classify run --config configs/classify_fashion_mnist.py --workdir runs/cls_fmnist \
      --config.data.tfds_dir=DIR        # or set TFDS_DATA_DIR

Prepare `fashion_mnist` in the array_record format on a machine with TensorFlow (docs/data.md).
No results on the real data yet: the widths and steps are a starting point.
"""
from deepwm_jax.classify.config import base_config


def get_config():
  c = base_config()
  c.data.source = "tfds:fashion_mnist"
  c.data.image_size = 32
  c.data.channels = 1
  c.data.num_classes = 10
  c.model.widths = (32, 64)
  c.model.hidden = 128
  c.train.steps = 3000
  c.train.batch = 128
  c.attacks.finetune.steps = (300, 1000)
  c.attacks.finetune.batch = 128
  c.attacks.purifier.steps = 1000
  c.attacks.purifier.width = 32
  c.ckpt_every = 500
  return c
