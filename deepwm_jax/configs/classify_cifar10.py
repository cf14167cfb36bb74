"""Classifier fingerprinting on CIFAR-10 from a prepared tfds dataset (no download), RGB at its
own 32 px; the key pattern, not the photo, carries the watermark; for accelerators.

  deepwm classify run --config configs/classify_cifar10.py --workdir runs/cls_cifar10 \
      --config.data.tfds_dir=DIR        # or set TFDS_DATA_DIR

Prepare `cifar10` in the array_record format on a machine with TensorFlow (docs/data.md).
No results on the real data yet: the widths and steps are a starting point.
"""
from deepwm_jax.classify.config import base_config


def get_config():
  c = base_config()
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.num_classes = 10
  c.model.widths = (64, 128)
  c.model.hidden = 256
  c.train.steps = 6000
  c.train.batch = 128
  c.attacks.finetune.steps = (500, 2000)
  c.attacks.finetune.batch = 128
  c.attacks.purifier.steps = 2000
  c.attacks.purifier.width = 32
  c.ckpt_every = 1000
  return c
