"""Post-processing removal attacks on a suspect's outputs, before verification.

An attacker who serves a surrogate can post-process every output to wash the watermark out
(docs/zoo.md: the watermark lives mostly in high frequencies). One entry point:

  apply(spec, images, seed=0) -> images

`images` are float NHWC arrays in [0, 1] (1 or 3 channels); the result has the same shape,
float32, clipped to [0, 1]. `spec` is a string of one or more attacks joined by '+', applied
left to right:

  'none'          identity
  'jpeg:Q'        JPEG encode/decode at quality Q in 1..100 (Pillow, its default chroma
                  subsampling for RGB: what a web service does)
  'blur:S'        Gaussian blur with standard deviation S pixels (S > 0; reflect at borders)
  'noise:S'       additive Gaussian noise of standard deviation S (pixel units, range [0, 1]),
                  drawn from `seed`, a new draw per image
  'rescale:F'     downscale by F in (0, 1] (bicubic), then upscale back to the original size
  'crop:F'        keep the centered F in (0, 1] of each side, resize back (bicubic): the
                  geometry changes, which the spatial watermark is known to be sensitive to
  e.g. 'jpeg:50+blur:1.0'

The numbers are "strength" knobs with one direction each (see `STRONGER`), so curves of bit
accuracy or detection against strength can be drawn from `spec(kind, value)` strings. The
spec grammar and these semantics are a stable API.
"""
import io

import numpy as np
from PIL import Image
from scipy import ndimage

from deepwm_jax.zoo import specs
from deepwm_jax.errors import DeepwmError

# kind -> None (no value) or (value type, valid values, validity check, example): specs.py
KINDS = {
    "none": None,
    "jpeg": (int, "a quality in 1..100", lambda v: 1 <= v <= 100, 50),
    "blur": (float, "a sigma in pixels > 0", lambda v: v > 0, 1.0),
    "noise": (float, "a standard deviation >= 0", lambda v: v >= 0, 0.02),
    "rescale": (float, "a factor in (0, 1]", lambda v: 0 < v <= 1, 0.5),
    "crop": (float, "a kept fraction in (0, 1]", lambda v: 0 < v <= 1, 0.8),
}
# Which direction of each kind's value is the stronger attack: +1 larger, -1 smaller.
STRONGER = {"jpeg": -1, "blur": +1, "noise": +1, "rescale": -1, "crop": -1}


def spec(kind: str, value) -> str:
  """The spec string of one attack, e.g. spec('jpeg', 50) == 'jpeg:50'."""
  s = kind if kind == "none" else f"{kind}:{value}"
  parse(s)
  return s


def parse(spec_str: str) -> list[tuple[str, float | int | None]]:
  """'jpeg:50+blur:1.0' -> [('jpeg', 50), ('blur', 1.0)]; raises DeepwmError when invalid."""
  return specs.parse(spec_str, KINDS, "removal attack")


def apply(spec_str: str, images, seed: int = 0) -> np.ndarray:
  """Applies the removal attack(s) in `spec_str` to NHWC images in [0, 1]."""
  steps = parse(spec_str)
  x = np.asarray(images, np.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise DeepwmError(f"removal attacks need NHWC images with 1 or 3 channels, got shape "
                      f"{x.shape}")
  x = np.clip(x, 0.0, 1.0)
  rng = np.random.default_rng(seed)
  for kind, value in steps:
    x = _ATTACKS[kind](x, value, rng)
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
  return x


def _none(x, value, rng):
  del value, rng
  return x


def _jpeg(x, quality, rng):
  del rng
  out = np.empty_like(x)
  for i, img in enumerate(x):
    u8 = np.round(img * 255.0).astype(np.uint8)
    pil = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    dec = np.asarray(Image.open(buf), np.float32) / 255.0
    out[i] = dec.reshape(img.shape)
  return out


def _blur(x, sigma, rng):
  del rng
  return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")


def _noise(x, std, rng):
  return x + rng.normal(0.0, std, x.shape).astype(np.float32)


def _resize(img_HxWxC, size_hw):
  """Bicubic resize of one float image, channel by channel in Pillow's float mode (no 8-bit
  rounding, so a constant image stays exactly constant)."""
  h, w = size_hw
  chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img_HxWxC[..., c]), mode="F")
                      .resize((w, h), Image.BICUBIC)) for c in range(img_HxWxC.shape[-1])]
  return np.stack(chans, axis=-1)


def _rescale(x, factor, rng):
  del rng
  if factor == 1:
    return x
  h, w = x.shape[1:3]
  small = (max(1, round(h * factor)), max(1, round(w * factor)))
  return np.stack([_resize(_resize(img, small), (h, w)) for img in x])


def _crop(x, frac, rng):
  del rng
  if frac == 1:
    return x
  h, w = x.shape[1:3]
  ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
  top, left = (h - ch) // 2, (w - cw) // 2
  return np.stack([_resize(img[top:top + ch, left:left + cw], (h, w)) for img in x])


_ATTACKS = {"none": _none, "jpeg": _jpeg, "blur": _blur, "noise": _noise, "rescale": _rescale,
            "crop": _crop}
