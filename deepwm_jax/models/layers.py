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
import numpy as np

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


CONV_IMPLS = ("xla", "im2col", "shift", "auto")
CONV_TRANSPOSE_IMPLS = ("xla", "subpixel", "subpixel_im2col", "phase", "auto")


def resolve_conv_impl(impl, kernel_size, stride, dilation):
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "xla"
  return "xla"


def resolve_conv_transpose_impl(impl, kernel_size, stride, padding):
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "xla"
  return "subpixel" if kernel_size - 2 * padding == stride else "xla"


def conv2d(x, kernel, stride, padding, dilation, impl="xla"):
  """Cross-correlation like torch.nn.functional.conv2d, NHWC / HWIO."""
  impl = resolve_conv_impl(impl, kernel.shape[0], stride, dilation)
  if impl == "xla":
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if impl == "im2col":
    patches = jnp.concatenate(_shifted_views(x, kernel.shape[0], stride, padding, dilation), -1)
    return _matmul_last(patches, kernel.reshape(-1, kernel.shape[-1]))
  if impl == "shift":
    views = _shifted_views(x, kernel.shape[0], stride, padding, dilation)
    taps = kernel.reshape(-1, kernel.shape[2], kernel.shape[3])
    return sum(_matmul_last(v, t) for v, t in zip(views, taps))
  raise ValueError(f"unknown conv impl {impl!r}; use one of {CONV_IMPLS}")


def _shifted_views(x_BxHxWxC, k, stride, padding, dilation):
  """The k*k input windows a convolution reads, one strided view per tap (row-major taps,
  the order of an HWIO kernel reshaped to [k*k, C, O])."""
  xp = jnp.pad(x_BxHxWxC, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  span = dilation * (k - 1) + 1
  h_out = (xp.shape[1] - span) // stride + 1
  w_out = (xp.shape[2] - span) // stride + 1
  views = []
  for a in range(k):
    for b in range(k):
      top, left = a * dilation, b * dilation
      views.append(jax.lax.slice(
          xp, (0, top, left, 0),
          (xp.shape[0], top + (h_out - 1) * stride + 1, left + (w_out - 1) * stride + 1,
           xp.shape[3]),
          (1, stride, stride, 1)))
  return views


def _matmul_last(x_BxHxWxK, w_KxO):
  """Contract the channel axis with one GEMM over all pixels."""
  b, h, w, k = x_BxHxWxK.shape
  y = jnp.dot(x_BxHxWxK.reshape(b * h * w, k), w_KxO)
  return y.reshape(b, h, w, w_KxO.shape[-1])


def conv_transpose2d(x, kernel, stride, padding, impl="xla"):
  """Like torch.nn.functional.conv_transpose2d with an HWIO kernel (I = input channels).

  A transposed convolution is the gradient of a convolution: dilate the input by the stride,
  pad by k - 1 - p, and correlate with the spatially flipped kernel.
  """
  k = kernel.shape[0]
  impl = resolve_conv_transpose_impl(impl, k, stride, padding)
  if impl == "xla":
    pad = k - 1 - padding
    return jax.lax.conv_general_dilated(
        x, jnp.flip(kernel, (0, 1)), window_strides=(1, 1),
        padding=((pad, pad), (pad, pad)), lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if impl in ("subpixel", "subpixel_im2col", "phase"):
    if k - 2 * padding != stride:
      raise ValueError(f"conv_transpose impl {impl!r} needs kernel - 2 * padding == stride "
                       f"(exact upsampling), got k={k}, stride={stride}, padding={padding}")
    taps, reach = _subpixel_taps(k, stride, padding)
    if impl == "phase":
      return _depth_to_space(_phase_matmuls(x, kernel, taps, reach), stride)
    sub = _subpixel_kernel(kernel, taps)
    inner = "xla" if impl == "subpixel" else "im2col"
    return _depth_to_space(conv2d(x, sub, 1, reach, 1, inner), stride)
  raise ValueError(f"unknown conv_transpose impl {impl!r}; use one of {CONV_TRANSPOSE_IMPLS}")


def _subpixel_taps(k, stride, padding):
  """Which kernel index feeds output phase a from input offset d (None: no tap).

  Output o = stride * m + a receives input i = m + d through kernel index
  a + padding - stride * d (from o = stride * i - padding + kidx). Offsets run over
  -reach..reach so one (2 reach + 1)^2 correlation covers every phase.
  """
  reach = max(abs(d) for a in range(stride) for d in range(-k, k + 1)
              if 0 <= a + padding - stride * d < k)
  taps = [[a + padding - stride * d if 0 <= a + padding - stride * d < k else None
           for d in range(-reach, reach + 1)] for a in range(stride)]
  return taps, reach


def _subpixel_kernel(kernel_KxKxIxO, taps):
  """Re-arrange the transposed-conv kernel into a correlation kernel [t, t, I, s*s*O] whose
  output channels are (phase_h, phase_w, O); missing taps are zeros."""
  k = kernel_KxKxIxO.shape[0]
  idx = np.array([[k if t is None else t for t in row] for row in taps])  # [s, t]
  padded = jnp.pad(kernel_KxKxIxO, ((0, 1), (0, 1), (0, 0), (0, 0)))
  sub = padded[idx[:, :, None, None], idx[None, None, :, :]]  # [s, t, s, t, I, O]
  s, t = idx.shape
  sub = sub.transpose(1, 3, 4, 0, 2, 5)  # [t, t, I, s, s, O]
  return sub.reshape(t, t, kernel_KxKxIxO.shape[2], s * s * kernel_KxKxIxO.shape[3])


def _phase_matmuls(x, kernel, taps, reach):
  """Each output phase as one GEMM over only its real taps (no zero taps multiplied)."""
  views = _shifted_views(x, 2 * reach + 1, 1, reach, 1)
  t = 2 * reach + 1
  phases = []
  for row_a in taps:
    for row_b in taps:
      used = [(i, j) for i in range(t) for j in range(t)
              if row_a[i] is not None and row_b[j] is not None]
      patches = jnp.concatenate([views[i * t + j] for i, j in used], -1)
      w = jnp.concatenate([kernel[row_a[i], row_b[j]] for i, j in used], 0)
      phases.append(_matmul_last(patches, w))
  return jnp.concatenate(phases, -1)


def _depth_to_space(y_BxHxWxSSO, s):
  """[B, H, W, (s, s, O)] -> [B, s H, s W, O]: phase (a, b) goes to pixel (s h + a, s w + b)."""
  b, h, w, c = y_BxHxWxSSO.shape
  o = c // (s * s)
  y = y_BxHxWxSSO.reshape(b, h, w, s, s, o).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, h * s, w * s, o)
