"""Image sources (builtin images, user folders) and random patches cut from them.

The builtin source is the natural images shipped as files inside the scikit-image wheel, read
straight from the installed package (never through `skimage.data`'s downloader), so it works
offline. They are split by image, so no scene is in two splits:

  protect  astronaut, coffee, motorcycle_left, motorcycle_right (one stereo scene, kept
           together), coins, brick, immunohistochemistry, page
           The owner trains the task model and the watermark networks on these.
  attack   chelsea, camera, grass, hubble_deep_field, cell, text
           The attacker's data for surrogates: disjoint from protect, as the method requires.
  val      rocket, moon, gravel, retina
           Held out for evaluation.

Each split mixes photos of people/animals/objects, a texture, a scientific image and (for
protect and attack) printed text. Synthetic images (chessboard, phantom, horse silhouette,
colour chart) and the motion-blurred clock are left out: they are not clean natural images.

A user folder is dealt into the splits by position in name order (data/splits.py).

A paired source 'pairs:INPUTS:OUTPUTS' is two folders holding the same file names: the inputs
a model was given and its outputs, collected offline from the owner's API. Each pair is one
image of 2C channels (inputs, then outputs), so that every crop, flip and resize below cuts
both at the same place; data/pairs.py splits them back into (A, B).
"""
import functools
import os

import numpy as np
import skimage

from deepwm_jax.data import imageio, splits
from deepwm_jax.errors import DeepwmError

# skimage.data function name -> file inside skimage/data.
_BUILTIN_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "coins": "coins.png",
    "brick": "brick.png",
    "immunohistochemistry": "ihc.png",
    "page": "page.png",
    "chelsea": "chelsea.png",
    "camera": "camera.png",
    "grass": "grass.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "cell": "cell.png",
    "text": "text.png",
    "rocket": "rocket.jpg",
    "moon": "moon.png",
    "gravel": "gravel.png",
    "retina": "retina.jpg",
}

BUILTIN_SPLITS: dict[str, tuple[str, ...]] = {
    "protect": ("astronaut", "coffee", "motorcycle_left", "motorcycle_right", "coins", "brick",
                "immunohistochemistry", "page"),
    "attack": ("chelsea", "camera", "grass", "hubble_deep_field", "cell", "text"),
    "val": ("rocket", "moon", "gravel", "retina"),
}



@functools.lru_cache(maxsize=None)
def _builtin_image(name: str) -> np.ndarray:
  """One builtin image with its own channels, cached read-only (decoding a JPEG is not free)."""
  path = os.path.join(os.path.dirname(skimage.__file__), "data", _BUILTIN_FILES[name])
  if not os.path.isfile(path):
    raise DeepwmError(f"builtin image '{name}' is missing from scikit-image ({path}); "
                      "reinstall scikit-image or use a folder source")
  img = imageio.load_image(path)
  img.flags.writeable = False
  return img


def builtin_images(split: str, channels: int) -> list[np.ndarray]:
  """The builtin images of one split as HxWxC float32 in [0, 1] with `channels` channels."""
  splits.check_split(split)
  return [imageio.to_channels(_builtin_image(n), channels) for n in BUILTIN_SPLITS[split]]


def folder_images(path: str, channels: int) -> list[np.ndarray]:
  """Every image file in `path` (sorted by name), converted to `channels`; sizes may differ."""
  hint = "point the data source at a folder of images"
  names = [n for n in imageio.list_files(path, hint) if imageio.is_image_name(n)]
  if not names:
    raise DeepwmError(f"data folder '{path}' has no images (PNG/JPEG/BMP/TIFF); {hint}")
  return [imageio.to_channels(imageio.load_image(os.path.join(path, n)), channels)
          for n in names]


PAIRS_PREFIX = "pairs:"


def is_paired(source: str) -> bool:
  return source.startswith(PAIRS_PREFIX)


