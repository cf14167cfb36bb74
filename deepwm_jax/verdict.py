"""The detection decision: a per-image statistic, its calibration on negatives, and a p-value.

The extractor R maps a suspect image to r, which should be the watermark w when the image
carries the watermark and the blank otherwise. METHOD.md section 5 shows why neither of the
usual correlations can decide this: the paper's NC of the blank against a dark-on-white logo
is already ~0.93, and the centered NC of a faint trace of w on a blank extraction is high.
`watermark_statistic` measures shape and amplitude together; `calibrate` puts the threshold
above every statistic of images that must not be detected; `decide` turns the number of
images above it into a binomial p-value.
"""
import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from scipy import stats as scipy_stats

from deepwm_jax import metrics
from deepwm_jax.errors import DeepwmError

_IMAGE_AXES = (-3, -2, -1)

# Default gap between the largest calibration negative and the threshold, in units of the
# statistic (whose scale is 0 = no watermark, 1 = the full watermark).
DEFAULT_MARGIN = 0.05
# Quantile of the calibration positives the threshold must stay below when there is room.
POSITIVE_QUANTILE = 0.05
DEFAULT_ALPHA = 1e-6
DEFAULT_MIN_SUCCESS_RATE = 0.5


def watermark_statistic(r_NxHxWxC, w_HxWxC, blank_HxWxC, eps: float = 1e-12) -> jnp.ndarray:
  """Per-image evidence that r is the watermark: amplitude x shape, in [0, 1].

  With d = w - blank and centered images (per-image mean removed):
    amplitude a = <r_c, d_c> / <d_c, d_c>   (least-squares slope of r on d: 1 at r = w)
    shape     p = <r_c, d_c> / (|r_c| |d_c|) (Pearson correlation of r with d)
    statistic   = clip(a, 0, 1) * max(p, 0)
  It is 1 for r = w, 0 for r = blank (or any flat image), ~a for a faint trace of w (the
  amplitude factor catches what centered NC misses), ~0 for an extraction unrelated to w
  (the shape factor), and 0 for an inverted logo.

  Why not the distance score (mse(r, blank) - mse(r, w)) / mse(w, blank): it equals
  2 <r - blank, d> / <d, d> - 1 exactly, a pure projection, so an all-dark extraction scores
  +1 against a dark-on-white logo -- the dark-flat-sky false positives of METHOD.md section 8.
  Centering also makes the statistic indifferent to a global brightness shift of r.
  r is clipped to [0, 1] first (the extractor's output is linear).
  """
  r = jnp.clip(jnp.asarray(r_NxHxWxC, jnp.float32), 0.0, 1.0)
  w = jnp.asarray(w_HxWxC, jnp.float32)
  blank = jnp.asarray(blank_HxWxC, jnp.float32)
  if r.ndim != 4 or w.shape[-3:] != r.shape[-3:] or blank.shape[-3:] != r.shape[-3:]:
    raise DeepwmError(
        "watermark_statistic needs extractions [N, H, W, C] and a watermark and blank [H, W, C] "
        f"of the same image size, got {r.shape}, {w.shape} and {blank.shape}.")
  d = jnp.broadcast_to(w - blank, r.shape)
  rc = r - jnp.mean(r, axis=_IMAGE_AXES, keepdims=True)
  dc = d - jnp.mean(d, axis=_IMAGE_AXES, keepdims=True)
  # Means, not sums, so eps means the same at every image size.
  cov = jnp.mean(rc * dc, axis=_IMAGE_AXES)
  var_d = jnp.mean(dc * dc, axis=_IMAGE_AXES)
  var_r = jnp.mean(rc * rc, axis=_IMAGE_AXES)
  amplitude = cov / (var_d + eps)
  shape = cov / (jnp.sqrt(var_d * var_r) + eps)
  return jnp.clip(amplitude, 0.0, 1.0) * jnp.maximum(shape, 0.0)


