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

# Reference init: conv weights N(0, 0.02), biases 0 (docs/method.md).
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
  if bias is None:
    return y
  if module.impl == "auto" and jax.default_backend() == "cpu":
    return add_bias(y, bias.astype(y.dtype))
  return y + bias.astype(y.dtype)


def _cast(dtype, x, kernel):
  if dtype is None:
    return x, kernel
  return x.astype(dtype), kernel.astype(dtype)


# Measured on a 2-core AVX2 CPU (`python -m deepwm_jax.tools.bench_layers`, benchmarks/README.md):
# the sub-pixel transposed convolution ran 4-13x faster than XLA's input-dilated one, forward +
# backward. Matmul formulations of the plain convolutions (im2col + one GEMM, sums of shifted
# 1x1 convolutions, XLA forward with a GEMM kernel gradient, space-to-depth for stride 2) all
# ran 0.3-0.9x as fast as XLA's own convolution at 16-128 px, so 'auto' keeps XLA's conv there
# and only feeds it a materialized input (see `materialize`). On tiny images (the innermost
# U-Net levels, 2x2 and 4x4 at every image size) XLA:CPU rewrites the convolution into a
# batch-last layout that runs on a slow generic loop (a 2x2 conv of 16 MFLOP took 40-70 ms):
# there 'auto' is im2col + one GEMM ('patches'). The same holds for convs that read very few
# channels (a network's first layer, on the RGB image or RGB + watermark): XLA's conv ran
# 1.5-2x slower than 'patches' there, forward + backward, at 32-128 px (3x3 and 4x4, stride
# 1 and 2; 16 and more input channels went the other way, 0.2-0.9x).
CONV_IMPLS = ("xla", "patches", "auto")
CONV_TRANSPOSE_IMPLS = ("xla", "subpixel", "auto")
# 'auto' uses 'patches' when the conv's input has at most this many pixels (H * W) ...
PATCHES_MAX_PIXELS = 16
# ... or at most this many channels.
PATCHES_MAX_CHANNELS = 6


def resolve_conv_impl(impl, kernel_size, stride, dilation, pixels=None, in_channels=None):
  """The impl `conv2d` runs for `impl` ('auto' is decided here, at trace time, from the input's
  pixel count H * W and channel count: 'patches' for tiny images or few channels on CPU,
  else XLA's conv)."""
  del kernel_size, stride, dilation  # measured: only the input's size decides (see above)
  if impl not in CONV_IMPLS:
    raise ValueError(f"unknown conv impl {impl!r}; use one of {CONV_IMPLS}")
  if impl != "auto":
    return impl
  tiny = pixels is not None and pixels <= PATCHES_MAX_PIXELS
  thin = in_channels is not None and in_channels <= PATCHES_MAX_CHANNELS
  return "patches" if (tiny or thin) and jax.default_backend() == "cpu" else "xla"


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
  resolved = resolve_conv_impl(impl, kernel.shape[0], stride, dilation, x.shape[1] * x.shape[2],
                               x.shape[3])
  if resolved == "patches":
    return _conv_patches(x, kernel, stride, padding, dilation)
  if impl == "auto" and jax.default_backend() == "cpu":
    return _conv_per_member(stride, padding, dilation)(materialize(x), kernel)
  return _conv_xla(x, kernel, stride, padding, dilation)


def _conv_xla(x, kernel, stride, padding, dilation):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.cache
def _conv_per_member(stride, padding, dilation):
  """XLA's conv, whose vmap over kernels (the zoo's stacked members) runs one conv per member.

  vmap turns a conv with batched kernels into one grouped conv (feature_group_count = K),
  which XLA:CPU ran 1.7-3.7x slower than the K convs one after another, forward + backward
  (32 px, 3-64 channels, K = 4). The forward and both gradients are therefore each given a
  vmap rule that unrolls the member axis; results are the per-member convs exactly.
  """
  conv = functools.partial(_conv_xla, stride=stride, padding=padding, dilation=dilation)
  conv_vjp = lambda x, kernel, g: jax.vjp(conv, x, kernel)[1](g)
  # Grouped convs appear where kernels are batched, and in the kernel gradient (a conv of x
  # with g) wherever x and g both are.
  fwd = _unrolled_over_members(conv, lambda x, kernel: kernel)
  bwd = _unrolled_over_members(conv_vjp, lambda x, kernel, g: kernel or (x and g))

  @jax.custom_vjp
  def f(x, kernel):
    return fwd(x, kernel)

  f.defvjp(lambda x, kernel: (fwd(x, kernel), (x, kernel)), lambda res, g: bwd(*res, g))
  return f


