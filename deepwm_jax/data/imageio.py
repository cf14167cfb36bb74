"""Reading user image folders and writing results, with errors a user can act on.

Everything returned is float32 in [0, 1], HWC or NHWC. 8-bit and 16-bit files both read
(16-bit grayscale keeps its precision; Pillow hands 16-bit RGB over as 8-bit). Results are
written as 8-bit PNG: Pillow cannot write 16-bit RGB, and 8-bit is what a suspect model's
outputs are published as anyway. Writing never replaces a file unless asked to, and checks
everything before the first byte goes to disk, so a refused write leaves the folder as it was.
"""
import os

import numpy as np
from PIL import Image

from deepwm_jax.errors import DeepwmError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# ITU-R BT.601 luma, the weights Pillow's 'L' conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# Exceptions Pillow raises for files it cannot decode (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def is_image_name(name: str) -> bool:
  """True for a visible file whose extension is one we read."""
  return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _pil_to_array(img: Image.Image) -> np.ndarray:
  """Pillow image -> HxWxC float32 with its own channel count (1 or 3), alpha dropped."""
  mode = img.mode
  if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
    return (np.asarray(img).astype(np.float32) / 65535.0)[..., None]
  if mode == "I":  # How Pillow opens 16-bit grayscale PNGs.
    return (np.asarray(img).astype(np.float32) / 65535.0)[..., None]
  if mode == "F":
    return np.asarray(img, np.float32)[..., None]
  if mode in ("1", "L", "LA", "La"):
    return (np.asarray(img.convert("L")).astype(np.float32) / 255.0)[..., None]
  # RGB, RGBA, P, PA, CMYK, YCbCr, ...: RGB is what they mean to a viewer.
  return np.asarray(img.convert("RGB")).astype(np.float32) / 255.0


def load_image(path: str) -> np.ndarray:
  """Reads one image file as HxWxC float32 in [0, 1] with its own channel count (1 or 3)."""
  try:
    with Image.open(path) as img:
      img.load()  # Decode now so a truncated file fails here, not later.
      arr = _pil_to_array(img)
  except _DECODE_ERRORS as e:
    raise DeepwmError(
        f"'{os.path.basename(path)}' in '{os.path.dirname(path) or '.'}' is not a readable image "
        f"({type(e).__name__}); remove it from the folder") from None
  return np.ascontiguousarray(np.clip(arr, 0.0, 1.0), np.float32)


def to_channels(img_HxWxC: np.ndarray, channels: int) -> np.ndarray:
  """Converts 1 <-> 3 channels: gray is replicated, RGB becomes BT.601 luminance."""
  c = img_HxWxC.shape[-1]
  if channels not in (1, 3):
    raise DeepwmError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}; fix the config")
  if c == channels:
    return img_HxWxC.astype(np.float32, copy=True)
  if c == 1:
    return np.repeat(img_HxWxC, 3, axis=-1).astype(np.float32)
  return (img_HxWxC[..., :3] @ _LUMA)[..., None].astype(np.float32)


