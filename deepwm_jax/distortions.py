"""The distortion layer: what happens to an image after it is served, simulated inside a jitted
training step so that the extractor learns to read through it (HiDDeN's noise layers,
StegaStamp's and MBRS's differentiable JPEG).

A config declares it as a spec string (stage1.distortions, stage2.distortions,
protect.absorb.distortions): entries separated by ',', each a chain of steps joined by '+',
each step `kind`, `kind:value` or `kind:lo:hi` (a range sampled uniformly per example):

  'none, jpeg:50:95, blur:0.3:1.0, noise:0:0.03, rescale:0.5:0.9+jpeg:60:90'

Every example of a batch draws one entry uniformly (repeat 'none' for a larger clean share)
and its own values. Kinds (values; what a served image undergoes):

  none                   untouched
  jpeg:q[:q2]            JPEG at quality q (1-100), simulated: 8x8 DCT of YCbCr with 4:2:0
                         chroma, the codec's quantisation tables, rounding with a
                         straight-through gradient (the identity's)
  jpeg_codec:q[:q2]      the real codec (Pillow) through a host callback; gradient of the
                         identity (straight-through). Exact but slower: it leaves the device
  rescale:f[:f2]         down to f (0 < f <= 1) and back up, antialiased: lost resolution
  crop:f[:f2]            a crop of f of each side at a random offset, resized back to the size
  shift:p[:p2]           a translation by up to p px (subpixel, random direction)
  blur:s[:s2]            Gaussian blur of sigma s px (edges mirrored, dm-pix)
  noise:s[:s2]           additive Gaussian noise of standard deviation s
  jitter:j[:j2]          brightness, contrast and saturation each changed by up to +-j
  flip                   mirrored left-right, top-bottom, both or neither (1/4 each)
  dihedral               one of the 8 flips and quarter turns of a square, uniformly: with
                         a keyed kit whose key is symmetric (protect.keyed.symmetry), R
                         learns to read a turned or mirrored copy as the same key, which is
                         what an imitator trained on flipped or turned pairs serves

Each function maps images [N, H, W, C] in [0, 1] and per-example values [N] to images of the
same shape; `apply` draws entries and values from a PRNG key. Outputs are clipped to [0, 1] with
a straight-through gradient, so a saturated pixel still passes the extractor's gradient on.
"""
import dataclasses
import io
import math

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from deepwm_jax.errors import DeepwmError


@dataclasses.dataclass(frozen=True)
class Step:
  kind: str
  lo: float = 0.0
  hi: float = 0.0


# kind -> None (takes no value) or (description of a valid value, its check, an example)
KINDS = {
    "none": None,
    "jpeg": ("a quality in [1, 100]", lambda v: 1 <= v <= 100, "50:95"),
    "jpeg_codec": ("a quality in [1, 100]", lambda v: 1 <= v <= 100, "50:95"),
    "rescale": ("a factor in (0, 1]", lambda v: 0 < v <= 1, "0.5:0.9"),
    "crop": ("a kept fraction in (0, 1]", lambda v: 0 < v <= 1, "0.6:0.9"),
    "shift": ("pixels in [0, 16]", lambda v: 0 <= v <= 16, "0:2"),
    "blur": ("a sigma in px in [0, 4]", lambda v: 0 <= v <= 4, "0.3:1.0"),
    "noise": ("a standard deviation in [0, 0.5]", lambda v: 0 <= v <= 0.5, "0:0.03"),
    "jitter": ("an amount in [0, 0.5]", lambda v: 0 <= v <= 0.5, "0:0.1"),
    "flip": None,
    "dihedral": None,
}


def parse(spec: str) -> tuple[tuple[Step, ...], ...]:
  """'none, jpeg:50:95+blur:1' -> ((Step('none'),), (Step('jpeg', 50, 95), Step('blur', 1, 1))).
  '' -> () (no distortion layer). Raises a DeepwmError naming the bad part and a valid one."""
  if not isinstance(spec, str):
    raise DeepwmError(f"distortions {spec!r} must be a string such as 'none, jpeg:50:95'")
  if not spec.strip():
    return ()
  entries = []
  for entry in spec.split(","):
    if not entry.strip():
      raise DeepwmError(f"distortions {spec!r} has an empty entry; separate entries by one ','")
    entries.append(tuple(_step(part.strip(), spec) for part in entry.split("+")))
  return tuple(entries)


