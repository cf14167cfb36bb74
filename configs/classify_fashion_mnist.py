"""Classifier fingerprinting on Fashion-MNIST through a prepared tfds dataset (no download).

Prepare `fashion_mnist` in the array_record format on a machine with TensorFlow and copy its
data_dir here (docs/tfds.md), then

  deepwm classify run --config configs/classify_fashion_mnist.py --workdir runs/cls_fmnist \
      --config.data.tfds_dir=DIR        # or set TFDS_DATA_DIR

The 28 px images are resized to 32 px (the key pattern's 8x8 grid must divide the size). The
tfds 'train' split is divided into the owner's and the attacker's data, 'test' is the test set.
Tested only on a tiny locally prepared stand-in (tests/test_tfds.py): no results on the real
data yet, so the widths and steps below are a starting point sized for an accelerator.
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
