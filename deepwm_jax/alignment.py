"""Reading a keyed watermark whatever happened to the image's geometry: an exhaustive search
over alignments, with the exact test kept by counting every alignment tried.

A keyed kit tiles its key's cells with the period of its crop (s px, g x g cells of c px). A
served image may have been shifted or cropped at any offset (the grid's phase is lost) or
rescaled and kept at its new size (the period is lost). `search` reads the image under every
hypothesis and keeps the best:

  scale f   the image is resized by 1/f first ('scale': 65 factors from 0.5 to 2, a ratio of
            2^(1/32), of which 17 are read, then the 6 around the best; 'shift': f = 1);
  offset    windows start at (ry, rx) in [0, c)^2 px (c^2 reads), and the key is compared
            with each of its g^2 cyclic rolls: a window that starts q cells into the period
            reads the key rolled by q (no extra read).

Each hypothesis's signed-rank sum W has the exact null distribution of secret_key.py for an
image without the key (a roll of a uniform key is uniform), so the best p-value times the
number of hypotheses (Bonferroni) is still a bound on the false-claim probability, whatever the
suspect. The price is power: 32 px kits with 64-bit keys count 1024 hypotheses for 'shift' and
66560 for 'scale', and need W >= 1864 or 1930 of 2080 at alpha = 1e-6 (1718 without a search):
at least 44 or 48 bits right, with the wrong ones the weakest, and 61 or 62 whatever they are.

A set of images is searched with one hypothesis for the whole set (their readings summed per
hypothesis), as one pipeline would crop or rescale all of them alike; each image's own p-value
is searched on its own.
"""
import sys
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from deepwm_jax import secret_key
from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError

MODES = ("none", "shift", "scale")
# 'scale' counts 65 factors from 0.5 to 2 (a ratio of 2^(1/32): at most 1.1% from any scale)
# and reads every fourth (17) first, then the three on each side of the best of those.
FINE_SCALES = tuple(float(f) for f in 2.0 ** (np.arange(-32, 33) / 32))
COARSE_EVERY = 4
SCALES = FINE_SCALES[::COARSE_EVERY]  # 0.5 ... 2, 1 included


def mode(search: str) -> str:
  m = "none" if search is None else str(search).lower()
  if m not in MODES:
    raise DeepwmError(f"search {search!r} is not one of {', '.join(MODES)}: 'shift' for "
                      "images shifted or cropped at any offset, 'scale' also for rescaled ones")
  return m


def scales(search: str) -> tuple[float, ...]:
  """Every factor the search may try (the Bonferroni count), whether or not it reads it."""
  return FINE_SCALES if mode(search) == "scale" else (1.0,)


