"""The owner's secret key and the exact test on it: a false-claim bound that holds for any model.

A keyed kit's extractor never sees the owner's key: it is trained over random keys, and the
owner's key k (n signs) is drawn at random afterwards and kept in the kit. Reading a suspect
image gives n numbers v (one per key bit) that are a function of the image and of networks
trained without k. For an image that does not carry k, whatever model made it, v is therefore
independent of k, and since k is uniform over {-1, +1}^n the signs of d = v * k are n fair coins
independent of |v|. The verdict is Wilcoxon's signed-rank test on d:

  W = sum of the ranks of |v_j| (1 = weakest, n = strongest) over the bits j where
      sign(v_j) = k_j,

whose null distribution, the sum of a uniformly random subset of {1, ..., n}, is known exactly,
so P(W >= w) is an exact p-value. Nothing here is calibrated, and nothing depends on the
suspect's architecture, training data, output range or loss. A bit that R reads strongly counts
for more than one it barely reads: a distortion or an imitator that weakens the watermark flips
the weak readings first, where counting matching bits (a binomial sign test) would weigh them
like the rest. All n bits matching gives 2^-n either way; on imitators and distorted images the
signed-rank test detected more images alone than the sign test (docs/verdicts.md). Three rules
keep it exact:
- ties among |v| are ranked by bit position, which depends on v alone, never on the key;
- a set of images is read by summing v over the images first (one vote per key bit): the n
  readings of the sum are still a function of the images alone. Counting image by image and
  adding up would not be exact, because an innocent model that always returns the same image
  would repeat one draw N times;
- a bit whose v is exactly 0 (or not finite) counts as a mismatch, which only makes the test
  more conservative.
When a reader searches over several hypotheses (shifts, scales) and keeps the best, the p-value
is multiplied by the number of hypotheses (Bonferroni), which keeps the bound.
`matches` (the number of bits read right) is kept as the readable summary of a reading.
"""
import dataclasses
import functools
import secrets

import numpy as np
from scipy import stats as scipy_stats

from deepwm_jax.errors import DeepwmError


def new_key(n_bits: int, seed: int | None = None) -> np.ndarray:
  """A key of `n_bits` signs (float32, +-1). Without `seed` it comes from the operating
  system's entropy, which is what an owner's key must be; `seed` is for tests and studies."""
  if n_bits < 1:
    raise DeepwmError(f"a key needs at least one bit, got {n_bits}")
  rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
  return rng.choice(np.array([-1.0, 1.0], np.float32), n_bits)


def check_key(key) -> np.ndarray:
  k = np.asarray(key, np.float32)
  if k.ndim != 1 or k.size == 0 or not np.all(np.abs(k) == 1.0):
    raise DeepwmError("a secret key is a non-empty vector of +1/-1 signs; the kit's key file is "
                      "damaged: restore the kit from its copy")
  return k


def matches(v, key) -> np.ndarray:
  """Per row of v [..., n]: how many signs agree with the key (0 and NaN count as disagreeing)."""
  v = np.asarray(v, np.float64)
  k = check_key(key)
  if v.shape[-1] != k.size:
    raise DeepwmError(f"read {v.shape[-1]} key bits but the key has {k.size}")
  agree = np.isfinite(v) & (np.sign(v) == k)
  return agree.sum(-1)


def binomial_pvalue(m, n: int) -> np.ndarray:
  """P(Binomial(n, 1/2) >= m): the sign test's p-value of m matching bits out of n, which
  weighs every bit alike (kept to compare the two tests)."""
  return scipy_stats.binom.sf(np.asarray(m) - 1, n, 0.5)


