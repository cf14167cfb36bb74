"""The detection statistic, its calibration and the binomial decision."""
import json

import numpy as np
import pytest

from deepwm_jax import metrics
from deepwm_jax import verdict
from deepwm_jax.errors import DeepwmError


def _logo(size: int = 32, channels: int = 1) -> np.ndarray:
  """A dark 'T' on white covering ~13% of the image, like the probe's logo."""
  w = np.ones((size, size, channels), np.float32)
  w[6:10, 5:27] = 0.0
  w[10:26, 14:18] = 0.0
  return w


def _stat(r, w):
  return np.asarray(verdict.watermark_statistic(r, w, np.ones_like(w)))


def test_statistic_endpoints():
  w = _logo()
  blank = np.ones_like(w)
  np.testing.assert_allclose(_stat(w[None], w), 1.0, atol=1e-5)
  np.testing.assert_allclose(_stat(blank[None], w), 0.0, atol=1e-6)


def test_statistic_tracks_amplitude():
  w = _logo()
  blank = np.ones_like(w)
  r = np.stack([blank + a * (w - blank) for a in (0.25, 0.5, 0.75)])
  np.testing.assert_allclose(_stat(r, w), [0.25, 0.5, 0.75], atol=1e-4)


def test_statistic_low_where_nc_is_fooled():
  w = _logo()
  blank = np.ones_like(w)
  rng = np.random.default_rng(0)
  faint = blank + 0.001 * (w - blank)  # centered NC ~1
  blankish = 0.97 * blank + rng.normal(0, 0.02, w.shape).astype(np.float32)  # paper NC > 0.9
  dark_flat = np.zeros_like(w)  # projection onto w - blank would call this a perfect logo
  garbage = rng.uniform(size=w.shape).astype(np.float32)
  inverted = 1.0 - w
  r = np.stack([faint, blankish, dark_flat, garbage, inverted])
  assert float(metrics.centered_nc(faint[None], w)[0]) > 0.99
  assert float(metrics.nc(blankish[None], w)[0]) > 0.9
  assert np.all(_stat(r, w) < 0.05), _stat(r, w)


def test_statistic_ignores_brightness_shift():
  w = _logo(channels=3)
  r = np.clip(w - 0.1, 0, 1)[None]
  assert _stat(r, w)[0] > 0.85


def test_calibrate_threshold_above_negatives():
  rng = np.random.default_rng(1)
  negatives = rng.normal(0.05, 0.02, 300)
  cal = verdict.calibrate(negatives, margin=0.05)
  assert cal.threshold > negatives.max()
  assert cal.n_negatives_above == 0 and cal.p0 == pytest.approx(1 / 301)
  positives = rng.normal(0.9, 0.03, 100)
  cal_pos = verdict.calibrate(negatives, positives, margin=0.05)
  assert negatives.max() + 0.05 <= cal_pos.threshold < np.quantile(positives, 0.05)
  assert cal_pos.min_positive == pytest.approx(positives.min())
  overlapping = verdict.calibrate(negatives, negatives, margin=0.05)
  assert overlapping.threshold == pytest.approx(negatives.max() + 0.05)
  assert "overlap" in overlapping.method


def test_calibrate_fpr_lets_a_stray_negative_lie_above():
  rng = np.random.default_rng(3)
  negatives = np.concatenate([rng.normal(0.05, 0.02, 2000), [0.98]])  # one stray null output
  positives = rng.normal(0.95, 0.02, 500)
  strict = verdict.calibrate(negatives, positives, margin=0.05)
  assert strict.threshold > 1.0 and strict.n_negatives_above == 0  # detects nothing
  loose = verdict.calibrate(negatives, positives, margin=0.05, fpr=1e-3)
  second = np.sort(negatives)[-3]  # k = floor(1e-3 * 2001) = 2: the third from the top
  assert second + 0.05 <= loose.threshold < np.quantile(positives, 0.05)
  assert loose.n_negatives_above == 1 and loose.p0 == pytest.approx(2 / 2002)
  assert loose.max_negative == pytest.approx(0.98) and "fpr 0.001" in loose.method
  with pytest.raises(DeepwmError):
    verdict.calibrate(negatives, fpr=1.0)


def test_calibration_round_trips_through_json():
  cal = verdict.calibrate(np.array([0.0, 0.1]), np.array([0.8, 0.9]))
  again = verdict.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
  assert again == cal
  with pytest.raises(DeepwmError):
    verdict.Calibration.from_dict({"threshold": 0.5})


def test_calibrate_errors():
  with pytest.raises(DeepwmError):
    verdict.calibrate(np.array([]))
  with pytest.raises(DeepwmError):
    verdict.calibrate(np.array([0.1, np.nan]))
  with pytest.raises(DeepwmError):
    verdict.calibrate(np.array([0.1]), margin=-1.0)


def test_decide():
  cal = verdict.calibrate(np.random.default_rng(2).normal(0, 0.02, 500), margin=0.05)
  many = verdict.decide(np.full(16, 0.9), cal, nc_values=np.full(16, 0.97))
  assert many.detected and many.p_value < 1e-30 and many.success_rate == 1.0
  assert many.nc_mean == pytest.approx(0.97) and many.paper_success_rate == 1.0
  none = verdict.decide(np.zeros(16), cal)
  assert not none.detected and none.p_value == 1.0 and none.n_hits == 0
  one = verdict.decide(np.array([0.9] + [0.0] * 15), cal)
  assert not one.detected and 0 < one.p_value < 1  # one hit in 16 is not proof
  assert json.loads(json.dumps(many.to_dict()))["detected"] is True
  np.testing.assert_array_equal(
      verdict.per_image_decisions(np.array([0.0, 0.9]), cal), [False, True])
  with pytest.raises(DeepwmError):
    verdict.decide(np.array([]), cal)
  with pytest.raises(DeepwmError):
    verdict.decide(np.array([0.5, np.nan]), cal)


def test_false_detections_are_rare_under_the_null():
  rng = np.random.default_rng(3)
  trials, false_detections, p_values = 200, 0, []
  for _ in range(trials):
    cal = verdict.calibrate(rng.normal(size=500), margin=0.0)  # no margin: the worst case
    v = verdict.decide(rng.normal(size=16), cal)
    false_detections += v.detected
    p_values.append(v.p_value)
  assert false_detections < 0.01 * trials
  # Conservative: P(p <= x) <= x (up to sampling noise) at a few levels.
  p_values = np.asarray(p_values)
  for x in (0.05, 0.2, 0.5):
    assert np.mean(p_values <= x) <= x + 0.05


def test_a_few_hits_are_not_a_detection_even_with_a_tiny_p_value():
  # A null model unlike the calibration's can put a few images over the threshold; the binomial
  # tail alone would call 4 hits in 64 at p0 = 1e-4 detected. The majority rule does not.
  cal = verdict.Calibration(threshold=0.5, n_negatives=9999, n_negatives_above=0, p0=1e-4,
                            max_negative=0.4)
  stats = np.zeros(64)
  stats[:4] = 0.9
  v = verdict.decide(stats, cal, alpha=1e-6)
  assert v.p_value < 1e-6 and v.success_rate == pytest.approx(4 / 64)
  assert not v.detected
  stats[:40] = 0.9
  assert verdict.decide(stats, cal, alpha=1e-6).detected
  assert not verdict.decide(stats, cal, alpha=1e-6, min_success_rate=0.9).detected
