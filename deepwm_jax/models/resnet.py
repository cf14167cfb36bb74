"""ResNet-blocks generator (CycleGAN style): the attacker's second surrogate family.

7x7 stem, two stride-2 downs, `n_blocks` residual blocks, two 2x ups, 7x7 conv, tanh; residual
learning (out = x + G(x)) like the reference attack code. Images are in [0, 1] here, so the
tanh residual is halved to match the reference's [-1, 1] range.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepwm_jax.models.layers import Conv, ConvTranspose
from deepwm_jax.models.norms import make_norm


def reflect_pad(x, p):
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


class ResnetGenerator(nn.Module):
  out_channels: int
  ngf: int = 64
  n_blocks: int = 9
  impl: str = "xla"
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    kw = dict(impl=self.impl, dtype=self.dtype)
    ngf = self.ngf
    x = Conv(ngf, 7, 1, 0, use_bias=False, name="stem", **kw)(reflect_pad(x_BxHxWxC, 3))
    x = nn.relu(make_norm("instance")(x))
    for i, f in enumerate((ngf * 2, ngf * 4)):
      x = nn.relu(make_norm("instance")(Conv(f, 3, 2, 1, use_bias=False, name=f"down{i}", **kw)(x)))
    for i in range(self.n_blocks):
      y = Conv(ngf * 4, 3, 1, 0, use_bias=False, name=f"block{i}_a", **kw)(reflect_pad(x, 1))
      y = nn.relu(make_norm("instance")(y))
      y = Conv(ngf * 4, 3, 1, 0, use_bias=False, name=f"block{i}_b", **kw)(reflect_pad(y, 1))
      x = x + make_norm("instance")(y)
    for i, f in enumerate((ngf * 2, ngf)):
      x = ConvTranspose(f, 4, 2, 1, use_bias=False, name=f"up{i}", **kw)(x)
      x = nn.relu(make_norm("instance")(x))
    x = Conv(self.out_channels, 7, 1, 0, name="to_image", **kw)(reflect_pad(x, 3))
    return x_BxHxWxC + 0.5 * jnp.tanh(x.astype(jnp.float32))