def n_hypotheses(search: str, size: int, cell: int) -> int:
  if mode(search) == "none":
    return 1
  return len(scales(search)) * cell * cell * (size // cell) ** 2


def key_rolls(key, size: int, cell: int) -> np.ndarray:
  """[g*g, bits]: the key as read by windows that start (qy, qx) cells into its period."""
  g = size // cell
  grid = np.asarray(key).reshape(g, g)
  return np.stack([np.roll(grid, (-qy, -qx), (0, 1)).reshape(-1)
                   for qy in range(g) for qx in range(g)])


def _views(img: np.ndarray, size: int, cell: int, factors) -> list[tuple[int, int, np.ndarray]]:
  """(scale index, offset index, view) for every view with at least one whole window; a view
  keeps only whole windows, so every window sits on one grid."""
  out = []
  h, w = img.shape[:2]
  for j, f in enumerate(factors):
    im = img if f == 1.0 else imageio.resize_image(img, round(h / f), round(w / f))
    for o in range(cell * cell):
      ry, rx = divmod(o, cell)
      hh, ww = (im.shape[0] - ry) // size * size, (im.shape[1] - rx) // size * size
      if hh and ww:
        out.append((j, o, im[ry:ry + hh, rx:rx + ww]))
  return out


def _readings(read, images, size, cell, factors, bits, bar=None) -> np.ndarray:
  """[N, len(factors), cell^2, bits]: each image read at every factor and offset (zeros, all
  mismatches, where a view has no whole window). One read per factor, ticking `bar`."""
  v = np.zeros((len(images), len(factors), cell * cell, bits))
  for j, f in enumerate(factors):
    views, where = [], []
    for i, img in enumerate(images):
      for _, o, view in _views(img, size, cell, [f]):
        views.append(view)
        where.append((i, o))
    if views:
      for (i, o), ri in zip(where, read(views)):
        v[i, j, o] = ri
    if bar is not None:
      bar.update(1)
  return v


def search(read: Callable[[list[np.ndarray]], np.ndarray], images: list[np.ndarray], key,
           size: int, cell: int, alpha: float, search_mode: str) -> secret_key.KeyVerdict:
  """The exact verdict over every alignment. `read(views)` -> readings [len(views), bits] of
  views whose sides are multiples of `size` (every window on the grid)."""
  key = secret_key.check_key(key)
  n_h = n_hypotheses(search_mode, size, cell)
  rolls = key_rolls(key, size, cell)                      # [R, bits]

  def best(v_SxOxBits):
    """(W, matching bits, (scale, offset, roll)) of the hypothesis with the largest rank sum."""
    w = secret_key.rank_sum(v_SxOxBits, rolls)            # [S, O, R]
    # Ties go to the strongest agreement: a grid a pixel off a key cell's edge often reads
    # every bit too, but with weaker readings than the grid on the cells. (The p-value only
    # counts W, so the choice changes where the key is reported, not the verdict.)
    margin = (np.where(np.isfinite(v_SxOxBits), v_SxOxBits, 0.0)[..., None, :] * rolls).sum(-1)
    j, o, q = np.unravel_index(int(np.where(w == w.max(), margin, -np.inf).argmax()), w.shape)
    return float(w.max()), int(secret_key.matches(v_SxOxBits[j, o], rolls[q])), (j, o, q)

  if mode(search_mode) == "scale":
    # Coarse to fine: the hypotheses counted are all 65 factors, of which these are a subset
    # chosen from the data, so the corrected p-value is still a bound.
    coarse = list(range(0, len(FINE_SCALES), COARSE_EVERY))
    # A progress bar on a terminal: each factor reads every image again (seconds to minutes).
    bar = tqdm(total=len(coarse) + 2 * (COARSE_EVERY - 1), desc="scale search", unit="scale",
               disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)
    v = _readings(read, images, size, cell, [FINE_SCALES[i] for i in coarse], key.size, bar)
    top = coarse[best(v.sum(0))[2][0]]
    fine = [i for i in range(top - COARSE_EVERY + 1, top + COARSE_EVERY)
            if 0 <= i < len(FINE_SCALES) and i % COARSE_EVERY]
    v = np.concatenate([v, _readings(read, images, size, cell, [FINE_SCALES[i] for i in fine],
                                     key.size, bar)], 1)
    bar.close()
    factors = [FINE_SCALES[i] for i in coarse + fine]
  else:
    factors = [1.0]
    v = _readings(read, images, size, cell, factors, key.size)

  per = [best(vi) for vi in v]
  w_set, m_set, (j, o, q) = best(v.sum(0))
  ry, rx = divmod(int(o), cell)
  qy, qx = divmod(int(q), size // cell)
  return secret_key.verdict(
      key.size, [b[0] for b in per], [b[1] for b in per], w_set, m_set, alpha, n_h,
      # Where the set's key grid was found: the scale undone, and the grid's offset in the
      # (rescaled) image, as the crop that would have moved it there.
      alignment={"search": mode(search_mode), "scale": factors[j],
                 "offset": [(cell * qy - ry) % size, (cell * qx - rx) % size]})
