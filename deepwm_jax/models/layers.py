"""Convolution layers with PyTorch's padding semantics and the reference initialisation.

The reference networks (pix2pix U-Net, the dilated residual extractor, PatchGAN) are written
with PyTorch's `padding=p` convention; these wrappers keep that convention so the flax modules
read like the method and produce the same shapes and parameter counts. Parameters are stored
as flax's HWIO `kernel` and `bias`, whatever `impl` computes them with, so checkpoints and kits
do not depend on the implementation chosen.
"""
import functools
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
    return _with_params(self, x_BxHxWxC, lambda x, kernel: conv2d(
        x, kernel, self.stride, self.padding, self.dilation, self.impl))


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
    return _with_params(self, x_BxHxWxC, lambda x, kernel: conv_transpose2d(
        x, kernel, self.stride, self.padding, self.impl))


def _with_params(module, x, op):
  """Declares the module's HWIO `kernel` and optional `bias` (the one layout every impl
  shares) and returns op(x, kernel) + bias, computed in the module's dtype."""
  k = module.kernel_size
  kernel = module.param("kernel", conv_init, (k, k, x.shape[-1], module.features))
  bias = module.param("bias", nn.initializers.zeros, (module.features,)) if module.use_bias else None
  x, kernel = _cast(module.dtype, x, kernel)
  y = op(x, kernel)
  return y if bias is None else y + bias.astype(y.dtype)


def _cast(dtype, x, kernel):
  if dtype is None:
    return x, kernel
  return x.astype(dtype), kernel.astype(dtype)


# Measured on a 2-core AVX2 CPU (`python -m deepwm_jax.bench_layers`, benchmarks/README.md):
# the sub-pixel transposed convolution ran 4-13x faster than XLA's input-dilated one, forward +
# backward. Matmul formulations of the plain convolutions (im2col + one GEMM, sums of shifted
# 1x1 convolutions, XLA forward with a GEMM kernel gradient, space-to-depth for stride 2) all
# ran 0.3-0.9x as fast as XLA's own convolution, so 'auto' keeps XLA's conv for those and only
# feeds it a materialized input (see `materialize`).
CONV_IMPLS = ("xla", "auto")
CONV_TRANSPOSE_IMPLS = ("xla", "subpixel", "auto")


def resolve_conv_impl(impl, kernel_size, stride, dilation):
  """The impl `conv2d` runs for `impl` ('auto' is decided here, at trace time)."""
  del kernel_size, stride, dilation  # no shape has a faster path than XLA's yet
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown conv impl {impl!r}; use one of {CONV_IMPLS}")
  return "xla" if impl == "auto" else impl


def resolve_conv_transpose_impl(impl, kernel_size, stride, padding):
  """The impl `conv_transpose2d` runs: 'auto' is 'subpixel' on CPU for exact upsampling
  (k - 2p == stride, the reference's 4x4 stride-2 pad-1), plain 'xla' on GPU/TPU where XLA's
  transposed convolution is first-class."""
  if impl not in CONV_TRANSPOSE_IMPLS:
    raise ValueError(f"unknown conv_transpose impl {impl!r}; use one of {CONV_TRANSPOSE_IMPLS}")
  if impl != "auto":
    return impl
  on_cpu = jax.default_backend() == "cpu"
  return "subpixel" if on_cpu and kernel_size - 2 * padding == stride else "xla"


def cpu_compiler_options():
  """`jax.jit(..., compiler_options=...)` that speed up convolutions on the CPU backend.

  XLA:CPU hands convolutions to YNNPACK by default; for the kernel gradient of a conv (a
  convolution with the whole image as its window) that ran about 2x slower than XLA's own
  Eigen path, and the sub-pixel transposed conv 2x slower in all. This keeps YNNPACK for dots
  only. Empty off CPU, and where this jaxlib does not know the option.
  """
  if jax.default_backend() != "cpu":
    return {}
  return dict(_known_cpu_options())


@functools.cache
def _known_cpu_options():
  options = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
  try:  # older and newer jaxlibs may not have the option: then compile with the defaults
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.zeros(1, np.float32)).compile()
  except Exception:  # pylint: disable=broad-except
    return ()
  return tuple(options.items())


