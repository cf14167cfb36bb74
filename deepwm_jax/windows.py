"""Images of any size through networks trained on s x s crops: overlapping windows.

A kit's H and R were trained on s x s crops. An image of any size (at least s on each side) is
cut into s x s windows whose top-left corners lie on a grid of stride s - overlap, the last
window on each axis flush with the image's edge, so every pixel is covered:

  embed   B' = B + sum_k t_k (H(b_k) - b_k) / sum_k t_k   over the windows k covering a pixel,
          where t is a separable taper: 1 in the window's middle and a raised-cosine ramp over
          its outer `overlap` pixels. Each window's residual fades out where the next one fades
          in, so no seam is left, and the output has the input's size. Every B + r_k is in
          [0, 1] and the blend is a convex combination of them, so B' is too. `frame` and
          `context` adapt it to embedders trained to leave a crop's frame alone or to see
          content around the crop (`taper`, `blend`).
  read    R (or the statistic) on windows of the same grid, `every` other one along long axes
          or half of them in a checkerboard if the kit asks: a window at a grid position holds
          mostly its own residual, faded at its edges by its neighbours'.

Windows are cut and processed `batch` at a time, so memory is bounded by the batch and two
image-sized accumulators (a 4096 x 4096 RGB image: about 0.4 GB), not by the image's area.
An image exactly s x s is one window, and processed as before (no blending).
"""
from typing import Callable, Iterator

import numpy as np

from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError


# Windows per network call: on a 2-core CPU 256 windows of 32 px read a 512 px image 1.3x
# faster than 64 (fewer, larger XLA calls), at about 35 MB of activations in R.
BATCH = 256


def default_overlap(size: int) -> int:
  """A quarter of the window: 8 px at 32 px, 64 px at 256 px."""
  return size // 4


def starts(length: int, size: int, stride: int) -> np.ndarray:
  """Window starts along one axis: 0, stride, 2 stride, ..., and length - size last."""
  if length < size:
    raise ValueError(f"length {length} < window {size}")
  n = -(-(length - size) // stride) + 1
  s = np.arange(n) * stride
  s[-1] = length - size
  return np.unique(s)


# Reading every other window along an axis only pays where there are many: an axis of at
# most this many windows is read in full.
THIN_ABOVE = 8


def grid(height: int, width: int, size: int, overlap: int, every: int = 1,
         checker: bool = False) -> list[tuple[int, int]]:
  """Top-left corners (y, x) of the windows covering a height x width image, in raster order.
  `every` > 1 keeps every `every`-th window along an axis of more than THIN_ABOVE windows;
  `checker` keeps, in a grid with more than THIN_ABOVE windows along either axis, the windows
  whose row and column indices add up to an even number (half of them, spread over the whole
  image). Either way a sparser reading grid, still aligned with the embedding's."""
  stride = size - overlap
  axes = []
  for length in (height, width):
    st = starts(length, size, stride)
    axes.append(st[::every] if every > 1 and len(st) > THIN_ABOVE else st)
  thin = checker and max(len(a) for a in axes) > THIN_ABOVE
  return [(int(y), int(x)) for i, y in enumerate(axes[0]) for j, x in enumerate(axes[1])
          if not thin or (i + j) % 2 == 0]


# The weight of a pixel in a window's masked frame: nearly none, so a neighbour's residual
# decides there, but not zero, so a pixel no other window covers keeps its own (none).
FRAME_WEIGHT = 1e-4


def taper(size: int, overlap: int, frame: int = 0) -> np.ndarray:
  """The s x s x 1 blending weight: 1 inside, a sin^2 ramp over the outer `overlap` pixels,
  of which the outermost `frame` (where a framed embedder leaves the image as it is) weigh
  FRAME_WEIGHT. Needs overlap >= 2 frame, so that each frame lies inside a neighbour.

  The ramp never reaches 0, so a pixel that only one window covers (at the image's edge)
  still gets that window's residual once the weights are normalised."""
  if frame and overlap < 2 * frame:
    raise ValueError(f"overlap {overlap} < 2 x frame {frame}: frames would not be covered")
  ramp = np.ones(size, np.float64)
  if overlap > 0:
    n = overlap - frame
    up = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
    up = np.concatenate([np.full(frame, FRAME_WEIGHT), up])
    ramp[:overlap] = up
    ramp[size - overlap:] = up[::-1]
  return np.outer(ramp, ramp)[..., None].astype(np.float32)


def check(images, size: int, channels: int, what: str = "images",
          owner: str = "the kit") -> tuple[list[np.ndarray], bool]:
  """`images` (an NHWC array, or a list of HWC arrays of any sizes) as a list of float32 HxWxC
  in [0, 1], each at least size x size with `channels` channels; and whether they came as one
  array (so results go back as one). One-line DeepwmError otherwise."""
  stacked = isinstance(images, np.ndarray) or not isinstance(images, (list, tuple))
  if stacked:
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[0] == 0:
      raise DeepwmError(f"{what} have shape {x.shape}; pass a batch (N >= 1, height, width, "
                        f"{channels}) or a list of (height, width, {channels}) images")
    items = list(x)
  else:
    if not images:
      raise DeepwmError(f"no {what} given; pass at least one image")
    items = [np.asarray(i, np.float32) for i in images]
  for i, img in enumerate(items):
    if img.ndim != 3 or img.shape[-1] != channels:
      raise DeepwmError(f"{what}[{i}] has shape {img.shape} but {owner} expects (height, width, "
                        f"{channels}); convert it to {'grayscale' if channels == 1 else 'RGB'}")
    h, w = img.shape[:2]
    if h < size or w < size:
      raise DeepwmError(f"{what}[{i}] is {w}x{h} but {owner} needs at least {size}x{size} "
                        f"(its training crop); upscale it or use a kit of a smaller crop")
    imageio.check_pixels(img, what)
  return items, stacked


def restack(items: list[np.ndarray], stacked: bool):
  """Results in the form the images came in (one array, or a list)."""
  return np.stack(items) if stacked else items


def _stream(images: list[np.ndarray], size: int, overlap: int,
            batch: int, every: int = 1,
            checker: bool = False) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int]]]]:
  """(windows [<= batch, s, s, C], their (image, y, x)) over every image's grid, cut lazily."""
  refs = [(i, y, x) for i, img in enumerate(images)
          for y, x in grid(img.shape[0], img.shape[1], size, overlap, every, checker)]
  for k in range(0, len(refs), batch):
    chunk = refs[k:k + batch]
    yield np.stack([images[i][y:y + size, x:x + size] for i, y, x in chunk]), chunk


