"""Task data: the scikit-learn handwritten digits (offline) or a prepared tfds dataset,
split into the owner's training set, the attacker's clean set and a test set.

The digits are 8x8 with 17 grey levels; they are upsampled (bicubic) to the config's size so
the network, the key images and the fingerprint capacity work at that size.
"""
import dataclasses

import numpy as np

from deepwm_jax.data import imageio, tfds_source
from deepwm_jax.errors import DeepwmError


@dataclasses.dataclass
class Split:
  x: np.ndarray   # NxHxWxC float32 in [0, 1]
  y: np.ndarray   # N int32 labels in [0, num_classes)


@dataclasses.dataclass
class TaskData:
  train: Split    # the owner trains every model on it
  attack: Split   # the attacker's clean data: fine-tuning and the purifier
  test: Split


def load(cfg) -> TaskData:
  d = cfg.data
  if d.source == "digits":
    x, y = _digits()
    n = len(x)
    order = np.random.default_rng([cfg.seed, 101]).permutation(n)
    n_test, n_attack = round(n * d.test_fraction), round(n * d.attack_fraction)
    test, attack, train = np.split(order, [n_test, n_test + n_attack])
    parts = {"train": (x[train], y[train]), "attack": (x[attack], y[attack]),
             "test": (x[test], y[test])}
  elif d.source.startswith("tfds:"):
    # The source's split (default 'train') feeds the owner and the attacker; the dataset's
    # own test split (data.tfds_test_split) is the test set.
    x, y = _tfds(d.source, None, d)
    order = np.random.default_rng([cfg.seed, 101]).permutation(len(x))
    n_attack = round(len(x) * d.attack_fraction)
    attack, train = order[:n_attack], order[n_attack:]
    parts = {"train": (x[train], y[train]), "attack": (x[attack], y[attack]),
             "test": _tfds(d.source, d.tfds_test_split, d)}
  else:
    raise DeepwmError(f"data.source={d.source!r}; use 'digits' or 'tfds:NAME'")
  out = {}
  for split, (xs, ys) in parts.items():
    if ys.size and (ys.min() < 0 or ys.max() >= d.num_classes):
      raise DeepwmError(f"data.source {d.source!r} has labels up to {int(ys.max())} but "
                        f"data.num_classes={d.num_classes}; set data.num_classes")
    out[split] = Split(_resize(xs, d.image_size, d.channels), ys.astype(np.int32))
  return TaskData(**out)


def _digits() -> tuple[np.ndarray, np.ndarray]:
  try:
    from sklearn.datasets import load_digits
  except ImportError:
    raise DeepwmError("the digits source needs scikit-learn; pip install scikit-learn") from None
  digits = load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  return x, digits.target.astype(np.int32)


def _tfds(source: str, split: str | None, d) -> tuple[np.ndarray, np.ndarray]:
  """One split of a prepared tfds dataset (array_record, no TensorFlow), resized to the
  config's size as it is read (a whole dataset at its own size may not fit in memory)."""
  images, y = tfds_source.labeled(source, d.tfds_dir, split, d.tfds_max_items)
  x = np.empty((len(images), d.image_size, d.image_size, d.channels), np.float32)
  for i, img in enumerate(images):
    x[i] = imageio.resize_image(tfds_source.to_float_image(img, d.channels), d.image_size,
                                d.image_size)
  return x, y


def _resize(x_NxHxWxC: np.ndarray, size: int, channels: int) -> np.ndarray:
  out = np.empty((len(x_NxHxWxC), size, size, channels), np.float32)
  for i, img in enumerate(x_NxHxWxC):
    out[i] = imageio.to_channels(imageio.resize_image(img, size, size), channels)
  return out
