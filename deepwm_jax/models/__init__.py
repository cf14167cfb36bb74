"""Networks of the method, built by name from the config.

`Generator` turns a body that returns a pre-activation image into an image in [0, 1], in one of
the output modes the method uses: 'sigmoid' (the reference embedder), 'residual'
(x + scale * tanh(h), clipped: docs/method.md found it necessary at small scale), 'tanh01'.
"""
import math
from typing import Any

import dm_pix
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deepwm_jax.errors import DeepwmError
from deepwm_jax.models.discriminator import Discriminator
from deepwm_jax.models.extractor import Extractor
from deepwm_jax.models.resnet import ResnetGenerator
from deepwm_jax.models.unet import UNet
from deepwm_jax.models.cnn import PlainCNN

OUTPUTS = ("sigmoid", "residual", "tanh01", "linear")


class Generator(nn.Module):
  """Image-to-image network x -> y in [0, 1]; `cond` (the watermark) is concatenated to x."""
  body: nn.Module
  output: str = "sigmoid"
  residual_scale: float = 0.1
  use_cond: bool = True   # False: cond is ignored (a translation-equivariant embedder)
  frame: int = 0          # > 0: y = x on the outer `frame` pixels of every image (see below)
  texture_mask: float = 0.0  # > 0: the residual scaled down where x is smooth (texture_mask)
  start: float = 0.0      # > 0: the residual starts as start * (2 cond - 1) (see below)
  psnr_floor: float = 0.0  # > 0: each image's residual scaled down to PSNR >= this (dB)

  @nn.compact
  def __call__(self, x_BxHxWxC, cond_HxWxC=None, train: bool = False):
    inp, cond = x_BxHxWxC, None
    if cond_HxWxC is not None and self.use_cond:
      cond = jnp.broadcast_to(cond_HxWxC, x_BxHxWxC.shape[:3] + cond_HxWxC.shape[-1:])
      inp = jnp.concatenate([x_BxHxWxC, cond.astype(x_BxHxWxC.dtype)], axis=-1)
    h = self.body(inp, train).astype(jnp.float32)
    y = self._output(x_BxHxWxC, h)
    if self.start > 0 and cond is not None:
      # The watermark itself added at a learnt gain that starts at `start`: a keyed H whose
      # last layer starts at zero adds nothing, and H and R begin to embed only when they
      # find a pattern together, at a step the seed (and the machine's float rounding)
      # decides, or never. Here R can read the key from the first step and H shapes it from
      # there (and can fade the gain: a factor that starts at 1, so that adaptive gradient
      # clipping, relative to the parameter's size, lets it move).
      gain = self.param("start_gain", nn.initializers.ones, ())
      y = jnp.clip(y + self.start * gain * (2.0 * cond.astype(y.dtype) - 1.0), 0.0, 1.0)
    if self.frame > 0:
      # No change within `frame` px of the edge: an embedder trained on crops otherwise hides
      # much of its watermark in their frame (where zero padding tells it where it is), which
      # an image read in blended windows, or shifted by a pixel, no longer has.
      mask = frame_mask(x_BxHxWxC.shape[1], x_BxHxWxC.shape[2], self.frame)
      y = x_BxHxWxC + mask * (y - x_BxHxWxC)
    if self.texture_mask > 0:
      y = x_BxHxWxC + texture_mask(x_BxHxWxC, self.texture_mask) * (y - x_BxHxWxC)
    if self.psnr_floor > 0:
      r = y - x_BxHxWxC
      y = x_BxHxWxC + floor_gain(r, self.psnr_floor) * r
    return y

  def _output(self, x, h):
    if self.output == "sigmoid":
      return nn.sigmoid(h)
    if self.output == "residual":
      return jnp.clip(x + self.residual_scale * jnp.tanh(h), 0.0, 1.0)
    if self.output == "tanh01":
      return 0.5 * (jnp.tanh(h) + 1.0)
    if self.output == "linear":
      return h
    raise ValueError(f"unknown output {self.output!r}; use one of {OUTPUTS}")


