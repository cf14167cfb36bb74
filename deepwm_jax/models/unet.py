"""The pix2pix U-Net: embedder H, the default task model M, and a surrogate family.

Level i of `num_downs` halves the resolution with a 4x4 stride-2 conv to
ngf * min(2**(i-1), 8) channels; the way up mirrors it with 4x4 stride-2 transposed convs and
skip concatenation, exactly as pix2pix's recursive UnetSkipConnectionBlock (so the paper config
has the reference's 41,823,873 parameters).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepwm_jax.models.layers import Conv, ConvTranspose
from deepwm_jax.models.norms import make_norm


def level_features(ngf: int, num_downs: int) -> list[int]:
  return [ngf * min(2**i, 8) for i in range(num_downs)]


class UNet(nn.Module):
  """U-Net body: returns the pre-activation output of the outermost transposed conv."""
  out_channels: int
  num_downs: int
  ngf: int = 64
  norm: str = "batch"
  impl: str = "xla"
  zero_init_last: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    h, w = x_BxHxWxC.shape[1:3]
    if h % 2**self.num_downs or w % 2**self.num_downs:
      raise ValueError(f"U-Net with num_downs={self.num_downs} needs image sides divisible by "
                       f"{2**self.num_downs}, got {h}x{w}")
    feats = level_features(self.ngf, self.num_downs)
    # BatchNorm has its own shift, so convs before it carry no bias (as in pix2pix).
    use_bias = self.norm == "none"
    conv = dict(kernel_size=4, stride=2, padding=1, impl=self.impl, dtype=self.dtype)

    skips = []
    x = x_BxHxWxC
    for i, f in enumerate(feats):
      outermost, innermost = i == 0, i == len(feats) - 1
      if not outermost:
        x = nn.leaky_relu(x, 0.2)
      x = Conv(f, use_bias=use_bias, name=f"down{i}", **conv)(x)
      if not (outermost or innermost):
        x = make_norm(self.norm, name=f"down_norm{i}")(x, train)
      skips.append(x)

    for i in reversed(range(len(feats))):
      outermost, innermost = i == 0, i == len(feats) - 1
      if not innermost:
        x = jnp.concatenate([skips[i], x], axis=-1)
      x = nn.relu(x)
      if outermost:
        x = ConvTranspose(self.out_channels, use_bias=True, name="up0", **conv)(x)
        return x
      x = ConvTranspose(feats[i - 1], use_bias=use_bias, name=f"up{i}", **conv)(x)
      x = make_norm(self.norm, name=f"up_norm{i}")(x, train)
