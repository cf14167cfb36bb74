"""Perceptual loss: distances between VGG16 relu3_3 features (the reference attack's choice).

There are no pretrained weights offline and none are downloaded: the user provides a .npz
holding torchvision's VGG16 `features` convolutions under their state-dict names, for example
written on a machine with torchvision by

  import numpy as np, torchvision
  sd = torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()
  np.savez("vgg16.npz", **{k: v.numpy() for k, v in sd.items() if k.startswith("features.")})

and sets the zoo config's `perceptual.weights` to its path. Without it, members with the
perceptual loss are skipped and listed as skipped in the report (a random VGG is no
perceptual loss, so there is no silent fallback).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from deepwm_jax.errors import DeepwmError

# torchvision vgg16.features indices of the convolutions up to relu3_3; 'M' is a 2x2 max pool.
_LAYERS = (0, 2, "M", 5, 7, "M", 10, 12, 14)
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)   # ImageNet statistics, images in [0, 1]
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_weights(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
  """[(kernel HWIO, bias)] for the convs up to relu3_3, from a torchvision-layout .npz."""
  if not os.path.isfile(path):
    raise DeepwmError(f"perceptual.weights '{path}' not found; give a .npz of torchvision's "
                      f"VGG16 features (see docs/zoo.md) or leave it empty to skip those members")
  try:
    data = np.load(path)
  except Exception as e:  # numpy raises several types for a file that is not an npz
    raise DeepwmError(f"perceptual.weights '{path}' is not a readable .npz ({type(e).__name__})"
                      ) from None
  out = []
  for idx in _LAYERS:
    if idx == "M":
      continue
    names = [f"features.{idx}.weight", f"features.{idx}.bias"]
    missing = [n for n in names if n not in data]
    if missing:
      raise DeepwmError(f"perceptual.weights '{path}' has no {missing[0]}; it must hold "
                        f"torchvision VGG16 state-dict arrays (features.0.weight, ...)")
    w = np.asarray(data[names[0]], np.float32)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
      raise DeepwmError(f"perceptual.weights '{path}': {names[0]} has shape {w.shape}, not a "
                        f"VGG16 3x3 conv kernel (O, I, 3, 3)")
    out.append((w.transpose(2, 3, 1, 0), np.asarray(data[names[1]], np.float32)))
  return out


# (in, out) channels of the convolutions in _LAYERS, in order.
_CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256))


def placeholder_weights() -> list[tuple[np.ndarray, np.ndarray]]:
  """Zero weights of VGG16's shapes: for sizing a zoo (`deepwm attack --plan`) before the real
  file is at hand. Never a loss to train with (the run skips perceptual members instead)."""
  return [(np.zeros((3, 3, i, o), np.float32), np.zeros((o,), np.float32))
          for i, o in _CHANNELS]


def features(weights, x_BxHxWxC):
  """VGG16 relu3_3 features of images in [0, 1] (grayscale is repeated to RGB)."""
  x = x_BxHxWxC
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = (x - _MEAN) / _STD
  it = iter(weights)
  for layer in _LAYERS:
    if layer == "M":
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      continue
    kernel, bias = next(it)
    x = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    x = jax.nn.relu(x)
  return x


def loss(weights, out, target):
  return jnp.mean(jnp.square(features(weights, out) - features(weights, target)))
