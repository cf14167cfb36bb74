"""The keyed kit (kit.json "method": "keyed"): H and R trained over random keys, and the owner's
secret key in kit.json. Its verdict is the exact test of secret_key.py: no calibration. The key
lives in kit.json: keep the kit private."""
import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from deepwm_jax import alignment, models, secret_key
from deepwm_jax.data import watermarks
from deepwm_jax.errors import DeepwmError
from deepwm_jax.kit import files
from deepwm_jax.kit.deep import NetworkKit, abstract_state
from deepwm_jax.stages import keyed
from deepwm_jax.train import stage1

METHOD = "keyed"


@dataclasses.dataclass
class KeyedKit(NetworkKit):
  """A loaded keyed kit: embed, extract, read and verify images (float32 NHWC in [0, 1]).
  `extract` gives R's drawing of a key's cells (mid-grey where no key is read)."""
  key: np.ndarray
  method: str = METHOD

  @property
  def alpha(self) -> float:
    return float(self.info["alpha"])

  @property
  def overlap(self) -> int:
    """0: windows tile the image. The key's cells repeat with the window's period, so a
    neighbour overlapping by anything but a whole window would lay other bits over them
    (a 32 px kit read 73% of its bits at an overlap of 8 px, all of them tiled)."""
    return 0

  @property
  def read_every(self) -> int:
    """1: no axis is thinned (see `read_checker`)."""
    return 1

  @property
  def read_checker(self) -> bool:
    """True: of an image more than 8 tiles wide or high, half the tiles are read, in a
    checkerboard, and their readings summed: R is most of verification's cost. With one kit
    on four held-out 512 px photos this detected the same photos as reading every tile, as
    they are and after a 1 px shift, blur, noise or a resize to 0.5 and back, at twice the
    speed. Any set of tiles chosen without the key keeps the exact test's bound."""
    return True

  @property
  def symmetry(self) -> str:
    """Which cells share a bit (data/watermarks.SYMMETRIES), as the kit's config says."""
    return keyed.symmetry(self.config)

  @property
  def searchable(self) -> bool:
    """Whether `verify(search=...)` applies: the search rolls the key, which a key whose cells
    share bits by symmetry does not survive."""
    return self.symmetry == "none"

  @property
  def threshold(self) -> float:
    """The per-image score (`statistic`) at which one image alone is detected."""
    return secret_key.score_needed(self.key.size, self.alpha)

  def __post_init__(self):
    self._embed = stage1.make_embed_fn(self.config, keyed.pattern(self.config, self.key))
    self._extract = stage1.make_extract_fn(self.config)
    self._read = keyed.make_reader(self.config)

  def readings(self, images) -> np.ndarray:
    """One number per key bit and image, [N, bits], summed over the image's windows: its sign
    is the bit read. Summing is what pools a large image's evidence into one verdict."""
    r, owner = self._apply(self._read, self.extractor_vars, images)
    out = np.zeros((int(owner.max()) + 1, r.shape[1]), np.float64)
    np.add.at(out, owner, r.astype(np.float64))
    return out.astype(np.float32)

  def statistic(self, images) -> np.ndarray:
    """Per image, the signed-rank score: the rank sum W of the key bits read right over its
    largest value (1 when every bit matches, 0.5 on average for an image without the key)."""
    return (secret_key.rank_sum(self.readings(images), self.key)
            / secret_key.max_rank_sum(self.key.size))

  def verify(self, images, alpha: float | None = None,
             search: str = "none") -> secret_key.KeyVerdict:
    """Exact verdict: the readings of every window of every image summed per bit, and the
    signed-rank test on them against the key (secret_key.py). One image of any size can carry
    a verdict by itself.

    `search` ('none', 'shift' or 'scale') reads images that were shifted, cropped at any
    offset or rescaled (alignment.py): every alignment is tried and the best one's p-value is
    multiplied by the number tried, so the bound holds with the search."""
    alpha = self.alpha if alpha is None else alpha
    if alignment.mode(search) != "none" and not self.searchable:
      raise DeepwmError(f"the alignment search is built for keys without symmetry; this kit's "
                        f"is '{self.symmetry}': verify without --search")
    if alignment.mode(search) == "none":
      return secret_key.decide(self.readings(images), self.key, alpha)
    items, _ = self._check(images, "images")
    # The views alignment.search cuts have sides that are multiples of the crop, so the tiled
    # grid `readings` reads puts every window on the key's period (no flush last window).
    return alignment.search(self.readings, items, self.key, self.image_size,
                            int(self.info["keyed"]["cell"]), alpha, search)

  def describe(self) -> dict:
    return {"method": METHOD, "image_size": self.image_size, "channels": self.channels,
            "key_bits": int(self.key.size), "cell": int(self.info["keyed"]["cell"]),
            "symmetry": self.symmetry,
            # One image or set is detected at this signed-rank score, which takes at least
            # this many bits read right (and then the wrong ones must be the weakest).
            "score_needed": self.threshold,
            "min_bits_needed": secret_key.bits_needed(self.key.size, self.alpha),
            "alpha": self.alpha, "owner": self.info.get("owner"),
            "created": self.info.get("created"),
            "package_version": self.info.get("package_version")}


def write_kit(path: str, cfg, embedder_vars, extractor_vars, key, owner: str | None = None) -> str:
  """Writes the kit atomically (networks by orbax, the key in kit.json)."""
  if jax.process_index() != 0:
    return os.path.abspath(path)
  key = secret_key.check_key(key)
  d = cfg.data

  def write_files(tmp):
    state = {"embedder": embedder_vars, "extractor": extractor_vars,
             "watermark": keyed.pattern(cfg, key),
             "blank": watermarks.key_blank(d.image_size, d.channels)}
    ckptr = files.checkpointer()
    ckptr.save(os.path.join(tmp, "state"), jax.device_get(state))
    ckptr.wait_until_finished()
    return {**files.header(cfg, METHOD, owner, d.image_size, d.channels),
            "keyed": {"cell": int(cfg.protect.keyed.cell), "symmetry": keyed.symmetry(cfg),
                      "bits": int(key.size),
                      "key": [int(b) for b in key]},
            "parameters": {"embedder": models.count_params(embedder_vars),
                           "extractor": models.count_params(extractor_vars)},
            "config": json.loads(cfg.to_json_best_effort())}

  return files.write_new(path, write_files)


def load(path: str, info: dict) -> KeyedKit:
  """From an intact kit's kit.json (kit.load_kit checked the manifest, kind and format)."""
  try:
    cfg = ml_collections.ConfigDict(info["config"])
    key = secret_key.check_key(info["keyed"]["key"])
    float(info["alpha"])
    if key.size != keyed.n_bits(cfg):
      raise ValueError(f"{key.size} key bits where its cells hold {keyed.n_bits(cfg)}")
  except (KeyError, TypeError, ValueError, DeepwmError) as e:
    raise DeepwmError(f"kit '{path}': kit.json is invalid ({type(e).__name__}: {e}); "
                      f"restore the kit from its copy") from None
  try:
    state = files.checkpointer().restore(os.path.join(path, "state"), abstract_state(cfg))
  except Exception as e:
    raise DeepwmError(f"kit '{path}': its networks do not match its config ({type(e).__name__}); "
                      f"restore the kit from its copy") from None
  return KeyedKit(path, info, cfg, state["embedder"], state["extractor"], key)
