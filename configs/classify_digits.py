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
  # Fine-tuning-aware training (docs/classify.md): each user's copy is trained to keep its keys
  # after 5 simulated steps of the attacker's Adam at 1e-2 or 3e-2 (overshooting the attack
  # grid's top rate), with a key margin of 10 there; 1000 steps win back the task accuracy
  # the term costs. Measured: 100% of the keys after every fine-tune of the attack grid.
  c.train.steps = 1000
  c.train.finetune_sim = dict(steps=5, lrs=(1e-2, 3e-2), batch=32, weight=1.0, margin=10.0,
                              second_order=False)
  return c