def resize_image(img_HxWxC: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bicubic resize of the whole image; antialiased when shrinking (Pillow widens the kernel)."""
  if img_HxWxC.shape[:2] == (height, width):
    return img_HxWxC.astype(np.float32, copy=True)
  planes = [
      np.asarray(Image.fromarray(np.ascontiguousarray(img_HxWxC[..., c], np.float32))
                 .resize((width, height), Image.BICUBIC))
      for c in range(img_HxWxC.shape[-1])
  ]
  return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def list_files(path: str, hint: str = "point --input at a folder of images") -> list[str]:
  """Visible regular files in `path`, sorted by name; errors (ending in `hint`) if no folder."""
  if not os.path.exists(path):
    raise DeepwmError(f"folder '{path}' does not exist; {hint}")
  if not os.path.isdir(path):
    raise DeepwmError(f"'{path}' is a file, not a folder; {hint}")
  return sorted(n for n in os.listdir(path)
                if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))


def _channel_word(c: int) -> str:
  return "1 channel (grayscale)" if c == 1 else f"{c} channels (RGB)"


def read_image_dir(path: str, image_size: int | None = None, channels: int | None = None,
                   resize: bool = False, stack: bool = True) -> tuple[np.ndarray, list[str]]:
  """Reads every image in a folder into one NxHxWxC float32 batch, in name order (with
  `stack=False`, a list of HxWxC images that may differ in size).

  Every visible file must be an image: a stray file is reported rather than skipped, so a
  verdict is never silently based on fewer images than the user meant. With `image_size`
  each image must be that size (square) unless `resize`, which resizes the whole image.
  """
  if resize and image_size is None:
    raise ValueError("resize=True needs an image_size to resize to")
  files = list_files(path)
  if not any(is_image_name(n) for n in files):
    others = f", only {len(files)} other files" if files else ""
    raise DeepwmError(f"input folder '{path}' has no images (PNG/JPEG/BMP/TIFF){others}; "
                      "point --input at a folder of images")
  images = []
  for name in files:
    if not is_image_name(name):
      raise DeepwmError(f"'{name}' in '{path}' is not an image (PNG/JPEG/BMP/TIFF); "
                        "remove it from the folder")
    img = load_image(os.path.join(path, name))
    c = img.shape[-1]
    if channels is not None and c != channels:
      raise DeepwmError(
          f"image '{name}' has {_channel_word(c)} but the kit expects {_channel_word(channels)}; "
          f"convert the images to {'grayscale' if channels == 1 else 'RGB'}")
    if channels is None and images and c != images[0].shape[-1]:
      c0 = _channel_word(images[0].shape[-1])
      raise DeepwmError(
          f"images in '{path}' mix channel counts ('{files[0]}' has {c0}, '{name}' has "
          f"{_channel_word(c)}); convert them all to RGB or all to grayscale")
    h, w = img.shape[:2]
    if image_size is not None and (h, w) != (image_size, image_size):
      if not resize:
        raise DeepwmError(f"image '{name}' is {w}x{h} but the kit expects "
                          f"{image_size}x{image_size}; pass --resize to resize inputs")
      img = resize_image(img, image_size, image_size)
    if stack and image_size is None and images and img.shape[:2] != images[0].shape[:2]:
      h0, w0 = images[0].shape[:2]
      raise DeepwmError(f"images in '{path}' differ in size ('{files[0]}' is {w0}x{h0}, "
                        f"'{name}' is {w}x{h}); resize them to one size")
    images.append(img)
  return (np.stack(images).astype(np.float32) if stack else images), files


def check_pixels(x: np.ndarray, what: str) -> None:
  """Raises DeepwmError if `x` has NaN/inf or values outside [0, 1] (tolerance 1e-6)."""
  x = np.asarray(x)
  if x.size == 0:
    return
  if not np.all(np.isfinite(x)):
    raise DeepwmError(f"{what} contain NaN or infinite pixel values; "
                      "check the model or data that produced them")
  lo, hi = float(x.min()), float(x.max())
  if lo < -1e-6 or hi > 1 + 1e-6:
    raise DeepwmError(f"{what} have pixel values in [{lo:.4g}, {hi:.4g}], outside [0, 1]; "
                      "scale images to [0, 1] floats (divide 8-bit values by 255)")


def check_images(images, image_size: int, channels: int, what: str = "images",
                 owner: str = "the kit") -> np.ndarray:
  """`images` as float32 [N >= 1, size, size, channels] in [0, 1], or a one-line DeepwmError
  (what a kit or a watermark checks before it embeds or reads)."""
  x = np.asarray(images, np.float32)
  want = (image_size, image_size, channels)
  if x.ndim != 4 or x.shape[1:] != want or x.shape[0] == 0:
    raise DeepwmError(f"{what} have shape {x.shape} but {owner} expects (N >= 1, {want[0]}, "
                      f"{want[1]}, {want[2]}); resize them or use a kit of that size")
  check_pixels(x, what)
  return x


def png_name(name: str) -> str:
  """`name` with its extension replaced by .png."""
  return os.path.splitext(name)[0] + ".png"


def _to_uint8(img_HxWxC: np.ndarray) -> np.ndarray:
  u8 = np.round(np.clip(img_HxWxC, 0.0, 1.0) * 255.0).astype(np.uint8)
  return u8[..., 0] if u8.shape[-1] == 1 else u8


def write_images(path: str, images_NxHxWxC, names: list[str],
                 overwrite: bool = False) -> list[str]:
  """Writes each image (an NHWC array, or a list of HWC images of any sizes) as an 8-bit PNG
  named like `names` (extension forced to .png).

  All checks (pixels, names, existing files) run before anything is written. Returns the
  paths written.
  """
  images = ([np.asarray(i) for i in images_NxHxWxC] if isinstance(images_NxHxWxC, (list, tuple))
            else np.asarray(images_NxHxWxC))
  shapes = [np.shape(i) for i in images] if isinstance(images, list) else [images.shape[1:]]
  if (isinstance(images, np.ndarray) and images.ndim != 4) or any(
      len(sh) != 3 or sh[-1] not in (1, 3) for sh in shapes):
    raise ValueError(f"expected NxHxWxC images with C in (1, 3), got shapes {shapes[:3]}")
  if len(names) != len(images):
    raise ValueError(f"{len(images)} images but {len(names)} names")
  for img in images:
    check_pixels(img, "images to write")
  targets = [png_name(n) for n in names]
  seen = {}
  for name, target in zip(names, targets):
    # A leading dot would make a hidden file that read_image_dir then skips.
    if os.path.basename(target) != target or target.startswith("."):
      raise DeepwmError(f"output name '{name}' is not a plain visible file name; "
                        "use names without folders or a leading dot")
    if target in seen:
      raise DeepwmError(f"inputs '{seen[target]}' and '{name}' would both be written as "
                        f"'{target}'; rename one of them")
    seen[target] = name
  if os.path.exists(path) and not os.path.isdir(path):
    raise DeepwmError(f"output '{path}' is a file, not a folder; choose a folder for --output")
  if not overwrite:
    for target in targets:
      if os.path.exists(os.path.join(path, target)):
        raise DeepwmError(f"output '{target}' already exists in '{path}'; "
                          "choose an empty --output folder or pass --overwrite")
  os.makedirs(path, exist_ok=True)
  written = []
  for img, target in zip(images, targets):
    out = os.path.join(path, target)
    Image.fromarray(_to_uint8(img)).save(out, format="PNG")
    written.append(out)
  return written