def with_context(apply_fn, b_NxHxWxC, context: int):
  """apply_fn(b) for an embedder trained with `context` px of content around its crops: b
  mirrored out by `context` px, then the centre kept (identity when context is 0)."""
  if not context:
    return apply_fn(b_NxHxWxC)
  c = context
  padded = jnp.pad(b_NxHxWxC, ((0, 0), (c, c), (c, c), (0, 0)), mode="reflect")
  return apply_fn(padded)[:, c:-c, c:-c]


def frame_mask(height: int, width: int, frame: int) -> jnp.ndarray:
  """[H, W, 1]: 0 within `frame` px of the edge, 1 inside."""
  m = np.zeros((height, width, 1), np.float32)
  m[frame:height - frame, frame:width - frame] = 1.0
  return jnp.asarray(m)


TEXTURE_SIGMA = 2.0  # px: the Gaussian window of the local contrast in texture_mask


def texture_mask(x_BxHxWxC: jnp.ndarray, sigma0: float) -> jnp.ndarray:
  """[B, H, W, 1] in [0, 1]: the local contrast of x (the standard deviation of its luminance
  in a Gaussian window of TEXTURE_SIGMA px) over `sigma0`, capped at 1. Multiplying H's
  residual by it keeps the residual where the image has texture to hide it in and fades it
  over smooth areas, where SSIM (and the eye) notice any change. It is a function of the
  image alone, so an imitator can learn it like the rest of B'."""
  y = jnp.mean(x_BxHxWxC.astype(jnp.float32), axis=-1, keepdims=True)
  # Centred first: E[y^2] - E[y]^2 in float32 around 0.5 leaves ~1e-4 of noise in the std.
  y = y - jnp.mean(y, axis=(1, 2), keepdims=True)
  r = int(math.ceil(3 * TEXTURE_SIGMA))
  moments = jnp.pad(jnp.concatenate([y, y * y], -1), ((0, 0), (r, r), (r, r), (0, 0)),
                    mode="reflect")  # mirrored edges, as the windows' context is
  m = jax.vmap(lambda img: dm_pix.gaussian_blur(img, TEXTURE_SIGMA, 2 * r + 1,
                                                padding="VALID"))(moments)
  var = jnp.maximum(m[..., 1:] - m[..., :1] ** 2, 0.0)
  return jnp.clip(jnp.sqrt(var + 1e-12) / sigma0, 0.0, 1.0)


def floor_gain(residual_BxHxWxC: jnp.ndarray, psnr_floor: float) -> jnp.ndarray:
  """[B, 1, 1, 1] in (0, 1]: the factor that brings each image's residual down to a PSNR of
  `psnr_floor` dB (pixels in [0, 1]) where it is stronger, 1 elsewhere. A hard budget rather
  than a loss: the fidelity band and the reading loss trade against each other, and on a
  photo that is all texture (where the texture mask lets the residual through everywhere) the
  reading won, down to 31-33 dB. Trained through, H learns to spend the budget where R reads
  it best. Windows that tile an image without overlap (keyed kits) keep the floor for the
  whole image: its MSE is the mean of theirs."""
  mse = jnp.mean(jnp.square(residual_BxHxWxC.astype(jnp.float32)), axis=(1, 2, 3), keepdims=True)
  budget = 10.0 ** (-psnr_floor / 10.0)
  # max rather than min(1, .): the other branch's gradient at a zero residual (H at step 0)
  # is infinite, and 0 x inf is a NaN even where min picks 1.
  return jnp.sqrt(budget / jnp.maximum(mse, budget))


def auto_num_downs(num_downs: int, image_size: int) -> int:
  """0 means the reference's log2(size) - 1 levels (7 at 256 px)."""
  return num_downs or int(math.log2(image_size)) - 1


def embedder(cfg) -> Generator:
  """H. 'unet' (the reference): sees the whole image and the watermark, so it can add one
  fixed, position-dependent pattern. 'cnn': a plain CNN of `depth` 3x3 convs that sees neither
  the watermark nor where it is (no down-sampling, no condition): its residual is a function
  of the local content only, which any convolutional imitator can learn to copy."""
  e = cfg.embedder
  if e.get("arch", "unet") == "cnn":
    body = PlainCNN(cfg.data.channels, e.ngf, e.get("depth", 8), cfg.conv_impl, _dtype(cfg),
                    residual=False)
    return Generator(body, e.output, e.residual_scale, use_cond=False,
                     frame=int(e.get("frame", 0)),
                     texture_mask=float(e.get("texture_mask", 0.0)),  # no cond: no start
                     psnr_floor=float(e.get("psnr_floor", 0.0)))
  body = UNet(cfg.data.channels, auto_num_downs(e.num_downs, cfg.data.image_size), e.ngf,
              e.norm, cfg.conv_impl, dtype=_dtype(cfg))
  return Generator(body, e.output, e.residual_scale, frame=int(e.get("frame", 0)),
                   texture_mask=float(e.get("texture_mask", 0.0)),
                   start=float(e.get("start", 0.0)), psnr_floor=float(e.get("psnr_floor", 0.0)))


