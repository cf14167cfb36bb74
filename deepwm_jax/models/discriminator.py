"""Discriminator D: a PatchGAN that tells watermarked outputs B' from clean B."""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from deepwm_jax.models.layers import Conv
from deepwm_jax.models.norms import make_norm


class Discriminator(nn.Module):
  widths: Sequence[int] = (64, 128, 256, 512)
  impl: str = "xla"
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    x = x_BxHxWxC
    for i, f in enumerate(self.widths):
      x = Conv(f, 3, 2, 1, name=f"conv{i}", impl=self.impl, dtype=self.dtype)(x)
      if i > 0:
        x = make_norm("instance_noaffine")(x)
      x = nn.leaky_relu(x, 0.2)
    # One logit per patch: a 16x16 map at 256x256 input. In the compute dtype like every other
    # conv (without it a bfloat16 input met a float32 kernel: XLA's conv refuses mixed dtypes).
    return Conv(1, 3, 1, 1, name="patch_logits", impl=self.impl,
                dtype=self.dtype)(x).astype(jnp.float32)
