"""The detection decision: a per-image statistic, its calibration on negatives, and a p-value.

The extractor R maps a suspect image to r, which should be the watermark w when the image
carries the watermark and the blank otherwise. docs/verdicts.md shows why neither of the
usual correlations can decide this: the paper's NC of the blank against a dark-on-white logo
is already ~0.93, and the centered NC of a faint trace of w on a blank extraction is high.
`watermark_statistic` measures shape and amplitude together; `calibrate` puts the threshold
above every statistic of images that must not be detected; `decide` turns the number of
images above it, and (for kits that store their calibration null) each image's rank among the
calibration negatives, into a p-value for the whole suspect set.
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
  +1 against a dark-on-white logo -- the dark-flat-sky false positives of docs/method.md.
  Centering also makes the statistic indifferent to a global brightness shift of r.
  r is clipped to [0, 1] first (the extractor's output is linear).
  """
  return _statistic(*_moments(r_NxHxWxC, w_HxWxC, blank_HxWxC), eps)


def watermark_score(r_NxHxWxC, w_HxWxC, blank_HxWxC, eps: float = 1e-12) -> jnp.ndarray:
  """The statistic with its ties at 0 broken: what the calibrated p-value ranks images by.

  Where the statistic is positive (covariance > 0) the score is the statistic itself; where
  it is 0 the score is the (negative) amplitude a. So the score orders images exactly as the
  statistic does wherever it is above 0, but about half of all innocent extractions, whose
  statistic is exactly 0, are no longer tied: their rank p-values are spread over (0.5, 1]
  instead of all being 1, which is what makes the set p-value of innocents close to uniform.
  """
  cov, var_d, var_r = _moments(r_NxHxWxC, w_HxWxC, blank_HxWxC)
  return jnp.where(cov > 0, _statistic(cov, var_d, var_r, eps), cov / (var_d + eps))


def _statistic(cov, var_d, var_r, eps):
  amplitude = cov / (var_d + eps)
  shape = cov / (jnp.sqrt(var_d * var_r) + eps)
  return jnp.clip(amplitude, 0.0, 1.0) * jnp.maximum(shape, 0.0)


