"""Classifier fingerprinting on the scikit-learn digits (offline): 5 users, 15 clean models,
the logo / noise / frontier-stitching baselines and every attack, in about 10 minutes on 2 cores.

  deepwm classify run --config configs/classify_digits.py --workdir runs/classify

Verify a copy with `deepwm classify verify --kit runs/classify/kit --model
runs/classify/models/user0`. Other data: classify_fashion_mnist.py, classify_cifar10.py.
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
  # the term costs.
  c.train.steps = 1000
  c.train.finetune_sim = dict(steps=5, lrs=(1e-2, 3e-2), batch=32, weight=1.0, margin=10.0,
                              second_order=False)
  return c