def _step(part: str, spec: str) -> Step:
  kind, *raw = part.split(":")
  kind = kind.strip().lower()
  if kind not in KINDS:
    raise DeepwmError(f"unknown distortion {kind!r} in {spec!r}; use one of {', '.join(KINDS)}, "
                      f"e.g. 'none, jpeg:50:95, blur:0.3:1'")
  if KINDS[kind] is None:
    if raw:
      raise DeepwmError(f"distortion {kind!r} takes no value (got {part!r} in {spec!r})")
    return Step(kind)
  what, ok, example = KINDS[kind]
  try:
    values = [float(v) for v in raw]
  except ValueError:
    values = []
  if len(values) not in (1, 2) or not all(math.isfinite(v) and ok(v) for v in values) or (
      len(values) == 2 and values[0] > values[1]):
    raise DeepwmError(f"distortion {part!r} in {spec!r} needs {what}, or a range lo:hi with "
                      f"lo <= hi, e.g. {kind}:{example}")
  return Step(kind, values[0], values[-1])


def straight_through(x, y):
  """y in the forward pass, the identity's gradient in the backward pass."""
  return x + jax.lax.stop_gradient(y - x)


def clip01(x):
  return straight_through(x, jnp.clip(x, 0.0, 1.0))


# --- JPEG, simulated -------------------------------------------------------------------------

# The tables of the JPEG standard (Annex K), which libjpeg scales by quality.
_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    np.float32).reshape(8, 8)
_CHROMA = np.full((8, 8), 99.0, np.float32)
_CHROMA[:4, :4] = np.array([17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 99, 47, 66, 99, 99],
                           np.float32).reshape(4, 4)


def _dct_matrix() -> np.ndarray:
  k = np.arange(8)
  d = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
  d[0] /= np.sqrt(2)
  return d.astype(np.float32)  # orthonormal: D @ D.T = I


_DCT = _dct_matrix()


def quant_tables(quality):
  """libjpeg's tables at `quality` [N] -> ([N, 8, 8] luma, [N, 8, 8] chroma), baseline (<= 255)."""
  q = jnp.clip(jnp.asarray(quality, jnp.float32), 1.0, 100.0)
  scale = jnp.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]
  def table(t):
    return jnp.clip(jnp.floor((t * scale + 50.0) / 100.0), 1.0, 255.0)
  return table(jnp.asarray(_LUMA)), table(jnp.asarray(_CHROMA))


def _blocks_quantised(x_NxHxW, table_Nx8x8):
  """8x8 DCT, quantise (rounding with a straight-through gradient), dequantise, inverse DCT."""
  n, h, w = x_NxHxW.shape
  d = jnp.asarray(_DCT)
  b = x_NxHxW.reshape(n, h // 8, 8, w // 8, 8)
  c = jnp.einsum("ij,nyjxk,lk->nyixl", d, b, d)
  t = table_Nx8x8[:, None, :, None, :]
  c = straight_through(c / t, jnp.round(c / t)) * t
  return jnp.einsum("ji,nyjxk,kl->nyixl", d, c, d).reshape(n, h, w)


def _ycbcr(x):
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  y = 0.299 * r + 0.587 * g + 0.114 * b
  return y, 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b, 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b


def _rgb(y, cb, cr):
  cb, cr = cb - 128.0, cr - 128.0
  return jnp.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)


def jpeg(x, quality):
  """Simulated JPEG at per-example `quality` [N]; any H, W (edge-padded to a multiple of 16,
  the 4:2:0 macroblock)."""
  n, h, w, c = x.shape
  ph, pw = -h % 16, -w % 16
  v = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge") * 255.0
  luma_t, chroma_t = quant_tables(quality)
  if c == 1:
    out = _blocks_quantised(v[..., 0] - 128.0, luma_t)[..., None] + 128.0
  else:
    y, cb, cr = _ycbcr(v)
    y = _blocks_quantised(y - 128.0, luma_t) + 128.0
    def chroma(ch):  # 4:2:0: averaged over 2x2, coded at half size, repeated back
      hh, ww = ch.shape[1] // 2, ch.shape[2] // 2
      small = ch.reshape(n, hh, 2, ww, 2).mean((2, 4))
      small = _blocks_quantised(small - 128.0, chroma_t) + 128.0
      return jnp.repeat(jnp.repeat(small, 2, 1), 2, 2)
    out = _rgb(y, chroma(cb), chroma(cr))
  return out[:, :h, :w] / 255.0


