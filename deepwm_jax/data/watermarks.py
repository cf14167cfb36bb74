"""Watermark images: what the extractor must reveal from watermarked outputs.

Every watermark is dark marks on a white background, HxWxC float32 in [0, 1]; the blank
target the extractor returns for unwatermarked images is all white, so the two differ exactly
where the marks are. Shapes are drawn 8x larger than asked and shrunk (antialiased), so edges
stay clean at 32 px.

Keyed kits (protect.method='keyed') draw no logo: their watermark is a secret key of +-1 signs
drawn as a grid of black and white cells on a mid-grey blank (the functions at the end).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont
import skimage

from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError

_SUPERSAMPLE = 8


def blank_image(size: int, channels: int) -> np.ndarray:
  """The blank target: all ones (white)."""
  return np.ones((size, size, channels), np.float32)


def _finish(canvas: Image.Image, size: int, channels: int) -> np.ndarray:
  """A grayscale PIL canvas -> size x size x channels float32 in [0, 1]."""
  gray = np.asarray(canvas.convert("L"), np.float32)[..., None] / 255.0
  return imageio.to_channels(imageio.resize_image(gray, size, size), channels)


def logo(size: int, channels: int) -> np.ndarray:
  """The default watermark: a bold 'W' inside a ring, about a quarter of the pixels dark.

  Thick strokes (1/12 and 1/20 of the side) survive the 32-px kit size, and the shape has
  structure at every scale, which makes a wrong extraction easy to tell from a right one.
  """
  s = size * _SUPERSAMPLE
  canvas = Image.new("L", (s, s), 255)
  draw = ImageDraw.Draw(canvas)
  ring = s / 20
  m = ring / 2 + s * 0.03
  draw.ellipse((m, m, s - m, s - m), outline=0, width=round(ring))
  # The W: four strokes between five points, with rounded joints.
  pts = [(0.24, 0.30), (0.37, 0.72), (0.50, 0.40), (0.63, 0.72), (0.76, 0.30)]
  draw.line([(x * s, y * s) for x, y in pts], fill=0, width=round(s / 12), joint="curve")
  return _finish(canvas, size, channels)


def _text_canvas(text: str) -> Image.Image:
  """`text` in PIL's default font on white, broken into lines so the block is near square."""
  font = ImageFont.load_default(size=96)
  bold = 6  # A stroke around the glyphs keeps thin letters visible at 32 px.
  words = text.split() or [text]
  best = None
  for k in range(1, len(words) + 1):
    per = -(-len(words) // k)
    lines = "\n".join(" ".join(words[i:i + per]) for i in range(0, len(words), per))
    box = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox(
        (0, 0), lines, font=font, stroke_width=bold)
    w, h = box[2] - box[0], box[3] - box[1]
    aspect = max(w, h) / max(1, min(w, h))
    if best is None or aspect < best[0]:
      best = (aspect, lines, box)
  _, lines, (x0, y0, x1, y1) = best
  side = round(max(x1 - x0, y1 - y0) * 1.1) + 2
  canvas = Image.new("L", (side, side), 255)
  ImageDraw.Draw(canvas).multiline_text(
      ((side - (x1 - x0)) / 2 - x0, (side - (y1 - y0)) / 2 - y0), lines, fill=0, font=font,
      align="center", stroke_width=bold, stroke_fill=0)
  return canvas


def text_image(text: str, size: int, channels: int) -> np.ndarray:
  """`text` rendered dark on white, scaled to fill the square."""
  if not text.strip():
    raise DeepwmError("watermark 'text:' needs some text, e.g. 'text:ACME'; fix the config")
  return _finish(_text_canvas(text), size, channels)


def _file_image(path: str, size: int, channels: int) -> np.ndarray:
  if not os.path.isfile(path):
    raise DeepwmError(f"watermark '{path}' is not 'logo', 'text:...', 'skimage-logo' or an "
                      "existing image file; fix the watermark setting")
  img = imageio.load_image(path)
  return imageio.to_channels(imageio.resize_image(img, size, size), channels)


def _skimage_logo(size: int, channels: int) -> np.ndarray:
  """scikit-image's bundled logo, composited over white (it has a transparent background)."""
  path = os.path.join(os.path.dirname(skimage.__file__), "data", "logo.png")
  try:
    with Image.open(path) as img:
      rgba = np.asarray(img.convert("RGBA"), np.float32) / 255.0
  except (OSError, ValueError) as e:
    raise DeepwmError(f"scikit-image's logo ({path}) cannot be read ({type(e).__name__}); "
                      "use the 'logo' watermark instead") from None
  rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
  return imageio.to_channels(imageio.resize_image(rgb, size, size), channels)


def watermark_image(spec: str, size: int, channels: int) -> np.ndarray:
  """The watermark named by `spec`: 'logo', 'text:SOMETEXT', 'skimage-logo' or an image path."""
  if spec == "logo":
    return logo(size, channels)
  if spec.startswith("text:"):
    return text_image(spec[len("text:"):], size, channels)
  if spec == "skimage-logo":
    return _skimage_logo(size, channels)
  return _file_image(spec, size, channels)


# ---- keyed watermarks (protect.method='keyed'): a key of +-1 signs drawn as a grid of cells

# protect.keyed.symmetry: which cells of the grid carry the same bit.
#   'none'      every cell its own bit;
#   'flips'     a cell and its mirror images left-right and top-bottom share a bit, so the
#               pattern is the same after either flip;
#   'dihedral'  also its mirror images across the diagonals: the same after any flip or
#               rotation by a multiple of 90 degrees.
# An imitator trained on flipped or rotated pairs (an augmentation attack) sees one pattern
# instead of several that would average out. The price is bits: a g x g grid (g even) holds
# g^2, (g/2)^2 or (g/2)(g/2 + 1)/2 of them.
SYMMETRIES = ("none", "flips", "dihedral")


def key_grid(size: int, cell: int) -> int:
  """Cells per side of a `size` px key pattern with `cell` px cells."""
  if cell < 1 or size % cell:
    raise DeepwmError(f"a key cell of {cell} px does not tile {size} px images; choose "
                      f"protect.keyed.cell dividing data.image_size")
  return size // cell


def key_orbits(grid: int, symmetry: str = "none") -> np.ndarray:
  """[grid * grid] (row-major cells) -> the index of the key bit each cell carries."""
  if symmetry not in SYMMETRIES:
    raise DeepwmError(f"key symmetry {symmetry!r}; use one of {', '.join(SYMMETRIES)}")
  i, j = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  images = [(i, j)]
  if symmetry != "none":
    m = grid - 1
    images += [(m - i, j), (i, m - j), (m - i, m - j)]
  if symmetry == "dihedral":
    images += [(b, a) for a, b in images]
  first = np.min([a * grid + b for a, b in images], axis=0).ravel()  # smallest cell of the orbit
  return np.unique(first, return_inverse=True)[1].astype(np.int32)


def key_bits(size: int, cell: int, symmetry: str = "none") -> int:
  """How many key bits a `size` px image holds: one per cell, or per orbit of cells."""
  return int(key_orbits(key_grid(size, cell), symmetry).max()) + 1


def random_key_bits(rng_key, n: int, size: int, cell: int, symmetry: str = "none"):
  """n random keys (jax PRNG key -> [n, bits] of +-1), one per training example."""
  return jax.random.rademacher(rng_key, (n, key_bits(size, cell, symmetry)), dtype=jnp.float32)


def key_pattern(bits, size: int, cell: int, channels: int, symmetry: str = "none"):
  """The image R must draw for a key: bit +1 -> a white cell, -1 -> a black one.

  bits [..., key_bits] -> [..., size, size, channels]; the blank R draws for images without a
  key is mid-grey (`key_blank`), halfway between, so an unkeyed image reads as no bit at all
  rather than as all +1.
  """
  g = key_grid(size, cell)
  b = jnp.asarray(bits, jnp.float32)[..., key_orbits(g, symmetry)]
  grid = b.reshape(b.shape[:-1] + (g, g))
  img = jnp.repeat(jnp.repeat(grid, cell, axis=-2), cell, axis=-1)
  return jnp.repeat((0.5 + 0.5 * img)[..., None], channels, axis=-1)


def key_blank(size: int, channels: int) -> np.ndarray:
  return np.full((size, size, channels), 0.5, np.float32)


def key_readings(r_NxHxWxC, cell: int, symmetry: str = "none"):
  """R's drawing -> one number per key bit: the mean level above mid-grey of the bit's cells
  ([N, bits]).

  R's output is clipped to [0, 1] first, so no single pixel can outvote its cell."""
  r = jnp.clip(jnp.asarray(r_NxHxWxC, jnp.float32), 0.0, 1.0).mean(-1) - 0.5
  n, h, w = r.shape
  gh, gw = key_grid(h, cell), key_grid(w, cell)
  cells = r.reshape(n, gh, cell, gw, cell).mean((2, 4)).reshape(n, gh * gw)
  if symmetry == "none":
    return cells
  if gh != gw:
    raise DeepwmError(f"a symmetric key is read from square windows, got {h}x{w}")
  orbit = key_orbits(gh, symmetry)
  share = np.eye(orbit.max() + 1, dtype=np.float32)[orbit]  # [cells, bits]
  return cells @ jnp.asarray(share / share.sum(0))  # each bit: the mean of its cells


def key_hinge(r_NxHxWxC, w_NxHxWxC, cell: int, symmetry: str = "none", margin: float = 0.1):
  """The keyed reading loss per image ([N]): how far each cell's reading falls short of its
  bit's side of mid-grey by `margin`, averaged over the bits. Only the sign counts in the
  exact test, so R is not asked for the drawing's full amplitude. `w` is one key pattern per
  image, or one for all ([1, H, W, C]); its channels need not be R's."""
  side = jnp.sign(key_readings(w_NxHxWxC, cell, symmetry))
  short = jax.nn.relu(margin - side * key_readings(r_NxHxWxC, cell, symmetry))
  return jnp.mean(short, axis=tuple(range(1, short.ndim)))
