"""A plain deep CNN (DnCNN-like) image-to-image surrogate: no down-sampling, residual output."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepwm_jax.models.layers import Conv
from deepwm_jax.models.norms import make_norm


class PlainCNN(nn.Module):
  out_channels: int
  ngf: int = 32
  depth: int = 8
  impl: str = "xla"
  dtype: Any = None
  residual: bool = True   # add the input (DnCNN); False: return the last conv (an embedder body)

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    kw = dict(impl=self.impl, dtype=self.dtype)
    x = nn.relu(Conv(self.ngf, 3, 1, 1, name="conv0", **kw)(x_BxHxWxC))
    for i in range(1, self.depth - 1):
      x = Conv(self.ngf, 3, 1, 1, use_bias=False, name=f"conv{i}", **kw)(x)
      x = nn.relu(make_norm("instance")(x))
    x = Conv(self.out_channels, 3, 1, 1, name=f"conv{self.depth - 1}", **kw)(x)
    if not self.residual:
      return x
    # DnCNN predicts the residual; the output stays an image.
    return x_BxHxWxC + x.astype(jnp.float32)
