"""Convolution layers with PyTorch's padding semantics and the reference initialisation.

The reference networks (pix2pix U-Net, the dilated residual extractor, PatchGAN) are written
with PyTorch's `padding=p` convention; these wrappers keep that convention so the flax modules
read like the method and produce the same shapes and parameter counts. Parameters are stored
as flax's HWIO `kernel` and `bias`, whatever `impl` computes them with, so checkpoints and kits
do not depend on the implementation chosen.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Reference init: conv weights N(0, 0.02), biases 0 (METHOD.md section 2).
conv_init = nn.initializers.normal(0.02)


class Conv(nn.Module):
  """2-D convolution, NHWC, with PyTorch-style symmetric integer padding."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1
  dilation: int = 1
  use_bias: bool = True
  impl: str = "xla"
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BxHxWxC):
    k = self.kernel_size
    kernel = self.param("kernel", conv_init, (k, k, x_BxHxWxC.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    x, kernel = _cast(self.dtype, x_BxHxWxC, kernel)
    y = conv2d(x, kernel, self.stride, self.padding, self.dilation, self.impl)
    if bias is not None:
      y = y + bias.astype(y.dtype)
    return y


class ConvTranspose(nn.Module):
  """PyTorch `ConvTranspose2d(k, stride=2, padding=1)` (k=4: exact 2x upsampling), NHWC."""
  features: int
  kernel_size: int = 4
  stride: int = 2
  padding: int = 1
  use_bias: bool = True
  impl: str = "xla"
  dtype: Any = None

  @nn.compact
  def __call__(self, x_BxHxWxC):
    k = self.kernel_size
    kernel = self.param("kernel", conv_init, (k, k, x_BxHxWxC.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    x, kernel = _cast(self.dtype, x_BxHxWxC, kernel)
    y = conv_transpose2d(x, kernel, self.stride, self.padding, self.impl)
    if bias is not None:
      y = y + bias.astype(y.dtype)
    return y


def _cast(dtype, x, kernel):
  if dtype is None:
    return x, kernel
  return x.astype(dtype), kernel.astype(dtype)


def conv2d(x, kernel, stride, padding, dilation, impl="xla"):
  """Cross-correlation like torch.nn.functional.conv2d, NHWC / HWIO."""
  if impl == "xla":
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  raise ValueError(f"unknown conv impl {impl!r}; use 'xla'")


def conv_transpose2d(x, kernel, stride, padding, impl="xla"):
  """Like torch.nn.functional.conv_transpose2d with an HWIO kernel (I = input channels).

  A transposed convolution is the gradient of a convolution: dilate the input by the stride,
  pad by k - 1 - p, and correlate with the spatially flipped kernel.
  """
  if impl == "xla":
    k = kernel.shape[0]
    pad = k - 1 - padding
    return jax.lax.conv_general_dilated(
        x, jnp.flip(kernel, (0, 1)), window_strides=(1, 1),
        padding=((pad, pad), (pad, pad)), lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  raise ValueError(f"unknown conv_transpose impl {impl!r}; use 'xla'")
