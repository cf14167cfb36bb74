"""Surrogate architectures of the zoo, by family.

  unet    pix2pix U-Net (num_downs levels, ngf): the stage-2 surrogate's family
  resnet  CycleGAN ResNet-blocks generator, n_blocks 0/1/6/9/16 as in the reference attack code
  cnn     plain deep CNN (DnCNN-like, `depth` 3x3 convs at full resolution)
  edsr    EDSR-like: residual blocks without normalisation at full resolution, a long skip and
          a global residual. No deepwm stage trains on this family, so it tests whether the
          fine-tuned extractor generalises to an architecture it never saw.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepwm_jax import models
from deepwm_jax.models.layers import Conv

FAMILIES = ("unet", "resnet", "cnn", "edsr")


class EDSR(nn.Module):
  out_channels: int
  ngf: int = 32
  n_blocks: int = 4
  res_scale: float = 0.1
  impl: str = "xla"
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    del train  # no normalisation: EDSR's point
    kw = dict(impl=self.impl, dtype=self.dtype)
    head = Conv(self.ngf, 3, 1, 1, name="head", **kw)(x_BxHxWxC)
    h = head
    for i in range(self.n_blocks):
      y = nn.relu(Conv(self.ngf, 3, 1, 1, name=f"block{i}_a", **kw)(h))
      h = h + self.res_scale * Conv(self.ngf, 3, 1, 1, name=f"block{i}_b", **kw)(y)
    h = Conv(self.ngf, 3, 1, 1, name="body_end", **kw)(h) + head
    out = Conv(self.out_channels, 3, 1, 1, name="tail", **kw)(h)
    return x_BxHxWxC + out.astype(jnp.float32)


def build(spec, channels: int, image_size: int, impl: str = "xla", dtype=None) -> nn.Module:
  """The flax module of a zoo arch spec (a dict with `arch` and its family's fields)."""
  spec = dict(spec)
  if spec["arch"] == "edsr":
    return EDSR(channels, spec.get("ngf", 32), spec.get("n_blocks", 4),
                spec.get("res_scale", 0.1), impl, dtype)
  full = {"num_downs": 0, "n_blocks": 6, "depth": 8, "norm": "batch", "output": "residual",
          "residual_scale": 0.5, **spec}
  return models.image_model(_Spec(full), channels, image_size, impl, dtype)


class _Spec(dict):
  """models.image_model reads specs by attribute and with .get (a ConfigDict's interface)."""
  __getattr__ = dict.__getitem__