@functools.lru_cache(maxsize=None)
def _rank_sum_tail(n: int) -> np.ndarray:
  """tail[w] = P(W >= w), W the sum of a uniformly random subset of {1, ..., n}, for w = 0 ...
  n(n+1)/2, and one trailing 0. Built one rank at a time (each in or out with probability
  1/2); float64 holds every probability down to 2^-n."""
  pmf = np.zeros(n * (n + 1) // 2 + 1)
  pmf[0] = 1.0
  for r in range(1, n + 1):
    new = 0.5 * pmf
    new[r:] += 0.5 * pmf[:-r]
    pmf = new
  tail = np.minimum(np.cumsum(pmf[::-1])[::-1], 1.0)
  tail[0] = 1.0  # W >= 0 always (the sum carries rounding)
  return np.append(tail, 0.0)


def max_rank_sum(n: int) -> int:
  """W when every bit matches: n(n+1)/2."""
  return n * (n + 1) // 2


def ranks(v) -> np.ndarray:
  """Ranks 1..n of |v| along the last axis (ties by position; 0 and NaN rank lowest)."""
  a = np.where(np.isfinite(v), np.abs(v), 0.0)
  order = np.argsort(a, axis=-1, kind="stable")
  r = np.empty(a.shape, np.float64)
  np.put_along_axis(r, order, np.broadcast_to(np.arange(1.0, a.shape[-1] + 1), a.shape), -1)
  return r


def rank_sum(v, key) -> np.ndarray:
  """Per row of v [..., n]: W, the sum of the ranks of |v| where sign(v) matches the key (0 and
  NaN never match). `key` may also be [R, n] rows of keys: then [..., R]."""
  v = np.asarray(v, np.float64)
  k = np.asarray(key, np.float64)
  if v.shape[-1] != k.shape[-1]:
    raise DeepwmError(f"read {v.shape[-1]} key bits but the key has {k.shape[-1]}")
  sign = np.where(np.isfinite(v), np.sign(v), 0.0)
  if k.ndim == 1:
    return (ranks(v) * (sign == k)).sum(-1)
  agree = sign[..., None, :] == k                         # [..., R, n]
  return (ranks(v)[..., None, :] * agree).sum(-1)


def rank_sum_pvalue(w, n: int) -> np.ndarray:
  """P(W >= w) for an image without the key: the exact signed-rank p-value."""
  w = np.clip(np.ceil(np.asarray(w) - 1e-9).astype(np.int64), 0, max_rank_sum(n) + 1)
  return _rank_sum_tail(n)[w]


def rank_sum_needed(n: int, alpha: float, hypotheses: int = 1) -> int:
  """The smallest W whose (Bonferroni-corrected) p-value is <= alpha; max_rank_sum(n) + 1 when
  even every bit matching is not enough (the key is too short for that alpha)."""
  ok = np.nonzero(hypotheses * _rank_sum_tail(n) <= alpha)[0]
  return int(ok[0]) if ok.size else max_rank_sum(n) + 1


def score_needed(n: int, alpha: float, hypotheses: int = 1) -> float:
  """`rank_sum_needed` as a score, W / max_rank_sum(n): what detects one image or set."""
  return rank_sum_needed(n, alpha, hypotheses) / max_rank_sum(n)


def bits_needed(n: int, alpha: float, hypotheses: int = 1) -> int:
  """The fewest matching bits out of n that can reach alpha: enough when the bits read wrong
  are the weakest readings (then W = (n-m+1) + ... + n); n + 1 when no reading can."""
  w = rank_sum_needed(n, alpha, hypotheses)
  for m in range(n + 1):
    if max_rank_sum(n) - max_rank_sum(n - m) >= w:
      return m
  return n + 1


@dataclasses.dataclass
class KeyVerdict:
  """The exact verdict on a set of images read against a key."""
  n_images: int
  n_bits: int
  matches_per_image: np.ndarray   # [N] matching bits of each image read alone
  scores_per_image: np.ndarray    # [N] W / max_rank_sum of each image read alone
  p_per_image: np.ndarray         # [N] exact p-value of each image read alone
  matches: int                    # matching bits of the set (v summed over images)
  score: float                    # W / max_rank_sum of the set
  p_value: float                  # exact p-value of the set (times `hypotheses`)
  hypotheses: int
  alpha: float
  # With an alignment search (alignment.py): the scale and offset where the set read best.
  alignment: dict | None = None

  @property
  def detected(self) -> bool:
    return self.p_value <= self.alpha

  @property
  def image_rate(self) -> float:
    """Fraction of images detected on their own at alpha."""
    return float(np.mean(self.p_per_image <= self.alpha)) if self.n_images else 0.0

  @property
  def success_rate(self) -> float:
    """`image_rate` under the name every verdict of this package uses (the zoo reads it)."""
    return self.image_rate

  @property
  def stat_mean(self) -> float:
    """Mean fraction of key bits matching per image (0.5 for images without the key)."""
    return float(np.mean(self.matches_per_image)) / self.n_bits if self.n_images else 0.0

  paper_success_rate = None  # the paper's NC has no meaning for a key

  def to_dict(self) -> dict:
    return {"test": "exact signed-rank test on the secret key", "n_images": self.n_images,
            "n_bits": self.n_bits, "matches": int(self.matches), "score": float(self.score),
            "p_value": float(self.p_value), "hypotheses": self.hypotheses,
            "alpha": self.alpha, "detected": bool(self.detected), "alignment": self.alignment,
            "image_rate": self.image_rate,
            "mean_image_matches": float(np.mean(self.matches_per_image)) if self.n_images else 0.0,
            "mean_image_score": float(np.mean(self.scores_per_image)) if self.n_images else 0.0}


def verdict(n_bits: int, w_img, matches_img, w_set: float, matches_set: int, alpha: float,
            hypotheses: int = 1, alignment: dict | None = None) -> KeyVerdict:
  """The verdict from rank sums W (each image's, and the set's) against an n-bit key: scores
  W / max_rank_sum and exact p-values, multiplied by the number of hypotheses tried."""
  w_img, most = np.asarray(w_img, np.float64), max_rank_sum(n_bits)
  return KeyVerdict(
      n_images=int(w_img.size), n_bits=n_bits, matches_per_image=np.asarray(matches_img),
      scores_per_image=w_img / most,
      p_per_image=np.minimum(1.0, hypotheses * rank_sum_pvalue(w_img, n_bits)),
      matches=int(matches_set), score=float(w_set) / most,
      p_value=float(min(1.0, hypotheses * float(rank_sum_pvalue(w_set, n_bits)))),
      hypotheses=int(hypotheses), alpha=float(alpha), alignment=alignment)


def decide(v_NxK, key, alpha: float, hypotheses: int = 1) -> KeyVerdict:
  """Exact verdict from per-image readings v [N, n] (one number per key bit and image); the
  set is read from their sum, one vote per bit."""
  v = np.asarray(v_NxK, np.float64)
  k = check_key(key)
  if v.ndim != 2 or v.shape[0] == 0:
    raise DeepwmError(f"need readings of shape [N >= 1, {k.size}], got {v.shape}")
  if not 0 < alpha < 1:
    raise DeepwmError(f"alpha must be in (0, 1), got {alpha}")
  pooled = np.where(np.isfinite(v), v, 0.0).sum(0)  # one vote per bit
  w_img = rank_sum(v, k)  # checks the number of bits read against the key's
  return verdict(k.size, w_img, matches(v, k), float(rank_sum(pooled, k)), matches(pooled, k),
                 alpha, hypotheses)