def count(images: list[np.ndarray], size: int, overlap: int, every: int = 1,
          checker: bool = False) -> list[int]:
  """How many windows each image has (in the grid thinned by `every` or `checker`)."""
  return [len(grid(img.shape[0], img.shape[1], size, overlap, every, checker))
          for img in images]


def blend(fn: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray], size: int,
          overlap: int, batch: int = BATCH, frame: int = 0,
          context: int = 0) -> list[np.ndarray]:
  """fn (s x s windows -> windows) applied to images of any size, residuals blended (module
  docstring; `frame`: see `taper`); each output has its image's size. Images of exactly s x s
  go through fn as they are.

  `context` > 0: fn takes windows with `context` px of the image around them ((s + 2 context)
  px a side, the image mirrored at its edges) and its output's centre is kept: an embedder
  trained that way (config stage1.context) sees at full size what it saw in training."""
  c, big = context, size + 2 * context
  core = (lambda a: a[:, c:c + size, c:c + size]) if c else (lambda a: a)
  src = [np.pad(img, ((c, c), (c, c), (0, 0)), mode="reflect") if c else img for img in images]
  out: list[np.ndarray | None] = [None] * len(images)
  exact = [i for i, img in enumerate(images) if img.shape[:2] == (size, size)]
  for k in range(0, len(exact), batch):
    idx = exact[k:k + batch]
    for i, y in zip(idx, core(np.asarray(fn(np.stack([src[i] for i in idx])), np.float32))):
      out[i] = y
  rest_idx = [i for i in range(len(images)) if out[i] is None]
  if rest_idx:
    t = taper(size, overlap, frame)
    num = [np.zeros(images[i].shape, np.float32) for i in rest_idx]
    den = [np.zeros(images[i].shape[:2] + (1,), np.float32) for i in rest_idx]
    # Windows of the (padded) source on the same grid: same stride, same top-left corners.
    for x, refs in _stream([src[i] for i in rest_idx], big, overlap + 2 * c, batch):
      r = core(np.asarray(fn(x), np.float32)) - core(x)
      for (i, y0, x0), rk in zip(refs, r):
        num[i][y0:y0 + size, x0:x0 + size] += t * rk
        den[i][y0:y0 + size, x0:x0 + size] += t
    blended = iter(np.clip(images[i] + n / d, 0.0, 1.0)
                   for i, n, d in zip(rest_idx, num, den))
    out = [o if o is not None else next(blended) for o in out]
  return out


def apply(fn: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray], size: int,
          overlap: int, batch: int = BATCH, every: int = 1,
          checker: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """fn on every window of every image (of the grid thinned by `every` or `checker`): (fn's outputs
  stacked over windows [K, ...], the image each window came from [K]). An s x s image is one
  window."""
  outs, owners = [], []
  for x, refs in _stream(images, size, overlap, batch, every, checker):
    outs.append(np.asarray(fn(x)))
    owners.extend(i for i, _, _ in refs)
  return np.concatenate(outs), np.asarray(owners, np.int64)


def frame_share(residual_HxWxC: np.ndarray, size: int, overlap: int, margin: int = 2) -> float:
  """The share of |residual| that lies within `margin` pixels of a window's edge, over the
  windows of the grid; compare it with the share of pixels there (`frame_area`). A kit that
  hides its watermark in the frame of its crops scores far above the area."""
  a = np.abs(np.asarray(residual_HxWxC, np.float64)).sum(axis=-1)
  m = _frame_mask(a.shape, size, overlap, margin)
  return float(a[m].sum() / max(a.sum(), 1e-12))


def frame_area(shape_HxW, size: int, overlap: int, margin: int = 2) -> float:
  """The share of pixels within `margin` of a window's edge (what `frame_share` is for a
  residual spread evenly)."""
  return float(_frame_mask(tuple(shape_HxW[:2]), size, overlap, margin).mean())


def _frame_mask(shape_HxW, size, overlap, margin):
  m = np.zeros(shape_HxW, bool)
  for y, x in grid(shape_HxW[0], shape_HxW[1], size, overlap):
    w = np.ones((size, size), bool)
    w[margin:size - margin, margin:size - margin] = False
    m[y:y + size, x:x + size] |= w
  return m