def jpeg_codec(x, quality):
  """The real codec (Pillow, 4:2:0 as in its default) through a host callback; the gradient
  is the identity's."""
  def host(images, q):
    images, q = np.asarray(images), np.asarray(q)
    out = np.empty_like(images)
    for i, img in enumerate(images):
      u8 = np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)
      buf = io.BytesIO()
      Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(
          buf, format="JPEG", quality=int(round(float(q[i]))))
      buf.seek(0)
      out[i] = (np.asarray(Image.open(buf), np.float32) / 255.0).reshape(img.shape)
    return out
  y = jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, jnp.float32),
                        jax.lax.stop_gradient(x.astype(jnp.float32)), quality)
  return straight_through(x, y)


# --- geometry and filters ------------------------------------------------------------------------

def _warp(img_HxWxC, scale, translation):
  """One image resampled: output pixel (y, x) <- input (y - t) / scale, edges mirrored (padded
  by half the image's side first, so no black frame enters within that reach)."""
  h, w, c = img_HxWxC.shape
  pad = max(h, w) // 2
  big = jnp.pad(img_HxWxC, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
  t = translation + pad * (1.0 - scale)  # the padded frame's origin maps with the scale too
  out = jax.image.scale_and_translate(big, big.shape, (0, 1), jnp.array([scale, scale]), t,
                                      "cubic", antialias=True)
  return jax.lax.dynamic_slice(out, (pad, pad, 0), (h, w, c))


def rescale(x, factor):
  """Down to `factor` [N] and back up to the size: the detail the small copy lost is gone."""
  def one(img, f):
    small = jax.image.scale_and_translate(img, img.shape, (0, 1), jnp.array([f, f]),
                                          jnp.zeros(2), "cubic", antialias=True)
    # The small copy sits in the top-left f*h x f*w; scaling by 1/f reads only that part.
    return jax.image.scale_and_translate(small, img.shape, (0, 1), jnp.array([1 / f, 1 / f]),
                                         jnp.zeros(2), "cubic", antialias=True)
  return jax.vmap(one)(x, factor)


def crop(x, fraction, u):
  """A crop of `fraction` [N] of each side at the offset `u` [N, 2] in [0, 1] of the free
  room, resized back to the full size."""
  def one(img, f, uu):
    s = 1.0 / f
    offset = uu * (1.0 - f) * jnp.array(img.shape[:2], jnp.float32)
    return _warp(img, s, -offset * s)
  return jax.vmap(one)(x, fraction, u)


def shift(x, pixels, u):
  """A translation by `pixels` [N] in the direction of the angle 2 pi u [N]."""
  t = pixels[:, None] * jnp.stack([jnp.sin(2 * jnp.pi * u), jnp.cos(2 * jnp.pi * u)], -1)
  return jax.vmap(lambda img, tt: _warp(img, 1.0, tt))(x, t)


def blur(x, sigma, max_sigma: float):
  """Gaussian blur of per-example `sigma` [N] (dm-pix), edges mirrored; a kernel of
  6 max_sigma + 1 px covers every sigma the spec can draw."""
  radius = max(1, int(math.ceil(3 * max_sigma)))
  padded = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="symmetric")
  sig = jnp.maximum(sigma, 1e-3)  # sigma 0: a delta kernel
  return jax.vmap(lambda img, s: dm_pix.gaussian_blur(img, s, 2 * radius + 1,
                                                      padding="VALID"))(padded, sig)


def noise(x, std, key):
  return x + std[:, None, None, None] * jax.random.normal(key, x.shape, x.dtype)


def jitter(x, amount, u):
  """Brightness, contrast and saturation each moved by up to +-amount [N] (u [N, 3] in
  [0, 1] picks where in the range)."""
  d = amount[:, None] * (2.0 * u - 1.0)
  def one(img, dd):
    img = dm_pix.adjust_brightness(img, dd[0])
    img = dm_pix.adjust_contrast(img, 1.0 + dd[1])
    if img.shape[-1] == 3:
      img = dm_pix.adjust_saturation(img, 1.0 + dd[2])
    return img
  return jax.vmap(one)(x, d)


def flip(x, u):
  """Per example, mirrored left-right where u[:, 0] < 0.5 and top-bottom where u[:, 1] < 0.5."""
  x = jnp.where((u[:, 0] < 0.5)[:, None, None, None], x[:, :, ::-1], x)
  return jnp.where((u[:, 1] < 0.5)[:, None, None, None], x[:, ::-1], x)