def _moments(r_NxHxWxC, w_HxWxC, blank_HxWxC):
  """cov(r, d), var(d), var(r) per image, of centered images, d = w - blank, r clipped."""
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
  return cov, var_d, var_r


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
  # Held-out negatives (`with_heldout`): images of the same kinds that stage 2 never trained
  # R on. Stage 2 fits R to say "blank" on its own negatives, so their statistics are
  # optimistic; p0 is then also bounded by the held-out count above the threshold.
  n_heldout: int = 0
  n_heldout_above: int = 0
  max_heldout: float | None = None
  # The calibration null that `verify` ranks a suspect's images in: the `watermark_score`s of
  # the held-out negatives, sorted, one array per source ({"clean_A": ..., "null_resnet": ...}),
  # or (kits written before held-out sources existed) one pooled array of the stage-2
  # negatives' scores; None for kits older still, whose p-value is the binomial bound alone
  # (see `decide`). Kits store it in null.npz / null.npy (not in kit.json).
  null: np.ndarray | dict[str, np.ndarray] | None = dataclasses.field(
      default=None, repr=False, compare=False)
  # The model-level null (`model_pvalue`, deepwm_jax/model_null.py): row j holds the
  # `watermark_score`s of one independently trained null model's outputs on held-out inputs.
  # Kits store it in null_models.npy; None for kits without one.
  model_null: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

  def to_dict(self) -> dict[str, Any]:
    """The JSON record (kit.json, report.json): everything but the null's values."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
         if f.name not in ("null", "model_null")}
    if self.model_null is not None:
      d["null_models"] = list(self.model_null.shape)
    if isinstance(self.null, dict):
      d["n_null"] = int(sum(v.size for v in self.null.values()))
      d["null_sources"] = {k: int(v.size) for k, v in self.null.items()}
    elif self.null is not None:
      d["n_null"] = int(self.null.size)
    return d

  def with_null(self, negative_scores) -> "Calibration":
    """This calibration with a pooled null: the scores of the same negatives, any order."""
    null = np.sort(_as_finite_vector(negative_scores, "the calibration null"))
    return dataclasses.replace(self, null=null)

  def with_heldout(self, stats_by_source: dict[str, Any],
                   scores_by_source: dict[str, Any]) -> "Calibration":
    """This calibration with held-out negatives: p0 and the per-source null come from them.

    p0 becomes max(p0, (k + 1) / (n + 1)) with k of the n held-out statistics at or over the
    threshold: the conformal estimate on images the threshold and R were not fitted to, and
    never below the estimate on the stage-2 negatives. The null keeps each source apart, so
    that `rank_pvalues` can take the largest of an image's per-source rank p-values.
    """
    if set(stats_by_source) != set(scores_by_source) or not stats_by_source:
      raise ValueError("with_heldout needs the statistics and scores of the same sources")
    stats = np.concatenate([_as_finite_vector(v, f"held-out statistics of {k}")
                            for k, v in stats_by_source.items()])
    null = {k: np.sort(_as_finite_vector(v, f"held-out scores of {k}"))
            for k, v in scores_by_source.items()}
    n, k = int(stats.size), int(np.sum(stats >= self.threshold))
    return dataclasses.replace(
        self, n_heldout=n, n_heldout_above=k, max_heldout=float(np.max(stats)),
        p0=float(max(self.p0, (k + 1) / (n + 1))), null=null,
        method=(f"{self.method}; p0 = max over these and {n} held-out negatives "
                f"({k} at or over the threshold)"))

  def with_model_null(self, scores_JxN) -> "Calibration":
    """This calibration with a model-level null: one row of scores per null model."""
    a = np.asarray(scores_JxN, np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1 or not np.all(np.isfinite(a)):
      raise DeepwmError(f"a model-level null needs finite scores shaped (models, images), got "
                        f"{a.shape}; rebuild it with deepwm_jax.tools.model_null")
    return dataclasses.replace(self, model_null=a)

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
    max_heldout = kw.get("max_heldout")
    calibration = cls(
        threshold=float(kw["threshold"]), n_negatives=int(kw["n_negatives"]),
        n_negatives_above=int(kw["n_negatives_above"]), p0=float(kw["p0"]),
        max_negative=float(kw["max_negative"]),
        min_positive=None if min_positive is None else float(min_positive),
        method=str(kw.get("method", "")), n_heldout=int(kw.get("n_heldout", 0)),
        n_heldout_above=int(kw.get("n_heldout_above", 0)),
        max_heldout=None if max_heldout is None else float(max_heldout))
    if not 0.0 < calibration.p0 <= 1.0 or not np.isfinite(calibration.threshold):
      raise DeepwmError(
          f"calibration has p0={calibration.p0} and threshold={calibration.threshold}; "
          "the kit is corrupt, re-create it with `deepwm run`.")
    return calibration


def calibrate(negative_stats: np.ndarray, positive_stats: np.ndarray | None = None,
              margin: float = DEFAULT_MARGIN, fpr: float = 0.0) -> Calibration:
  """Chooses the threshold from statistics of images that must not be detected.

  Rule: the reference negative t_ref is the largest negative (fpr = 0), or with fpr > 0 the
  (k+1)-th largest, k = floor(fpr * n): the threshold may leave up to k of the n negatives at
  or above it. t_min = t_ref + margin. Without positives, or when the positives' 5% quantile q
  does not clear t_min, the threshold is t_min. When it does, the threshold is
  max(t_min, (t_ref + q) / 2): midway across the gap, so a suspect's extractions may be
  somewhat weaker than the calibration positives and still count, while the threshold never
  comes closer to the reference negative than the margin. Negatives should include clean
  inputs, clean targets and outputs of null models that never saw the watermark (docs/verdicts.md).

  Why fpr: with fpr = 0 one stray negative among thousands sets the threshold, and a strong
  kit whose R reads a single null output at 0.98 detects nothing at all. p0 stays honest
  either way: it counts the negatives actually at or above the threshold.

  p0 = (n_above + 1) / (n + 1) is the conformal estimate of a negative's chance to reach the
  threshold: for a new negative exchangeable with the calibration ones it is never optimistic.
  """
  negatives = _as_finite_vector(negative_stats, "calibrate's negative_stats")
  if not np.isfinite(margin) or margin < 0:
    raise DeepwmError(f"calibration margin must be >= 0, got {margin}.")
  if not 0.0 <= fpr < 1.0:
    raise DeepwmError(f"calibration fpr must be in [0, 1), got {fpr}.")
  max_negative = float(np.max(negatives))
  k = int(np.floor(fpr * negatives.size))
  t_ref = float(np.sort(negatives)[::-1][k])
  ref = "max negative" if k == 0 else f"negative ranked {k + 1} from the top (fpr {fpr:g})"
  t_min = t_ref + margin
  threshold = t_min
  min_positive = None
  method = f"{ref} + margin {margin:g}"
  if positive_stats is not None:
    positives = _as_finite_vector(positive_stats, "calibrate's positive_stats")
    min_positive = float(np.min(positives))
    q = float(np.quantile(positives, POSITIVE_QUANTILE))
    if q > t_min:
      threshold = max(t_min, 0.5 * (t_ref + q))
      method = (f"midway between {ref} and the {POSITIVE_QUANTILE:g} quantile of "
                f"{positives.size} positives, at least that negative + margin {margin:g}")
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
  # How p_value was computed: 'calibrated' (binomial count and the Cauchy combination of the
  # images' rank p-values among the calibration null) or 'bound' (binomial count only: a kit
  # without a stored null); 'calibrated per source' for kits whose null keeps its held-out
  # sources apart (`rank_pvalues`); 'calibrated over models' for kits with a model-level null
  # (`model_pvalue`), where p_combined is the set's rank among null models. Both parts are
  # kept for the report.
  p_method: str | None = None
  p_bound: float | None = None
  p_combined: float | None = None
  # The set p-value against each single kind of innocent the kit's null holds: each source of
  # a per-source null ('clean_A', 'M_A', 'null_unet', ...; the Cauchy combination of the
  # images' ranks within that source) and 'null models' for a model-level null, each with the
  # hits' bound as in p_value. Each is valid, and close to uniform, for innocents of that kind;
  # p_value, which decides, must hold whatever kind the suspect is, so it is conservative for
  # all kinds but the least favourable (docs/verdicts.md). They say what a suspect resembles.
  p_by_kind: dict[str, float] | None = None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def per_image_decisions(stats: np.ndarray, calibration: Calibration) -> np.ndarray:
  """Boolean per image: statistic >= threshold (counts toward success_rate)."""
  values = _as_finite_vector(stats, "per_image_decisions' stats")
  return values >= calibration.threshold


def binomial_tail(k: int, n: int, p0: float) -> float:
  """P(X >= k) for X ~ Binomial(n, p0); exactly 1 for k <= 0 and 0 for k > n."""
  return 1.0 if k <= 0 else float(scipy_stats.binom.sf(k - 1, n, p0))


def rank_pvalues(scores, null: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
  """Per image: (1 + #{null >= score}) / (1 + n), the conformal p-value of its score among the
  n calibration negatives. For an image exchangeable with them, P(p <= x) <= x.

  With a null per source (clean crops, M's outputs, each null architecture's outputs, ...) it
  is the largest of the per-source rank p-values: an innocent image that resembles any one
  source gets a p-value at least its rank p-value within that source, so the guarantee holds
  for it without knowing which. A pooled null has no such guarantee: the false-claim study
  measured ResNet nulls ranking high among pooled negatives dominated by clean crops.
  """
  s = _as_finite_vector(scores, "rank_pvalues' scores")
  if isinstance(null, dict):
    return np.max([rank_pvalues(s, v) for v in null.values()], axis=0)
  n = null.size
  above = n - np.searchsorted(null, s, side="left")
  return (1.0 + above) / (1.0 + n)


def null_size(null: np.ndarray | dict[str, np.ndarray]) -> int:
  """The number of negatives behind the coarsest rank p-value (the smallest source)."""
  return min(v.size for v in null.values()) if isinstance(null, dict) else int(null.size)


def cauchy_pvalue(p_values: np.ndarray, n_null: int) -> float:
  """The Cauchy combination (Liu and Xie 2020): T = mean tan((1/2 - p_i) pi), p = P(C >= T).

  Exactly uniform for independent uniform p_i, and still approximately valid in the tail under
  arbitrary dependence: for N identical p_i it returns p_i itself, so a suspect whose images
  all lean the same way gets no more evidence than one image (Fisher's combination multiplies
  that evidence; the false-claim study measured it calling a null model's 16 outputs p ~ 1e-4).
  So it never goes far below the smallest rank p-value, 1 / (n + 1): below that only the
  binomial bound speaks (`set_pvalue`). Rank p-values of 1 (below every negative) count as
  1 - 1 / (2 (n + 1)), the middle of their bin, since tan would be -inf.
  """
  p = np.minimum(np.asarray(p_values, np.float64), 1.0 - 0.5 / (n_null + 1))
  return float(scipy_stats.cauchy.sf(np.mean(np.tan((0.5 - p) * np.pi))))


def model_pvalue(scores, model_null: np.ndarray, threshold: float | None = None) -> float | None:
  """The suspect set's rank among independently trained null models: (1 + #{j: (k_j, T_j) >=
  (k, T)}) / (1 + J), ordered lexicographically, with k the set's images at or over
  `threshold` (its hits; none counted without a threshold), T the mean `watermark_score` of its
  N images, and (k_j, T_j) the same for N of null model j's images (a fixed draw per N, without
  replacement). The score is the statistic wherever that is above 0, so for a threshold above
  0 a null image's hit is its score at or over it.

  Why: the images of one suspect model are not independent draws, and innocents differ in kind
  (clean crops, U-Net or ResNet imitations), so per-image ranks are either invalid (pooled) or
  conservative for every kind but the least favourable one (`rank_pvalues`, per source). Ranked
  among whole models, a suspect model drawn like the calibration's null models is exchangeable
  with them, so P(p <= x) <= x and the p-values are uniform up to the grid 1/(J + 1) (the
  conformal argument, with models as the units). The hits come first because an innocent model
  can put a stray image over the threshold more often than p0 says (measured: null ResNets and
  CNNs 5 images of 1920, 14 times p0): ranked among models that do the same, one hit is
  ordinary. It speaks for innocents *of that population*: innocents R reads lower (clean crops)
  get larger p-values; ones it reads higher (wider, longer-trained imitators than the null
  models) got small ones too often when models were ranked by T alone (9% of sets at or below
  0.05), and none of 80 sets at or below 0.05 with hits first (docs/verdicts.md).
  None when the set has more images than each null model has scores: the caller falls back.
  """
  s = _as_finite_vector(scores, "model_pvalue's scores")
  drawn = _model_null_draw(model_null, s.size)
  if drawn is None:
    return None
  t_null, t = drawn.mean(axis=1), np.mean(s)
  if threshold is None:
    at_or_above = t_null >= t
  else:
    k_null, k = np.sum(drawn >= threshold, axis=1), np.sum(s >= threshold)
    at_or_above = (k_null > k) | ((k_null == k) & (t_null >= t))
  return float((1.0 + np.sum(at_or_above)) / (1.0 + drawn.shape[0]))


def _model_null_draw(model_null: np.ndarray, n: int) -> np.ndarray | None:
  """N of each null model's scores (models x n), one fixed draw per n, so verify is
  reproducible; None when the models have fewer than n scores each."""
  null = np.asarray(model_null, np.float64)
  if n > null.shape[1]:
    return None
  pick = np.argsort(np.random.default_rng(n).random(null.shape), axis=1)[:, :n]
  return np.take_along_axis(null, pick, axis=1)


def model_set_pvalue(n_hits: int, n: int, p0: float, p_model: float, model_null: np.ndarray,
                     threshold: float) -> float:
  """The set p-value with a model-level null: the rank among null models (`model_pvalue`,
  hits first), and the binomial bound B(k) only for a set with more hits than every null
  model has among its N drawn images.

  Exchangeability makes P(p <= x) <= x for x >= 1 / (J + 1) with no assumption about p0; below
  that only a set that out-hits all J null models (probability <= 1 / (J + 1) for an innocent
  like them) can go, and then only as far as B(k) says. So a null model's one stray hit
  cannot make p ~ 16 p0 (what min(B(k), ...) of `set_pvalue` gives it), while a surrogate with
  most of its images over the threshold keeps its astronomically small bound.
  """
  drawn = _model_null_draw(model_null, n)
  if n_hits <= np.max(np.sum(drawn >= threshold, axis=1)):
    return p_model
  return float(min(p_model, binomial_tail(n_hits, n, p0)))


def set_pvalue(n_hits: int, n: int, p0: float, p_combined: float | None) -> float:
  """The suspect set's p-value from its hits and, when there is a null, the combination of the
  images' rank p-values (`cauchy_pvalue`).

  The test statistic is lexicographic: first the number of images over the threshold H, then,
  among sets with as many hits, the combination T of the rank p-values. Its exact p-value
  P(H' > k) + P(H' = k, T' >= T) is at most B(k + 1) + p_combined and at most B(k), with
  B(j) = P(Binomial(n, p0) >= j); the smaller of the two is returned. So with hits the
  conservative binomial bound of older kits is kept (p0^16 ~ 5e-65 for 16 of 16 at
  p0 = 1e-4), and without hits the p-value is p_combined + B(1) (B(1) ~ n p0 ~ 1.5e-3 for
  16 images): close to uniform for images exchangeable with the calibration negatives instead
  of always 1. Without a null
  (p_combined None) it is the binomial bound B(k) alone.
  """
  bound = binomial_tail(n_hits, n, p0)
  if p_combined is None:
    return bound
  return float(min(bound, binomial_tail(n_hits + 1, n, p0) + p_combined, 1.0))


def _pvalues_by_kind(scores: np.ndarray, calibration: Calibration,
                     n_hits: int) -> dict[str, float] | None:
  """Verdict.p_by_kind: the set p-value against each kind of innocent on its own."""
  n, p0, out = scores.size, calibration.p0, {}
  if isinstance(calibration.null, dict):
    for source, null in calibration.null.items():
      out[source] = set_pvalue(n_hits, n, p0,
                               cauchy_pvalue(rank_pvalues(scores, null), null.size))
  if calibration.model_null is not None:
    p_models = model_pvalue(scores, calibration.model_null, calibration.threshold)
    if p_models is not None:
      out["null models"] = model_set_pvalue(n_hits, n, p0, p_models, calibration.model_null,
                                            calibration.threshold)
  return out or None


def decide(stats: np.ndarray, calibration: Calibration, alpha: float = DEFAULT_ALPHA,
           nc_values: np.ndarray | None = None,
           min_success_rate: float = DEFAULT_MIN_SUCCESS_RATE,
           scores: np.ndarray | None = None) -> Verdict:
  """Detected when the suspect set is implausible for images without the watermark (p-value
  below alpha), and the hits are the majority of the images.

  p-value (`set_pvalue`): with `scores` (`watermark_score` of the same images) and a
  calibration that carries its null, the lexicographic combination of the binomial count of
  hits (X ~ Binomial(n_images, p0)) and the Cauchy combination of the images' rank p-values
  ('calibrated'), or, with a model-level null and no more images than it holds per model, the
  set's rank among null models, hits first (`model_pvalue`, 'calibrated over models'; the
  binomial bound only beyond every null model's hits, `model_set_pvalue`); otherwise the
  binomial tail P(X >= n_hits) alone ('bound', 1 without hits).
  Both treat the images as independent draws exchangeable with the calibration negatives,
  which outputs of one suspect model need not be: a null model unlike the calibration's
  (another architecture) can put a few percent of its images over the threshold, which the
  binomial tail then calls astronomically unlikely. A surrogate that copied the watermark shows
  it on most of its outputs, so `min_success_rate` (default one half) is the guard against
  that. Give `nc_values` (the paper's NC) to fill the paper's columns.
  """
  values = _as_finite_vector(stats, "decide's stats")
  if not 0.0 < alpha < 1.0:
    raise DeepwmError(f"alpha must be in (0, 1), got {alpha}.")
  hits = values >= calibration.threshold
  n, n_hits = int(values.size), int(np.sum(hits))
  p_combined, p_method, p_by_kind = None, "bound", None
  if scores is not None and (calibration.null is not None or calibration.model_null is not None):
    score_values = _as_finite_vector(scores, "decide's scores")
    if score_values.size != n:
      raise DeepwmError(f"decide got {n} statistics but {score_values.size} scores; give one "
                        "of each per image.")
    if calibration.model_null is not None:
      p_combined = model_pvalue(score_values, calibration.model_null, calibration.threshold)
      if p_combined is not None:
        p_method = "calibrated over models"
    if p_combined is None and calibration.null is not None:
      p_combined = cauchy_pvalue(rank_pvalues(score_values, calibration.null),
                                 null_size(calibration.null))
      p_method = ("calibrated per source" if isinstance(calibration.null, dict)
                  else "calibrated")
    p_by_kind = _pvalues_by_kind(score_values, calibration, n_hits)
  if p_method == "calibrated over models":
    p_value = model_set_pvalue(n_hits, n, calibration.p0, p_combined, calibration.model_null,
                               calibration.threshold)
  else:
    p_value = set_pvalue(n_hits, n, calibration.p0, p_combined)
  verdict = Verdict(
      detected=bool(p_value < alpha and n_hits / n >= min_success_rate), n_images=n,
      n_hits=n_hits, success_rate=n_hits / n, p_value=p_value,
      threshold=float(calibration.threshold), alpha=float(alpha),
      stat_mean=float(np.mean(values)), p0=float(calibration.p0),
      p_method=p_method,
      p_bound=binomial_tail(n_hits, n, calibration.p0), p_combined=p_combined,
      p_by_kind=p_by_kind)
  if nc_values is not None:
    nc = _as_finite_vector(nc_values, "decide's nc_values")
    verdict.nc_mean = float(np.mean(nc))
    verdict.paper_success_rate = metrics.paper_success_rate(nc)
  return verdict
