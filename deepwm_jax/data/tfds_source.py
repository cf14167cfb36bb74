"""Prepared tensorflow-datasets (tfds) datasets as numpy images, without TensorFlow.

A source string `tfds:NAME[/CONFIG][:SPLIT]` (e.g. `tfds:voc/2012:train`, `tfds:div2k`,
`tfds:cifar10`) names a dataset that was prepared beforehand, usually on another machine that
has TensorFlow, in tfds's array_record format, and copied into a data_dir: the config's
`tfds_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (docs/data.md says how). Nothing
is downloaded or built here.

Records are read through `tfds.data_source` (random access into array_record files; images are
decoded with Pillow or OpenCV). The prepared version is looked up on disk and named explicitly
(`NAME/CONFIG:VERSION`), which makes tfds take the features from the dataset's own files instead
of constructing the builder from its code: some builders (coco) import TensorFlow, and a
prepared version may differ from the one the installed code would pick.
"""
import dataclasses
import json
import os
import re

import numpy as np
import tqdm

from deepwm_jax.data import imageio, splits
from deepwm_jax.errors import DeepwmError

PREFIX = "tfds:"
HOW_TO = "docs/data.md"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_NAME = re.compile(r"^[a-z0-9_]+(/[A-Za-z0-9_.=,-]+)?$")


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str          # e.g. 'voc'
  config: str        # e.g. '2012'; '' for the default (or only) config
  split: str         # a tfds split, slices allowed: 'train', 'validation[:50%]'

  @property
  def dataset(self) -> str:
    return f"{self.name}/{self.config}" if self.config else self.name


def is_tfds(source: str) -> bool:
  return isinstance(source, str) and source.startswith(PREFIX)


def parse(source: str, default_split: str = "train") -> Spec:
  """'tfds:NAME[/CONFIG][:SPLIT]' -> Spec. The split may hold tfds slicing ('train[:10%]')."""
  body = source[len(PREFIX):] if is_tfds(source) else source
  dataset, _, split = body.partition(":")
  if not _NAME.match(dataset):
    raise DeepwmError(f"data source '{source}': use 'tfds:NAME[/CONFIG][:SPLIT]' with a tfds "
                      f"dataset name in snake_case, e.g. 'tfds:voc/2012:train'")
  name, _, config = dataset.partition("/")
  return Spec(name, config, split or default_split)


def data_dir(configured: str = "") -> str:
  """Where prepared datasets live: the config's value, else $TFDS_DATA_DIR, else tfds's default."""
  path = configured or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.abspath(os.path.expanduser(path))


def _not_prepared(spec: Spec, root: str, what: str) -> DeepwmError:
  return DeepwmError(
      f"tfds dataset '{spec.dataset}' is not prepared in {root} ({what}); on a machine with "
      f"TensorFlow run `tfds build {spec.dataset} --data_dir=DIR --file_format=array_record`, "
      f"copy DIR here and set data.tfds_dir or TFDS_DATA_DIR (see {HOW_TO}); nothing is "
      f"downloaded at run time")


def _versions(path: str) -> list[str]:
  if not os.path.isdir(path):
    return []
  found = [v for v in os.listdir(path)
           if _VERSION.match(v) and os.path.isfile(os.path.join(path, v, "dataset_info.json"))]
  return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def prepared(spec: Spec, root: str) -> tuple[str, str, dict]:
  """(config, version, dataset_info) of the newest prepared version of `spec` under `root`."""
  base = os.path.join(root, spec.name)
  if not os.path.isdir(base):
    raise _not_prepared(spec, root, f"no folder {spec.name}/")
  config = spec.config
  if not config and not _versions(base):
    # A dataset with configs: tfds records the default one beside them.
    configs = sorted(c for c in os.listdir(base) if _versions(os.path.join(base, c)))
    meta = os.path.join(base, ".config", "metadata.json")
    if os.path.isfile(meta):
      with open(meta) as f:
        config = json.load(f).get("default_config_name", "") or ""
    if not config and len(configs) == 1:
      config = configs[0]
    if not config:
      raise DeepwmError(f"tfds dataset '{spec.name}' in {root} has the configs {configs} and no "
                        f"default; name one: 'tfds:{spec.name}/CONFIG'")
  path = os.path.join(base, config) if config else base
  versions = _versions(path)
  if not versions:
    rel = f"{spec.name}/{config}/" if config else f"{spec.name}/"
    raise _not_prepared(Spec(spec.name, config, spec.split), root,
                        f"no {rel}VERSION/dataset_info.json")
  version = versions[-1]
  with open(os.path.join(path, version, "dataset_info.json")) as f:
    info = json.load(f)
  formats = {info.get("fileFormat", "tfrecord"), *info.get("alternativeFileFormats", [])}
  if "array_record" not in formats:
    raise DeepwmError(
        f"tfds dataset '{spec.name}' in {os.path.join(path, version)} was prepared as "
        f"{'/'.join(sorted(formats))}, which needs TensorFlow to read; rebuild it with "
        f"--file_format=array_record (see {HOW_TO})")
  return config, version, info


