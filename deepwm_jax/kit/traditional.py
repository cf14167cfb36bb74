"""The traditional kit: a spread-spectrum key and its calibration, no networks (kit.json
"method": "traditional"). The key lives in kit.json: keep the kit private."""
import dataclasses
import json

import ml_collections
import numpy as np

from deepwm_jax import budget, verdict, windows
from deepwm_jax.errors import DeepwmError
from deepwm_jax.kit import files
from deepwm_jax.stages.traditional import METHOD, SpreadSpectrum, capacity_bits


@dataclasses.dataclass
class TraditionalKit:
  """A loaded traditional kit: the same embed / statistic / verify API as `kit.Kit`."""
  path: str
  info: dict
  watermark: SpreadSpectrum
  calibration: verdict.Calibration
  method: str = METHOD

  @property
  def image_size(self) -> int:
    return self.watermark.image_size

  @property
  def channels(self) -> int:
    return self.watermark.channels

  @property
  def threshold(self) -> float:
    """The per-image threshold on the z-score (calibrated)."""
    return self.calibration.threshold

  @property
  def config(self):
    """The protector's run config (task model, data), as `kit.Kit.config`: the zoo reads it."""
    return ml_collections.ConfigDict(self.info["config"])

  @property
  def overlap(self) -> int:
    """0: windows tile the image, the pattern repeating with the window's period (an
    overlapping neighbour would lay a shifted pattern over it)."""
    return 0

  def _windows(self, fn, images):
    items, _ = windows.check(images, self.image_size, self.channels, "images")
    return windows.apply(fn, items, self.image_size, self.overlap)

  def embed(self, images, psnr_floor: float = 0.0):
    """Images of any size at least the pattern's, through blended windows as a network kit's
    (deepwm_jax/windows.py); the output has the input's size and form. `psnr_floor` as for
    network kits (deepwm_jax/budget.py)."""
    budget.check_floor(psnr_floor)
    items, stacked = windows.check(images, self.image_size, self.channels, "images")
    marked = windows.blend(self.watermark.embed, items, self.image_size, self.overlap)
    return windows.restack(budget.cap(items, marked, psnr_floor), stacked)

  def window_counts(self, images) -> list[int]:
    items, _ = windows.check(images, self.image_size, self.channels, "images")
    return windows.count(items, self.image_size, self.overlap)

  def extract(self, images) -> np.ndarray:
    raise DeepwmError(f"kit '{self.path}' is a traditional (spread-spectrum) kit: it has no "
                      f"extractor image; use verify() or statistic()")

  def statistic(self, images) -> np.ndarray:
    """The z-score of every window of every image (one per image of the pattern's size)."""
    return self._windows(self.watermark.statistic, images)[0]

  def verify(self, images, alpha: float | None = None) -> verdict.Verdict:
    """The calibrated verdict over every window of every image, each window one sample."""
    zn, _ = self._windows(lambda x: np.stack(self.watermark.correlations(x), axis=1), images)
    z, nc = zn[:, 0], zn[:, 1]
    v = verdict.decide(z, self.calibration, self.info["alpha"] if alpha is None else alpha,
                       min_success_rate=self.info["min_success_rate"])
    v.nc_mean = float(np.mean(nc))
    v.paper_success_rate = float(np.mean(nc > self.info["nc_threshold"]))
    return v

  def describe(self) -> dict:
    return {"method": METHOD, "image_size": self.image_size, "channels": self.channels,
            "band_coefficients": int(self.watermark.mask.sum()), "psnr": self.watermark.psnr,
            "capacity_bits": capacity_bits(), "owner": self.info.get("owner"),
            "created": self.info.get("created"),
            "package_version": self.info.get("package_version")}


def write_kit(path: str, cfg, watermark: SpreadSpectrum, calibration: verdict.Calibration,
              owner: str | None = None) -> str:
  """kit.json (the key lives here: keep the kit private) + manifest, written atomically."""
  return files.write_new(path, lambda tmp: {
      **files.header(cfg, METHOD, owner, watermark.image_size, watermark.channels),
      "traditional": watermark.to_dict(),
      "calibration": calibration.to_dict(),
      "nc_threshold": float(cfg.evaluate.nc_threshold),
      "min_success_rate": float(cfg.evaluate.min_success_rate),
      "config": json.loads(cfg.to_json_best_effort())})


def load(path: str, info: dict) -> TraditionalKit:
  """From an intact kit's kit.json (kit.load_kit checked the manifest, kind and format)."""
  try:
    t = info["traditional"]
    wm = SpreadSpectrum(int(t["key"]), int(t["image_size"]), int(t["channels"]),
                        float(t["psnr"]), tuple(float(b) for b in t["band"]),
                        float(t["whiten"]))
    calibration = verdict.Calibration.from_dict(info["calibration"])
    for k in ("alpha", "min_success_rate", "nc_threshold"):
      float(info[k])
  except (KeyError, TypeError, ValueError) as e:
    raise DeepwmError(f"kit '{path}': kit.json is invalid ({type(e).__name__}: {e}); "
                      f"re-create the kit") from None
  return TraditionalKit(path, info, wm, calibration)