def conv2d(x, kernel, stride, padding, dilation, impl="xla"):
  """Cross-correlation like torch.nn.functional.conv2d, NHWC / HWIO."""
  resolve_conv_impl(impl, kernel.shape[0], stride, dilation)
  if impl == "auto" and jax.default_backend() == "cpu":
    x = materialize(x)
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def materialize(x):
  """x, computed into a buffer of its own that XLA:CPU cannot fuse its producers through.

  The kernel gradient of a conv reads its input transposed ([C, H, W, B]). XLA:CPU fuses the
  elementwise ops that produced the input (norm, ReLU, residual add) into that transpose and
  recomputes them there, in the cache-hostile transposed order, from every earlier residual
  block: a 9-block residual stack ran 1.7x slower for it. jax.lax.optimization_barrier is
  dropped before fusion on CPU; a conditional is not, and its branches differ (x + 0 turns -0
  into +0, so XLA cannot merge them) while both return x. Under vmap the conditional becomes
  a select: still correct, just not a fusion boundary.
  """
  if x.size == 0:
    return x
  first = x.reshape(-1)[0]
  return jax.lax.cond(first != first, lambda v: v + 0, lambda v: v, x)


def conv_transpose2d(x, kernel, stride, padding, impl="xla"):
  """Like torch.nn.functional.conv_transpose2d with an HWIO kernel (I = input channels).

  'xla': a transposed convolution is the gradient of a convolution: dilate the input by the
  stride, pad by k - 1 - p, and correlate with the spatially flipped kernel.
  'subpixel': the same weights re-arranged into one stride-1 correlation with stride^2 times
  the output channels (one per output phase), then depth-to-space. No input dilation, so no
  multiplications by inserted zeros.
  """
  k = kernel.shape[0]
  if impl == "auto" and jax.default_backend() == "cpu":
    x = materialize(x)  # see `materialize`: the sub-pixel conv's kernel gradient reads x too
  impl = resolve_conv_transpose_impl(impl, k, stride, padding)
  if impl == "subpixel":
    if k - 2 * padding != stride:
      raise ValueError(f"conv_transpose impl 'subpixel' needs kernel - 2 * padding == stride "
                       f"(exact upsampling), got k={k}, stride={stride}, padding={padding}; "
                       "use impl='xla' or 'auto'")
    taps, reach = _subpixel_taps(k, stride, padding)
    y = conv2d(x, _subpixel_kernel(kernel, taps), 1, reach, 1, "xla")
    return _depth_to_space(y, stride)
  pad = k - 1 - padding
  return jax.lax.conv_general_dilated(
      x, jnp.flip(kernel, (0, 1)), window_strides=(1, 1),
      padding=((pad, pad), (pad, pad)), lhs_dilation=(stride, stride),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _subpixel_taps(k, stride, padding):
  """Which kernel index feeds output phase a from input offset d (None: no tap).

  Output o = stride * m + a receives input i = m + d through kernel index
  a + padding - stride * d (from o = stride * i - padding + kidx). Offsets run over
  -reach..reach so one (2 reach + 1)^2 correlation covers every phase (3x3 for k=4, s=2).
  """
  def kidx(a, d):
    j = a + padding - stride * d
    return j if 0 <= j < k else None
  reach = max(abs(d) for a in range(stride) for d in range(-k, k + 1) if kidx(a, d) is not None)
  taps = [[kidx(a, d) for d in range(-reach, reach + 1)] for a in range(stride)]
  return taps, reach


def _subpixel_kernel(kernel_KxKxIxO, taps):
  """Re-arrange the transposed-conv kernel into a correlation kernel [t, t, I, s*s*O] whose
  output channels are (phase_h, phase_w, O); missing taps read an appended zero row."""
  k, _, cin, cout = kernel_KxKxIxO.shape
  idx = np.array([[k if t is None else t for t in row] for row in taps])  # [s, t]
  s, t = idx.shape
  padded = jnp.pad(kernel_KxKxIxO, ((0, 1), (0, 1), (0, 0), (0, 0)))
  sub = padded[idx[:, :, None, None], idx[None, None, :, :]]  # [s, t, s, t, I, O]
  return sub.transpose(1, 3, 4, 0, 2, 5).reshape(t, t, cin, s * s * cout)


def _depth_to_space(y_BxHxWxSSO, s):
  """[B, H, W, (s, s, O)] -> [B, s H, s W, O]: phase (a, b) goes to pixel (s h + a, s w + b)."""
  b, h, w, c = y_BxHxWxSSO.shape
  o = c // (s * s)
  y = y_BxHxWxSSO.reshape(b, h, w, s, s, o).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, h * s, w * s, o)
