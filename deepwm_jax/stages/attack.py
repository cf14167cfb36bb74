"""The attack stage 2 hardens R against, and the protector's own null models.

- Surrogates SM: imitators trained on (A, B'), the attacker's view of the protected API, one
  per spec of `config.stage2_surrogates` (attack.surrogate, plus attack.extra_surrogate_archs).
- The protector's null models: the same kind of imitator trained on clean (A, M(A)), one per
  architecture in attack.null_archs. They never saw the watermark; stage 2 and the calibration
  use their outputs as negatives, so that R learns the watermark rather than the look of one
  architecture's outputs.
"""
import dataclasses

import ml_collections
import numpy as np

from deepwm_jax import config as config_lib
from deepwm_jax.stages import common
from deepwm_jax.train import imitation


@dataclasses.dataclass
class Imitator:
  """A trained image-to-image model: its spec, its variables and a jitted predict."""
  spec: ml_collections.ConfigDict
  variables: dict
  predict_fn: object

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return common.predict(self.predict_fn, self.variables, x)


def imitator(r: common.Runner, name: str, spec, x: np.ndarray, y: np.ndarray) -> Imitator:
  """Trains (or restores) the model x -> y of `spec` as stage `name`."""
  return Imitator(spec, r.imitate(name, spec, x, y), imitation.make_predict_fn(spec, r.cfg))


def surrogates(r: common.Runner, a: np.ndarray, b_wm: np.ndarray) -> dict[str, Imitator]:
  """Stage 2's surrogates, trained on (A, B') of the attack split: checkpoint name -> model."""
  return {name: imitator(r, name, spec, a, b_wm)
          for name, spec in config_lib.stage2_surrogates(r.cfg).items()}


def protector_nulls(r: common.Runner, a: np.ndarray, m_a: np.ndarray) -> dict[str, Imitator]:
  """The protector's null models, trained on clean (A, M(A)): arch -> model."""
  nulls = {}
  for arch in r.cfg.attack.null_archs:
    spec = ml_collections.ConfigDict(r.cfg.attack.null.to_dict())
    spec.arch = arch
    nulls[arch] = imitator(r, f"null_protector_{arch}", spec, a, m_a)
  return nulls
