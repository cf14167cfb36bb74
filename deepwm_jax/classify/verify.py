"""Verification: query a suspect model with every registered user's key images, and decide.

For each user u with K key images, the watermark accuracy is the fraction the suspect sends to
the additional class. Its p-value is P(X >= hits) for X ~ Binomial(K, p0), where p0 is the
rate at which independently trained clean models (the calibration nulls) send key images to
that class, estimated conservatively as (hits + 1) / (queries + 1). A user is detected when the
p-value is below alpha and most keys hit (min_accuracy: a copy of another user may send a few
of u's keys to the class, which clean models never do, so significance alone is not a claim).
The leaked copy is attributed to a user only when exactly that one user is detected: a model
that sends every input to the watermark class "detects" everyone and is attributed to no one.
"""
import dataclasses
from typing import Callable

import numpy as np
from scipy import stats

from deepwm_jax.classify import keys as keys_lib
from deepwm_jax.errors import DeepwmError


@dataclasses.dataclass(frozen=True)
class NullCalibration:
  p0: float         # per key image: chance a clean model sends it to the watermark class
  n_queries: int    # key images queried on calibration nulls
  n_hits: int
  n_models: int

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "NullCalibration":
    c = cls(float(d["p0"]), int(d["n_queries"]), int(d["n_hits"]), int(d["n_models"]))
    if not 0 < c.p0 <= 1:
      raise DeepwmError(f"kit calibration has p0={c.p0}; the kit is corrupt, re-create it")
    return c


def calibrate(hits_and_counts: list[tuple[int, int]], n_models: int) -> NullCalibration:
  hits = int(sum(h for h, _ in hits_and_counts))
  n = int(sum(c for _, c in hits_and_counts))
  if n == 0:
    raise DeepwmError("calibration needs key queries on at least one clean model")
  return NullCalibration((hits + 1) / (n + 1), n, hits, n_models)


def p_value(hits: int, n: int, p0: float) -> float:
  """P(X >= hits), X ~ Binomial(n, p0): 1 for no hits, tiny when all n hit."""
  if hits <= 0:
    return 1.0
  return float(stats.binom.sf(hits - 1, n, p0))


def query(classes_fn: Callable[[np.ndarray], np.ndarray], user_keys: dict[str, np.ndarray],
          watermark_class: int) -> dict[str, tuple[int, int]]:
  """(hits, n) per user: how many of the user's key images land in the watermark class."""
  out = {}
  for user, k in user_keys.items():
    pred = np.asarray(classes_fn(keys_lib.to_float(k)))
    out[user] = (int(np.sum(pred == watermark_class)), int(len(k)))
  return out


def decide(counts: dict[str, tuple[int, int]], user_keys: dict[str, np.ndarray],
           calibration: NullCalibration, alpha: float, min_accuracy: float,
           claimed_user: str | None = None) -> dict:
  """The verdict for one suspect: per-user evidence, the attributed user, the claim."""
  if claimed_user is not None and claimed_user not in counts:
    raise DeepwmError(f"user '{claimed_user}' is not registered in this kit (registered: "
                      f"{', '.join(sorted(counts))}); pass one of them to --user")
  rows = []
  for user, (hits, n) in counts.items():
    acc = hits / n
    p = p_value(hits, n, calibration.p0)
    rows.append({"user": user, "watermark_accuracy": acc, "hits": hits, "n_keys": n,
                 "p_value": p, "detected": bool(p < alpha and acc >= min_accuracy),
                 "fingerprint_auth_rate": float(np.mean(keys_lib.authenticate(user_keys[user],
                                                                              user)))})
  detected = [r["user"] for r in rows if r["detected"]]
  identified = detected[0] if len(detected) == 1 else None
  out = {"detected": bool(detected), "identified_user": identified, "detected_users": detected,
         "users": rows, "alpha": alpha, "min_accuracy": min_accuracy, "p0": calibration.p0}
  if claimed_user is not None:
    row = next(r for r in rows if r["user"] == claimed_user)
    out.update(claimed_user=claimed_user, claim_confirmed=bool(
        identified == claimed_user and row["fingerprint_auth_rate"] == 1.0))
  return out