def embedder_last_layer(cfg) -> str:
  """The name of H's last conv (started at zero for a residual embedder: B' = B at step 0)."""
  e = cfg.embedder
  return f"conv{e.get('depth', 8) - 1}" if e.get("arch", "unet") == "cnn" else "up0"


def extractor(cfg) -> Extractor:
  r = cfg.extractor
  return Extractor(cfg.data.channels, r.channels, tuple(r.dilations), r.output, cfg.conv_impl,
                   dtype=_dtype(cfg))


def discriminator(cfg) -> Discriminator:
  return Discriminator(tuple(cfg.discriminator.widths), cfg.conv_impl, dtype=_dtype(cfg))


def image_model(spec, channels: int, image_size: int, impl: str = "xla", dtype=None) -> nn.Module:
  """A task model or surrogate from its spec (arch, widths, depths, output)."""
  arch = spec.arch
  if arch == "unet":
    body = UNet(channels, auto_num_downs(spec.get("num_downs", 0), image_size), spec.ngf,
                spec.get("norm", "batch"), impl, dtype=dtype)
    return Generator(body, spec.get("output", "residual"), spec.get("residual_scale", 0.5))
  if arch == "resnet":
    return ResnetGenerator(channels, spec.ngf, spec.n_blocks, impl, dtype=dtype)
  if arch == "cnn":
    return PlainCNN(channels, spec.ngf, spec.get("depth", 8), impl, dtype=dtype)
  raise ValueError(f"unknown architecture {arch!r}; use unet, resnet or cnn")


def init_variables(model: nn.Module, key, *example_args, zero_last: str | None = None):
  """Initialises variables with the reference rule; `zero_last` names a layer starting at zero.

  Reference init (docs/method.md): conv kernels N(0, 0.02), BatchNorm scale N(1, 0.02),
  biases 0, InstanceNorm scale 1. Shapes come from `jax.eval_shape` (tracing only) and values
  from NumPy seeded by `key`: flax's jitted `init` compiles a whole forward pass plus a threefry
  kernel per parameter shape, 10-20 s per network on a 2-core CPU, this takes milliseconds.

  A residual embedder whose last layer starts at zero outputs B' = B exactly at step 0, so
  fidelity starts perfect and the watermark grows in (docs/method.md).
  """
  shapes = jax.eval_shape(lambda k: model.init(k, *example_args, train=False), key)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

  def draw(path, leaf):
    names = [str(getattr(p, "key", p)) for p in path]
    name = names[-1]
    if zero_last is not None and zero_last in names:
      value = np.zeros(leaf.shape)
    elif name == "kernel":
      value = rng.normal(0.0, 0.02, leaf.shape)
    elif name == "scale" and any("BatchNorm" in n for n in names):
      value = 1.0 + rng.normal(0.0, 0.02, leaf.shape)
    elif name in ("scale", "var", "start_gain"):
      value = np.ones(leaf.shape)
    elif name in ("bias", "mean"):
      value = np.zeros(leaf.shape)
    else:
      raise ValueError(f"no init rule for parameter {'/'.join(names)}")
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def count_params(variables) -> int:
  return int(sum(x.size for x in jax.tree.leaves(variables.get("params", {}))))


def compute_dtype(name: str) -> Any:
  """The convolutions' dtype for a config's `compute_dtype`: None (float32) or bfloat16."""
  if name not in ("float32", "bfloat16"):
    raise DeepwmError(f"compute_dtype={name!r}; use float32 or bfloat16")
  return jnp.bfloat16 if name == "bfloat16" else None


def _dtype(cfg) -> Any:
  return compute_dtype(cfg.get("compute_dtype", "float32"))
