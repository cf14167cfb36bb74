"""Classifier fingerprinting on CIFAR-10 through a prepared tfds dataset (no download).

Prepare `cifar10` in the array_record format on a machine with TensorFlow and copy its
data_dir here (docs/tfds.md), then

  deepwm classify run --config configs/classify_cifar10.py --workdir runs/cls_cifar10 \
      --config.data.tfds_dir=DIR        # or set TFDS_DATA_DIR

RGB at the dataset's own 32 px. The tfds 'train' split is divided into the owner's and the
attacker's data, 'test' is the test set. Key images are crops of scikit-image photos with the
user's pattern; CIFAR-10 is itself photographic, so the pattern, not the photo, has to carry
the watermark here (the decoys teach that). Tested only on a tiny locally prepared stand-in
(tests/test_tfds.py): no results on the real data yet, so the widths and steps below are a
starting point sized for an accelerator.
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
