"""The owner's secret key and the exact test on it: a false-claim bound that holds for any model.

A keyed kit's extractor never sees the owner's key: it is trained over random keys, and the
owner's key k (n signs) is drawn at random afterwards and kept in the kit. Reading a suspect
image gives n numbers v (one per key bit) that are a function of the image and of networks
trained without k. For an image that does not carry k, whatever model made it, v is therefore
independent of k, and since k is uniform over {-1, +1}^n:

  matches = #{j : sign(v_j) = k_j}  ~  Binomial(n, 1/2)  exactly,

so P(matches >= m) is an exact p-value. Nothing here is calibrated, and nothing depends on the
suspect's architecture, training data, output range or loss. Two rules keep it exact:
- a set of images is read by summing v over the images first (one vote per key bit): the n
  signs of the sum are still a function of the images alone. Counting matches image by image
  and adding them up would not be exact, because an innocent model that always returns the
  same bits would repeat one draw N times;
- a bit whose v is exactly 0 (or not finite) counts as a mismatch, which only makes the test
  more conservative.
When a reader searches over several hypotheses (shifts, scales) and keeps the best, the p-value
is multiplied by the number of hypotheses (Bonferroni), which keeps the bound.
"""
import dataclasses
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
  """P(Binomial(n, 1/2) >= m): the exact p-value of m matching bits out of n."""
  return scipy_stats.binom.sf(np.asarray(m) - 1, n, 0.5)


def bits_needed(n: int, alpha: float, hypotheses: int = 1) -> int:
  """The fewest matching bits out of n whose (Bonferroni-corrected) p-value is <= alpha; n + 1
  when even n of n is not enough (the key is too short for that alpha)."""
  for m in range(n + 1):
    if hypotheses * float(binomial_pvalue(m, n)) <= alpha:
      return m
  return n + 1


@dataclasses.dataclass
class KeyVerdict:
  """The exact verdict on a set of images read against a key."""
  n_images: int
  n_bits: int
  matches_per_image: np.ndarray   # [N] matching bits of each image read alone
  p_per_image: np.ndarray         # [N] exact p-value of each image read alone
  matches: int                    # matching bits of the set (v summed over images)
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
    return {"test": "exact binomial on the secret key", "n_images": self.n_images,
            "n_bits": self.n_bits, "matches": int(self.matches),
            "p_value": float(self.p_value), "hypotheses": self.hypotheses,
            "alpha": self.alpha, "detected": bool(self.detected), "alignment": self.alignment,
            "image_rate": self.image_rate,
            "mean_image_matches": float(np.mean(self.matches_per_image)) if self.n_images else 0.0}


def decide(v_NxK, key, alpha: float, hypotheses: int = 1) -> KeyVerdict:
  """Exact verdict from per-image readings v [N, n] (one number per key bit and image)."""
  v = np.asarray(v_NxK, np.float64)
  k = check_key(key)
  if v.ndim != 2 or v.shape[0] == 0:
    raise DeepwmError(f"need readings of shape [N >= 1, {k.size}], got {v.shape}")
  if not 0 < alpha < 1:
    raise DeepwmError(f"alpha must be in (0, 1), got {alpha}")
  n = k.size
  per = matches(v, k)
  pooled = int(matches(np.where(np.isfinite(v), v, 0.0).sum(0), k))  # one vote per bit
  p_img = np.minimum(1.0, hypotheses * binomial_pvalue(per, n))
  p_set = float(min(1.0, hypotheses * float(binomial_pvalue(pooled, n))))
  return KeyVerdict(int(v.shape[0]), n, per, p_img, pooled, p_set, int(hypotheses), float(alpha))
