"""Extractor R: the dilated residual CNN that reads the watermark out of an image.

Three 3x3 stem convs (the third stride 2), residual blocks with dilations (2,2,2,2,4,4,4,4,1
in the reference), a 4x4 stride-2 transposed conv back to full size, a 3x3 conv and a 1x1 conv
to the image channels. Convs followed by InstanceNorm carry no bias, which is what gives the
reference's 3,366,145 parameters at 128 channels.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from deepwm_jax.models.layers import Conv, ConvTranspose
from deepwm_jax.models.norms import make_norm


class ResidualBlock(nn.Module):
  features: int
  dilation: int
  impl: str = "xla"
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    conv = dict(kernel_size=3, padding=self.dilation, dilation=self.dilation, use_bias=False,
                impl=self.impl, dtype=self.dtype)
    y = nn.relu(make_norm("instance")(Conv(self.features, **conv)(x)))
    y = make_norm("instance")(Conv(self.features, **conv)(y))
    return nn.relu(x + y)


class Extractor(nn.Module):
  out_channels: int
  channels: int = 128
  dilations: Sequence[int] = (2, 2, 2, 2, 4, 4, 4, 4, 1)
  output: str = "relu"        # 'relu' (reference) or 'linear' (docs/method.md)
  impl: str = "xla"
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    c, kw = self.channels, dict(impl=self.impl, dtype=self.dtype)
    x = x_BxHxWxC
    for i, stride in enumerate((1, 1, 2)):
      x = Conv(c, 3, stride, 1, use_bias=False, name=f"stem{i}", **kw)(x)
      x = nn.relu(make_norm("instance")(x))
    for i, d in enumerate(self.dilations):
      x = ResidualBlock(c, d, name=f"block{i}", **kw)(x)
    x = nn.relu(make_norm("instance")(ConvTranspose(c, 4, 2, 1, name="up", **kw)(x)))
    x = nn.relu(make_norm("instance")(Conv(c, 3, 1, 1, name="refine", **kw)(x)))
    x = Conv(self.out_channels, 1, 1, 0, name="to_image", **kw)(x)
    x = x.astype(jnp.float32)
    if self.output == "relu":
      return nn.relu(x)
    if self.output == "sigmoid":
      return nn.sigmoid(x)
    if self.output == "linear":
      return x
    raise ValueError(f"unknown extractor output {self.output!r}; use relu, sigmoid or linear")
