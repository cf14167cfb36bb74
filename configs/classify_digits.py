"""Classifier fingerprinting on the scikit-learn digits (offline), the issue's full run:
5 users, 15 clean models, the logo / noise / frontier-stitching baselines and every attack.

  deepwm classify run --config configs/classify_digits.py --workdir runs/classify
  deepwm classify verify --kit runs/classify/kit --model runs/classify/models/user0

Other data through tfds (prepared in the array_record format, no download), e.g.
  --config.data.source=tfds:fashion_mnist --config.data.tfds_dir=DIR --config.data.image_size=32
  --config.data.source=tfds:cifar10 --config.data.channels=3 --config.data.image_size=32
"""
from deepwm_jax.classify.config import base_config


def get_config():
  c = base_config()
  c.data.source = "digits"
  c.data.image_size = 16
  c.users = ("user0", "user1", "user2", "user3", "user4")
  return c