def paired_folder_images(inputs: str, outputs: str, channels: int) -> list[np.ndarray]:
  """Input/output pairs of two folders with the same file names (sorted), each as one
  HxWx2C image: the input's channels, then the output's."""
  hint = "give two folders with the same file names: the model's inputs and its outputs"
  names = {}
  for role, path in (("inputs", inputs), ("outputs", outputs)):
    names[role] = [n for n in imageio.list_files(path, hint) if imageio.is_image_name(n)]
    if not names[role]:
      raise DeepwmError(f"{role} folder '{path}' has no images (PNG/JPEG/BMP/TIFF); {hint}")
  stem = lambda n: os.path.splitext(n)[0]  # outputs saved as PNG pair with JPEG inputs
  a, b = {stem(n): n for n in names["inputs"]}, {stem(n): n for n in names["outputs"]}
  unmatched = sorted(set(a) ^ set(b))
  if unmatched:
    n = unmatched[0]
    where = f"'{inputs}'" if n in a else f"'{outputs}'"
    raise DeepwmError(f"'{a.get(n) or b.get(n)}' is only in {where} ({len(unmatched)} names "
                      f"unmatched); {hint}")
  out = []
  for k in sorted(a):
    x = imageio.to_channels(imageio.load_image(os.path.join(inputs, a[k])), channels)
    y = imageio.to_channels(imageio.load_image(os.path.join(outputs, b[k])), channels)
    if x.shape != y.shape:
      raise DeepwmError(f"input '{a[k]}' is {x.shape[1]}x{x.shape[0]} but its output "
                        f"'{b[k]}' is {y.shape[1]}x{y.shape[0]}; pairs must have one size")
    out.append(np.concatenate([x, y], axis=-1))
  return out


def load_split(source: str, split: str, channels: int, tfds_dir: str = "",
               tfds_max_images: int = 0) -> list[np.ndarray]:
  """Images of `split` from `source`: 'builtin', 'folder:PATH', an existing folder path, or
  'tfds:NAME[/CONFIG][:SPLIT]' (a prepared tfds dataset in `tfds_dir`, see tfds_source)."""
  splits.check_split(split)
  if source == "builtin":
    return builtin_images(split, channels)
  if source.startswith("tfds:"):
    from deepwm_jax.data import tfds_source  # tensorflow_datasets loads only when used
    return tfds_source.split_images(source, split, channels, tfds_dir, tfds_max_images)
  if source.startswith("folder:"):
    return splits.split_images(folder_images(source[len("folder:"):], channels), split)
  if is_paired(source):
    inputs, sep, outputs = source[len(PAIRS_PREFIX):].partition(":")
    if not sep or not inputs or not outputs:
      raise DeepwmError(f"data source '{source}': use pairs:INPUTS_DIR:OUTPUTS_DIR")
    return splits.split_images(paired_folder_images(inputs, outputs, channels), split)
  if os.path.isdir(source):
    return splits.split_images(folder_images(source, channels), split)
  raise DeepwmError(f"unknown data source '{source}'; use 'builtin', 'folder:PATH', "
                    "'pairs:INPUTS_DIR:OUTPUTS_DIR', 'tfds:NAME[/CONFIG][:SPLIT]' or the path "
                    "of an existing folder of images")


def _prepare(img_HxWxC: np.ndarray, size: int, scale: float) -> np.ndarray:
  """Downscales by `scale`, then upscales if needed so both sides are at least `size`."""
  h, w = img_HxWxC.shape[:2]
  s = max(scale, size / h, size / w)
  if s == 1.0:
    return img_HxWxC
  return imageio.resize_image(img_HxWxC, max(size, round(h * s)), max(size, round(w * s)))


def make_patches(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator,
                 flip: bool = True, scale: float = 1.0) -> np.ndarray:
  """`n` random size x size crops, NxHxWxC float32; images picked with probability ~ area.

  `scale` < 1 first shrinks every image (antialiased): a 64-px crop of a full-resolution photo
  is nearly flat, a crop of a 4x smaller copy holds edges and texture to learn from.
  """
  if not images:
    raise DeepwmError("no images to cut patches from; check the data source")
  if scale <= 0:
    raise DeepwmError(f"patch scale must be > 0, got {scale}; fix the config")
  prepared = [_prepare(img, size, scale) for img in images]
  areas = np.array([(p.shape[0] - size + 1) * (p.shape[1] - size + 1) for p in prepared], float)
  which = rng.choice(len(prepared), size=n, p=areas / areas.sum())
  u = rng.random((n, 2))
  flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
  out_NxHxWxC = np.empty((n, size, size, prepared[0].shape[-1]), np.float32)
  for i, (k, (uy, ux)) in enumerate(zip(which, u)):
    img = prepared[k]
    y = int(uy * (img.shape[0] - size + 1))
    x = int(ux * (img.shape[1] - size + 1))
    out_NxHxWxC[i] = img[y:y + size, x:x + size]
  out_NxHxWxC[flips] = out_NxHxWxC[flips, :, ::-1]
  return out_NxHxWxC