def _as_finite_vector(values, what: str) -> np.ndarray:
  """Returns a float64 vector; empty or NaN input is a user error (nothing or garbage read)."""
  v = np.asarray(values, dtype=np.float64).ravel()
  if v.size == 0:
    raise DeepwmError(f"{what} is empty; give at least one image.")
  if not np.all(np.isfinite(v)):
    raise DeepwmError(
        f"{what} holds {int(np.sum(~np.isfinite(v)))} NaN/inf values; check the images "
        "(they must be finite floats in [0, 1]).")
  return v


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The decision threshold and what it was derived from (stored in the kit)."""
  threshold: float
  n_negatives: int
  n_negatives_above: int  # calibration negatives with statistic >= threshold
  p0: float  # conservative per-image false-positive rate: (n_negatives_above + 1) / (n + 1)
  max_negative: float
  min_positive: float | None = None
  method: str = ""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Calibration":
    names = [f.name for f in dataclasses.fields(cls)]
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING]
    missing = [k for k in required if k not in d]
    if missing:
      raise DeepwmError(
          f"calibration is missing {missing}; the kit is incomplete, re-create it with "
          "`deepwm run`.")
    kw = {k: d[k] for k in names if k in d}
    min_positive = kw.get("min_positive")
    calibration = cls(
        threshold=float(kw["threshold"]), n_negatives=int(kw["n_negatives"]),
        n_negatives_above=int(kw["n_negatives_above"]), p0=float(kw["p0"]),
        max_negative=float(kw["max_negative"]),
        min_positive=None if min_positive is None else float(min_positive),
        method=str(kw.get("method", "")))
    if not 0.0 < calibration.p0 <= 1.0 or not np.isfinite(calibration.threshold):
      raise DeepwmError(
          f"calibration has p0={calibration.p0} and threshold={calibration.threshold}; "
          "the kit is corrupt, re-create it with `deepwm run`.")
    return calibration


def calibrate(negative_stats: np.ndarray, positive_stats: np.ndarray | None = None,
              margin: float = DEFAULT_MARGIN) -> Calibration:
  """Chooses the threshold from statistics of images that must not be detected.

  Rule: t_min = max(negatives) + margin. Without positives, or when the positives' 5%
  quantile q does not clear t_min, the threshold is t_min. When it does, the threshold is
  max(t_min, (max(negatives) + q) / 2): midway across the gap, so a suspect's extractions
  may be somewhat weaker than the calibration positives and still count, while the threshold
  never comes closer to the negatives than the margin. Negatives should include clean inputs,
  clean targets and outputs of null models that never saw the watermark (METHOD.md section 8).

  p0 = (n_above + 1) / (n + 1) is the conformal estimate of a negative's chance to reach the
  threshold: for a new negative exchangeable with the calibration ones it is never optimistic.
  """
  negatives = _as_finite_vector(negative_stats, "calibrate's negative_stats")
  if not np.isfinite(margin) or margin < 0:
    raise DeepwmError(f"calibration margin must be >= 0, got {margin}.")
  max_negative = float(np.max(negatives))
  t_min = max_negative + margin
  threshold = t_min
  min_positive = None
  method = f"max negative + margin {margin:g}"
  if positive_stats is not None:
    positives = _as_finite_vector(positive_stats, "calibrate's positive_stats")
    min_positive = float(np.min(positives))
    q = float(np.quantile(positives, POSITIVE_QUANTILE))
    if q > t_min:
      threshold = max(t_min, 0.5 * (max_negative + q))
      method = (f"midway between max negative and the {POSITIVE_QUANTILE:g} quantile of "
                f"{positives.size} positives, at least max negative + margin {margin:g}")
    else:
      method += (f"; positives' {POSITIVE_QUANTILE:g} quantile {q:.4g} does not clear it: "
                 "negatives and positives overlap")
  if threshold > 1.0:
    # The statistic never exceeds 1: say so in the kit instead of failing later, silently.
    method += "; threshold above the statistic's maximum 1, so nothing can be detected"
  n_above = int(np.sum(negatives >= threshold))
  n = int(negatives.size)
  return Calibration(
      threshold=float(threshold), n_negatives=n, n_negatives_above=n_above,
      p0=(n_above + 1) / (n + 1), max_negative=max_negative, min_positive=min_positive,
      method=f"{method} ({n} negatives)")


@dataclasses.dataclass
class Verdict:
  """The outcome of verifying one suspect's images (`to_dict()` is the CLI's JSON)."""
  detected: bool
  n_images: int
  n_hits: int
  success_rate: float
  p_value: float
  threshold: float
  alpha: float
  stat_mean: float
  p0: float | None = None
  nc_mean: float | None = None
  paper_success_rate: float | None = None
  # Payload kits: the image statistic's own decision, and the bits' verdict and decoded message
  # (deepwm_jax/payload.py); `detected` and `p_value` above then combine both, conservatively.
  image_detected: bool | None = None
  image_p_value: float | None = None
  payload: dict[str, Any] | None = None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def per_image_decisions(stats: np.ndarray, calibration: Calibration) -> np.ndarray:
  """Boolean per image: statistic >= threshold (counts toward success_rate)."""
  values = _as_finite_vector(stats, "per_image_decisions' stats")
  return values >= calibration.threshold


def decide(stats: np.ndarray, calibration: Calibration, alpha: float = DEFAULT_ALPHA,
           nc_values: np.ndarray | None = None,
           min_success_rate: float = DEFAULT_MIN_SUCCESS_RATE) -> Verdict:
  """Detected when the number of hits is implausible for images without the watermark, and
  the hits are the majority of the images.

  p-value = P(X >= n_hits) for X ~ Binomial(n_images, p0). This treats the images as
  independent draws, which outputs of one suspect model need not be: a null model unlike the
  calibration's (another architecture) can put a few percent of its images over the threshold,
  which the binomial tail then calls astronomically unlikely. A surrogate that copied the
  watermark shows it on most of its outputs, so `min_success_rate` (default one half) is the
  guard against that. Give `nc_values` (the paper's NC) to fill the paper's columns.
  """
  values = _as_finite_vector(stats, "decide's stats")
  if not 0.0 < alpha < 1.0:
    raise DeepwmError(f"alpha must be in (0, 1), got {alpha}.")
  hits = values >= calibration.threshold
  n, n_hits = int(values.size), int(np.sum(hits))
  # sf(k - 1) = P(X >= k); with no hits it is exactly 1.
  p_value = 1.0 if n_hits == 0 else float(scipy_stats.binom.sf(n_hits - 1, n, calibration.p0))
  verdict = Verdict(
      detected=bool(p_value < alpha and n_hits / n >= min_success_rate), n_images=n, n_hits=n_hits, success_rate=n_hits / n,
      p_value=p_value, threshold=float(calibration.threshold), alpha=float(alpha),
      stat_mean=float(np.mean(values)), p0=float(calibration.p0))
  if nc_values is not None:
    nc = _as_finite_vector(nc_values, "decide's nc_values")
    verdict.nc_mean = float(np.mean(nc))
    verdict.paper_success_rate = metrics.paper_success_rate(nc)
  return verdict