def _unrolled_over_members(fn, grouped):
  """fn(*args) with a vmap rule: where grouped(*which args are batched) says vmap would make
  a grouped conv, fn per member, stacked; otherwise the usual vmap (the members fold into the
  conv's batch).

  custom_vmap functions cannot be differentiated, so the result is wrapped in a custom_vjp
  whose gradient is fn's own (plain JAX): gradients of gradients (a gradient penalty, meta-
  learning) work as with XLA's conv; only their vmap keeps the grouped convs.
  """
  f = jax.custom_batching.custom_vmap(fn)

  @jax.custom_vjp
  def differentiable(*args):
    return f(*args)

  differentiable.defvjp(lambda *args: (f(*args), args),
                        lambda args, ct: jax.vjp(fn, *args)[1](ct))

  @f.def_vmap
  def rule(axis_size, in_batched, *args):
    if not grouped(*in_batched):
      out = jax.vmap(fn, in_axes=[0 if b else None for b in in_batched])(*args)
    else:
      outs = [fn(*(a[k] if b else a for a, b in zip(args, in_batched)))
              for k in range(axis_size)]
      out = jax.tree.map(lambda *o: jnp.stack(o), *outs)
    return out, jax.tree.map(lambda _: True, out)

  return differentiable


def _conv_patches(x, kernel, stride, padding, dilation):
  """im2col + one GEMM: the k*k shifted (strided, dilated) views of the padded input side by
  side in channels, [B*Ho*Wo, k*k*C] @ [k*k*C, O] (HWIO flattens in the same (a, b, c) order).
  Its gradients are GEMMs and slices/pads, which XLA:CPU runs well at any size."""
  k = kernel.shape[0]
  b, h, w, c = x.shape
  ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
  wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  views = [jax.lax.slice(xp, (0, i * dilation, j * dilation, 0),
                         (b, i * dilation + stride * (ho - 1) + 1,
                          j * dilation + stride * (wo - 1) + 1, c), (1, stride, stride, 1))
           for i in range(k) for j in range(k)]
  patches = jnp.concatenate(views, axis=-1).reshape(b * ho * wo, k * k * c)
  y = jnp.dot(patches, kernel.reshape(k * k * c, -1))
  return y.reshape(b, ho, wo, -1)


@jax.custom_vjp
def add_bias(y, bias):
  """y + bias (over the last axis), whose bias gradient is a GEMV rather than a reduction.

  XLA:CPU rewrites a large reduction to [C] into a reduce-window over strided windows (its
  tree-reduction pass) that ran 2-3x slower than ones @ g.reshape(-1, C).
  """
  return y + bias


def _add_bias_fwd(y, bias):
  return y + bias, None


def _add_bias_bwd(_, g):
  return g, channel_sum(g)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


@jax.custom_vjp
def scale_and_shift(x, scale, bias):
  """x * scale + bias over the last axis (a norm's affine part), with `add_bias`'s GEMV
  gradients for scale and bias instead of XLA:CPU's reduce-window."""
  return x * scale + bias


def _scale_and_shift_fwd(x, scale, bias):
  return x * scale + bias, (x, scale)


def _scale_and_shift_bwd(res, g):
  x, scale = res
  return g * scale, channel_sum(g * x), channel_sum(g)


scale_and_shift.defvjp(_scale_and_shift_fwd, _scale_and_shift_bwd)


class InstanceNorm(nn.Module):
  """flax's nn.InstanceNorm(use_scale=True, use_bias=True) with the same parameters
  (`scale`, `bias`; the module is named like flax's, so parameter trees do not change) and
  the affine part through `scale_and_shift` (used on CPU, where its gradients are faster)."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    y = nn.InstanceNorm(epsilon=self.epsilon, use_scale=False, use_bias=False)(x)
    return scale_and_shift(y, scale.astype(y.dtype), bias.astype(y.dtype))


def channel_sum(g):
  """Sum over every axis but the last, as a GEMV (see `add_bias`)."""
  c = g.shape[-1]
  return jnp.dot(jnp.ones((g.size // max(c, 1),), g.dtype), g.reshape(-1, c))


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
  auto = impl == "auto"
  if auto and jax.default_backend() == "cpu":
    x = materialize(x)  # see `materialize`: the sub-pixel conv's kernel gradient reads x too
  impl = resolve_conv_transpose_impl(impl, k, stride, padding)
  if impl == "subpixel":
    if k - 2 * padding != stride:
      raise ValueError(f"conv_transpose impl 'subpixel' needs kernel - 2 * padding == stride "
                       f"(exact upsampling), got k={k}, stride={stride}, padding={padding}; "
                       "use impl='xla' or 'auto'")
    taps, reach = _subpixel_taps(k, stride, padding)
    t = 2 * reach + 1
    sub = _subpixel_kernel(kernel, taps)
    inner = (resolve_conv_impl("auto", t, 1, 1, x.shape[1] * x.shape[2], x.shape[3]) if auto
             else "xla")
    if inner == "patches":
      y = _conv_patches(x, sub, 1, reach, 1)
    elif auto:  # on CPU (subpixel is only auto's choice there); x is materialized above
      y = _conv_per_member(1, reach, 1)(x, sub)
    else:
      y = _conv_xla(x, sub, 1, reach, 1)
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