def dihedral(x, u):
  """Per example, `flip` then a transpose where u[:, 2] < 0.5: the 8 symmetries of a square,
  equally likely for u uniform."""
  if x.shape[1] != x.shape[2]:
    raise DeepwmError(f"the dihedral distortion turns square images only, got "
                      f"{x.shape[1]}x{x.shape[2]}")
  x = flip(x, u)
  return jnp.where((u[:, 2] < 0.5)[:, None, None, None], jnp.swapaxes(x, 1, 2), x)


def _run_step(step: Step, x, key):
  n = x.shape[0]
  kv, ku, kn = jax.random.split(key, 3)
  value = jax.random.uniform(kv, (n,), minval=step.lo, maxval=step.hi)
  if step.kind == "none":
    return x
  if step.kind == "jpeg":
    return jpeg(x, value)
  if step.kind == "jpeg_codec":
    return jpeg_codec(x, value)
  if step.kind == "rescale":
    return rescale(x, value)
  if step.kind == "crop":
    return crop(x, value, jax.random.uniform(ku, (n, 2)))
  if step.kind == "shift":
    return shift(x, value, jax.random.uniform(ku, (n,)))
  if step.kind == "blur":
    return blur(x, value, step.hi)
  if step.kind == "noise":
    return noise(x, value, kn)
  if step.kind == "jitter":
    return jitter(x, value, jax.random.uniform(ku, (n, 3)))
  if step.kind == "flip":
    return flip(x, jax.random.uniform(ku, (n, 2)))
  if step.kind == "dihedral":
    return dihedral(x, jax.random.uniform(ku, (n, 3)))
  raise AssertionError(step.kind)  # parse() admits only KINDS


def apply_entry(entry: tuple[Step, ...], x, key):
  """One chain of steps on every example, each step clipped back to [0, 1]."""
  for i, step in enumerate(entry):
    x = clip01(_run_step(step, x, jax.random.fold_in(key, i)))
  return x


def apply(spec_or_entries, x, key, share=1.0, with_pick=False):
  """Every example of x [N, H, W, C] through one entry of the spec drawn at random (uniform),
  or, with probability 1 - `share` (a traced scalar is fine), left as it is. All entries run
  on the whole batch and each example keeps its own: at the crop sizes the barrier trains
  on, the distortions cost little beside the networks. With `with_pick`, also returns which
  entry each example drew ([N] int, -1 for one left as it is)."""
  entries = parse(spec_or_entries) if isinstance(spec_or_entries, str) else spec_or_entries
  if not entries:
    return (x, jnp.full((x.shape[0],), -1, jnp.int32)) if with_pick else x
  n = x.shape[0]
  pick = jax.random.randint(jax.random.fold_in(key, 10_000), (n,), 0, len(entries))
  pick = jnp.where(jax.random.uniform(jax.random.fold_in(key, 10_001), (n,)) < share, pick, -1)
  out = x
  for i, entry in enumerate(entries):
    y = apply_entry(entry, x, jax.random.fold_in(key, i))
    out = jnp.where((pick == i)[:, None, None, None], y, out)
  return (out, pick) if with_pick else out


def hardest_entry_mean(loss_N, pick_N, n_entries: int):
  """The largest mean of `loss_N` over the examples that drew one entry (pick -1, left as
  they are, counts as one more), among the entries drawn at all: a loss that the hardest
  distortion cannot be traded away in."""
  groups = pick_N[:, None] == jnp.arange(-1, n_entries)[None, :]        # [N, entries + 1]
  counts = groups.sum(0)
  means = (groups * loss_N[:, None]).sum(0) / jnp.maximum(counts, 1)
  return jnp.max(jnp.where(counts > 0, means, -jnp.inf))


def ramp_share(step, steps: int, ramp=(0.0, 0.0)):
  """The share of distorted examples at `step`: 0 before the fraction ramp[0] of the stage's
  steps, rising linearly to 1 at ramp[1] ((0, 0): all from the start). H first learns a
  watermark R can read, then makes it survive: distorted from the first step, a keyed
  stage 1 either settled at 20 dB or, with its fidelity held, never learned to embed."""
  start, end = (float(r) for r in ramp)
  if end <= 0:
    return 1.0
  t = (step.astype(jnp.float32) - start * steps) / max(1.0, (end - start) * steps)
  return jnp.clip(t, 0.0, 1.0)
