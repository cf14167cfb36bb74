"""The exact key test: its p-values are valid for any reading that does not depend on the key."""
import numpy as np
import pytest
from scipy import stats

from deepwm_jax import secret_key
from deepwm_jax.errors import DeepwmError


def _false_claim_rates(readings, n_keys, n_bits, alphas, seed=0):
  """Fraction of fresh random keys that 'detect' fixed readings, at each alpha."""
  rng = np.random.default_rng(seed)
  p = np.array([secret_key.decide(readings, rng.choice([-1.0, 1.0], n_bits), 0.5).p_value
                for _ in range(n_keys)])
  return np.array([np.mean(p <= a) for a in alphas])


def test_pvalue_is_valid_whatever_the_readings():
  # Readings an innocent model could give: random, all identical (a model that returns the same
  # image every time), strongly biased to one sign, or containing exact zeros.
  rng = np.random.default_rng(1)
  n = 32
  cases = {
      "random": rng.normal(size=(16, n)),
      "identical": np.tile(rng.normal(size=(1, n)), (16, 1)),
      "one sign": np.abs(rng.normal(size=(16, n))) + 0.1,
      "zeros": np.where(rng.random((16, n)) < 0.5, 0.0, rng.normal(size=(16, n))),
  }
  alphas = np.array([0.01, 0.05, 0.2, 0.5])
  for name, v in cases.items():
    rates = _false_claim_rates(v, 4000, n, alphas)
    # 4000 keys: a rate above alpha + 4 standard errors would be a broken bound.
    se = np.sqrt(alphas * (1 - alphas) / 4000)
    assert np.all(rates <= alphas + 4 * se), (name, rates)


def test_counting_image_by_image_would_not_be_exact():
  # The reason the set is read by summing v first: with identical readings, adding up per-image
  # matches multiplies one draw and claims far too often; the pooled test does not.
  rng = np.random.default_rng(2)
  n, n_img = 32, 16
  v = np.tile(rng.normal(size=(1, n)), (n_img, 1))
  naive, exact = [], []
  for _ in range(2000):
    k = rng.choice([-1.0, 1.0], n)
    m = int(secret_key.matches(v, k).sum())
    naive.append(float(secret_key.binomial_pvalue(m, n * n_img)) <= 0.01)
    exact.append(secret_key.decide(v, k, 0.01).detected)
  assert np.mean(naive) > 0.1
  assert np.mean(exact) <= 0.01 + 4 * np.sqrt(0.01 * 0.99 / 2000)


def test_true_key_is_detected_and_another_key_is_not():
  rng = np.random.default_rng(3)
  n = 64
  key_a, key_b = (secret_key.new_key(n, seed=s) for s in (10, 11))
  readings_b = key_b[None, :] + rng.normal(scale=1.5, size=(8, n))  # images carrying key B
  assert secret_key.decide(readings_b, key_b, 1e-6).detected
  verdict_a = secret_key.decide(readings_b, key_a, 1e-6)
  assert not verdict_a.detected
  assert verdict_a.p_value > 1e-3


def test_rank_sum_pvalue_is_wilcoxons_exact_signed_rank_test():
  rng = np.random.default_rng(4)
  for n in (5, 17, 64):
    key = secret_key.new_key(n, seed=n)
    for _ in range(3):
      v = rng.normal(loc=0.3, size=n)
      d = v * key  # agreement with the key, signed by strength
      want = stats.wilcoxon(d, alternative="greater", method="exact").pvalue
      got = secret_key.rank_sum_pvalue(secret_key.rank_sum(v, key), n)
      assert got == pytest.approx(want, rel=1e-9)
  assert secret_key.rank_sum_pvalue(secret_key.max_rank_sum(64), 64) == pytest.approx(2.0 ** -64)
  assert secret_key.rank_sum_pvalue(0, 64) == 1.0


def test_bits_read_wrong_count_by_their_strength():
  # 46 of 64 bits right: the sign test's p is 2.3e-4 whichever bits are wrong; the signed-rank
  # test detects the reading when the wrong bits are the weakest and not when they are the
  # strongest.
  n = 64
  key = secret_key.new_key(n, seed=1)
  strength = np.arange(1.0, n + 1)
  v = key * strength
  weak, strong = v.copy(), v.copy()
  weak[:18] *= -1
  strong[-18:] *= -1
  assert secret_key.binomial_pvalue(46, n) > 1e-6
  got_weak = secret_key.decide(weak[None], key, 1e-6)
  got_strong = secret_key.decide(strong[None], key, 1e-6)
  assert got_weak.matches == got_strong.matches == 46
  assert got_weak.detected and got_weak.p_value < 1e-10
  assert not got_strong.detected and got_strong.p_value > 0.1


def test_bonferroni_and_what_is_needed():
  n = 64
  w = secret_key.rank_sum_needed(n, 1e-6)
  assert secret_key.rank_sum_pvalue(w, n) <= 1e-6 < secret_key.rank_sum_pvalue(w - 1, n)
  assert secret_key.rank_sum_needed(n, 1e-6, hypotheses=1000) > w
  # The fewest bits that can be enough: with the wrong bits the weakest, m bits reach w and
  # m - 1 do not.
  m = secret_key.bits_needed(n, 1e-6)
  top = secret_key.max_rank_sum(n)
  assert top - secret_key.max_rank_sum(n - m) >= w > top - secret_key.max_rank_sum(n - m + 1)
  assert secret_key.bits_needed(8, 1e-6) == 9  # 2^-8 > 1e-6: no 8-bit reading can decide
  key = secret_key.new_key(n, seed=0)
  v = key[None] * np.arange(1.0, n + 1)
  v[0, :5] *= -1  # 59 of 64 bits agree, the five weakest read wrong
  one = secret_key.decide(v, key, 1e-6)
  many = secret_key.decide(v, key, 1e-6, hypotheses=1000)
  assert one.matches == 59 and one.score == pytest.approx((top - 15) / top)
  assert many.p_value == pytest.approx(1000 * one.p_value)


def test_keys_and_bad_input():
  k1, k2 = secret_key.new_key(128), secret_key.new_key(128)
  assert set(np.unique(k1)) <= {-1.0, 1.0} and not np.array_equal(k1, k2)
  np.testing.assert_array_equal(secret_key.new_key(16, seed=5), secret_key.new_key(16, seed=5))
  with pytest.raises(DeepwmError, match="signs"):
    secret_key.check_key([1.0, 0.5])
  with pytest.raises(DeepwmError, match="key bits"):
    secret_key.decide(np.ones((2, 3)), np.ones(4), 0.01)
  with pytest.raises(DeepwmError, match="alpha"):
    secret_key.decide(np.ones((2, 4)), np.ones(4), 0.0)
  # A NaN or zero reading is a mismatch, never a match, in either count.
  assert secret_key.matches(np.array([np.nan, 1.0]), np.array([1.0, 1.0])) == 1
  assert secret_key.rank_sum(np.array([np.nan, 0.0, 1.0]), np.ones(3)) == 3.0
