"""The filter kit (kit.json "method": "filter"): the keyed filter of filter_key.py, no networks.
Its verdict is the exact test of secret_key.py: no calibration. The key lives in kit.json:
keep the kit private."""
import dataclasses
import json

import ml_collections
import numpy as np

from deepwm_jax import budget, filter_key, secret_key, windows
from deepwm_jax.errors import DeepwmError
from deepwm_jax.kit import files

METHOD = "filter"


@dataclasses.dataclass
class FilterKit:
  """A loaded filter kit: embed and verify images (float32 NHWC in [0, 1], or lists of HWC
  images of any sizes at least the kit's crop)."""
  path: str
  info: dict
  key: np.ndarray  # [offsets, channels] in {-1, +1}
  method: str = METHOD

  @property
  def config(self):
    """The protector's run config (task model, data): the zoo reads it."""
    return ml_collections.ConfigDict(self.info["config"])

  @property
  def radius(self) -> int:
    return int(self.info["filter"]["radius"])

  @property
  def eps(self) -> float:
    return float(self.info["filter"]["eps"])

  @property
  def psnr_floor(self) -> float:
    """Embedding's default floor: no image's residual stronger than this PSNR (0: none)."""
    return float(self.info["filter"]["psnr_floor"])

  @property
  def alpha(self) -> float:
    return float(self.info["alpha"])

  @property
  def image_size(self) -> int:
    """The smallest side the kit takes: its training crop, as for the other kits (the filter
    itself needs only 2 radius + 1 px)."""
    return int(self.info["image_size"])

  @property
  def channels(self) -> int:
    return int(self.info["channels"])

  @property
  def overlap(self) -> int:
    """The filter has no windows; this describes the crop grid that full-size studies use to
    measure how much of the residual lies in its frame."""
    return 0

  @property
  def reads_reference(self) -> bool:
    """True: `verify` reads against the owner's outputs for the same inputs when given them."""
    return True

  @property
  def threshold(self) -> float:
    """The per-image score at which one image alone is detected."""
    return secret_key.score_needed(self.key.size, self.alpha)

  def _check(self, images, what: str):
    return windows.check(images, self.image_size, self.channels, what)

  def embed(self, images, psnr_floor: float | None = None):
    """B' of every image at its own size and form; `psnr_floor` (default: the kit's) scales
    down the residual of any image that would fall under it (deepwm_jax/budget.py)."""
    floor = self.psnr_floor if psnr_floor is None else budget.check_floor(psnr_floor)
    items, stacked = self._check(images, "images")
    marked = [filter_key.embed(x, self.key, self.eps, self.radius) for x in items]
    return windows.restack(budget.cap(items, marked, floor), stacked)

  def window_counts(self, images) -> list[int]:
    items, _ = self._check(images, "images")
    return [1] * len(items)

  def _items(self, images, references):
    items, _ = self._check(images, "images")
    refs = None
    if references is not None:
      refs, _ = self._check(references, "references")
      if len(refs) != len(items):
        raise DeepwmError(f"{len(items)} images but {len(refs)} references; give the owner's "
                          f"output for every input the suspect was given")
      for i, (x, ref) in enumerate(zip(items, refs)):
        if x.shape != ref.shape:
          raise DeepwmError(f"images[{i}] is {x.shape} but its reference is {ref.shape}; give "
                            f"the owner's output for the very input the suspect was given")
    return items, refs

  def readings(self, images, references=None) -> np.ndarray:
    """[N, bits]: each image's least-squares filter coefficients, one per key bit; against
    `references` (the owner's outputs for the suspect's inputs, same sizes) when given."""
    items, refs = self._items(images, references)
    return filter_key.readings(items, self.radius, refs)

  def statistic(self, images, references=None) -> np.ndarray:
    """Per image, the signed-rank score (1 when every bit matches, 0.5 on average without the
    key)."""
    k = self.key.ravel()
    return (secret_key.rank_sum(self.readings(images, references), k)
            / secret_key.max_rank_sum(k.size))

  def verify(self, images, alpha: float | None = None, references=None,
             search: str = "none") -> secret_key.KeyVerdict:
    """Exact verdict (secret_key.py) on each image's reading and on the set's, one regression
    over all the images (filter_key.read). With `references` the suspect's outputs are read
    against the owner's outputs for the same inputs, which is far stronger; without, each
    image is read on its own content, which no shift or crop disturbs.

    `search='shift'` (with references only) first registers each image onto its reference
    (filter_key.align: a translation found from the two images, up to half the smaller side)
    and reads their overlap: for outputs the suspect shifted or cropped at an offset. The
    registration never sees the key, so the bound needs no correction for it."""
    search = "none" if search is None else search
    if search not in ("none", "shift") or (search == "shift" and references is None):
      raise DeepwmError("a filter kit reads an image alone whatever its position; with "
                        "--references it takes --search shift (outputs shifted or cropped "
                        "against the owner's), nothing else")
    alpha = self.alpha if alpha is None else alpha
    items, refs = self._items(images, references)
    if search == "shift":
      pairs = [filter_key.align(x, ref, min(x.shape[:2]) // 2) for x, ref in zip(items, refs)]
      items, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    return filter_key.decide(*filter_key.read(items, self.radius, refs), self.key, alpha)

  def extract(self, images):
    raise DeepwmError(f"kit '{self.path}' is a filter kit: it has no extractor image; use "
                      f"verify() or statistic()")

  def describe(self) -> dict:
    return {"method": METHOD, "image_size": self.image_size, "channels": self.channels,
            "key_bits": int(self.key.size), "radius": self.radius, "eps": self.eps,
            "psnr_floor": self.psnr_floor, "score_needed": self.threshold,
            "min_bits_needed": secret_key.bits_needed(self.key.size, self.alpha),
            "alpha": self.alpha, "owner": self.info.get("owner"),
            "created": self.info.get("created"),
            "package_version": self.info.get("package_version")}


def write_kit(path: str, cfg, key, owner: str | None = None) -> str:
  """kit.json (the key lives here: keep the kit private) + manifest, written atomically."""
  f, d = cfg.protect.filter, cfg.data
  key = filter_key.check_key(key, int(f.radius), int(d.channels))
  return files.write_new(path, lambda tmp: {
      **files.header(cfg, METHOD, owner, d.image_size, d.channels),
      "filter": {"radius": int(f.radius), "eps": float(f.eps),
                 "psnr_floor": float(f.psnr_floor), "bits": int(key.size),
                 "key": key.astype(int).tolist()},
      "config": json.loads(cfg.to_json_best_effort())})


def load(path: str, info: dict) -> FilterKit:
  """From an intact kit's kit.json (kit.load_kit checked the manifest, kind and format)."""
  try:
    f = info["filter"]
    key = filter_key.check_key(f["key"], int(f["radius"]), int(info["channels"]))
    for k in ("eps", "psnr_floor"):
      float(f[k])
    float(info["alpha"])
    int(info["image_size"])
  except (KeyError, TypeError, ValueError, DeepwmError) as e:
    raise DeepwmError(f"kit '{path}': kit.json is invalid ({type(e).__name__}: {e}); "
                      f"restore the kit from its copy") from None
  return FilterKit(path, info, key)