def open_split(source: str | Spec, tfds_dir: str = "", default_split: str = "train"):
  """The records of one split as a random-access sequence of dicts of numpy values."""
  spec = source if isinstance(source, Spec) else parse(source, default_split)
  root = data_dir(tfds_dir)
  config, version, info = prepared(spec, root)
  splits = [s["name"] for s in info.get("splits", [])]
  base_split = re.split(r"[\[+]", spec.split, maxsplit=1)[0]
  if splits and base_split not in splits:
    raise DeepwmError(f"tfds dataset '{spec.dataset}' has no split '{base_split}'; its splits "
                      f"are {', '.join(splits)}")
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DeepwmError("tfds sources need tensorflow-datasets and array_record (no TensorFlow); "
                      "pip install tensorflow-datasets array_record") from None
  name = f"{spec.name}/{config}:{version}" if config else f"{spec.name}:{version}"
  try:
    return tfds.data_source(name, split=spec.split, data_dir=root, download=False,
                            try_gcs=False)
  except Exception as e:  # tfds raises many types (not found, bad slice, missing shards)
    msg = str(e).splitlines()[0][:200] if str(e) else ""
    raise DeepwmError(f"tfds dataset '{spec.dataset}' split '{spec.split}' in {root} cannot be "
                      f"read ({type(e).__name__}: {msg}); check the split and that every file "
                      f"was copied (see {HOW_TO})") from None


def to_float_image(img: np.ndarray, channels: int) -> np.ndarray:
  """A decoded tfds image (HxW or HxWxC, uint8/uint16/float) -> HxWx`channels` float32 [0, 1]."""
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[..., None]
  if img.ndim != 3:
    raise DeepwmError(f"a tfds image has shape {img.shape}; expected HxW or HxWxC")
  if img.shape[-1] in (2, 4):  # drop alpha
    img = img[..., :img.shape[-1] - 1]
  if img.dtype == np.uint8:
    img = img.astype(np.float32) / 255.0
  elif img.dtype == np.uint16:
    img = img.astype(np.float32) / 65535.0
  else:
    img = np.clip(img.astype(np.float32), 0.0, 1.0)
  return imageio.to_channels(img, channels)


def read(ds, indices, keys: tuple[str, ...], desc: str = "tfds", chunk: int = 256) -> dict:
  """The `keys` features of the records at `indices`, as lists; a progress bar when long."""
  indices = [int(i) for i in indices]
  out = {k: [] for k in keys}
  bar = tqdm.tqdm(total=len(indices), desc=desc, unit="img", disable=len(indices) < 4 * chunk,
                  leave=False)
  for s in range(0, len(indices), chunk):
    records = ds.__getitems__(indices[s:s + chunk])
    if s == 0 and records:
      missing = [k for k in keys if k not in records[0]]
      if missing:
        raise DeepwmError(f"tfds records have no {missing} feature (they have "
                          f"{sorted(records[0])}); use an image dataset with those features")
    for r in records:
      for k in keys:
        out[k].append(r[k])
    bar.update(len(records))
  bar.close()
  return out


def thin(indices: list, max_items: int) -> list:
  """At most `max_items` of `indices`, evenly spread (0: all), so a cap still spans the split."""
  if not max_items or len(indices) <= max_items:
    return list(indices)
  pick = np.unique(np.linspace(0, len(indices) - 1, max_items).round().astype(int))
  return [indices[i] for i in pick]


def split_images(source: str, split: str, channels: int, tfds_dir: str = "",
                 max_images: int = 0) -> list[np.ndarray]:
  """The images of the package's `split` (protect/attack/val) from one tfds split.

  The tfds split's records are dealt out by position like the files of a folder source
  (splits.FOLDER_PATTERN), so the three splits never share an image; at most `max_images`
  of them are read, evenly spread, since a whole photo dataset rarely fits in memory.
  """
  ds = open_split(source, tfds_dir)
  positions = splits.split_images(list(range(len(ds))), split)
  picked = thin(positions, max_images)
  if split != "val":
    # Multi-host (deepwm_jax/parallel.py): each process reads only its share of the training
    # photos; all read the whole val split, so the report that process 0 writes covers it.
    import jax
    picked = picked[jax.process_index()::jax.process_count()]
  key = image_key(ds[0]) if len(ds) else "image"
  images = read(ds, picked, (key,), desc=f"{source} {split}")[key]
  return [to_float_image(img, channels) for img in images]


def image_key(record: dict) -> str:
  """The photo feature of a record: 'image' (voc, coco, ...), 'hr' (div2k's high-resolution
  image), else the only image-shaped array."""
  for key in ("image", "hr"):
    if key in record:
      return key
  arrays = [k for k, v in record.items() if isinstance(v, np.ndarray) and v.ndim in (2, 3)
            and min(v.shape[:2]) > 4]
  if len(arrays) == 1:
    return arrays[0]
  raise DeepwmError(f"cannot tell which tfds feature is the image among {sorted(record)}; use a "
                    f"dataset with an 'image' feature")


def labeled(source: str | Spec, tfds_dir: str = "", split: str | None = None,
            max_items: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
  """(images as HxWxC arrays of the dataset's dtype, int32 labels) of one split."""
  spec = source if isinstance(source, Spec) else parse(source)
  if split is not None:
    spec = dataclasses.replace(spec, split=split)
  ds = open_split(spec, tfds_dir)
  got = read(ds, thin(list(range(len(ds))), max_items), ("image", "label"),
             desc=f"{spec.dataset} {spec.split}")
  return got["image"], np.asarray([int(v) for v in got["label"]], np.int32)
