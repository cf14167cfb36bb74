"""Stage 2: R fine-tuned to read the watermark through imitation, H frozen.

Positives: each stage-2 surrogate's output SM(A) (and, with `stage2.weak_copies`, synthetic
partial copies), each paired with B' of the same input -> w. Negatives -> blank: clean A, M(A),
clean B, each protector null model's output and flat images. Without those negatives stage 2
creates false positives (an extractor hardened against one family fired on others' outputs,
and drew the logo on flat dark sky). The step is deepwm_jax/train/stage2.py.
"""
import numpy as np

from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.stages import common
from deepwm_jax.train import stage2


def negative_sources(cfg, pairs: pairs_lib.Pairs, m_outputs: np.ndarray, nulls: dict,
                     flat_seed: int) -> dict[str, np.ndarray]:
  """Innocent images per source: clean A, M(A), clean B, each null model's output on A, and
  flat images. `nulls`: arch -> the protector's null model (stages.attack.Imitator)."""
  d = cfg.data
  return {"clean_A": pairs.a, "M_A": m_outputs, "clean_B": pairs.b,
          **{f"null_{arch}": null(pairs.a) for arch, null in nulls.items()},
          "flat": pairs_lib.flat_images(max(8, d.n_attack // 8), d.image_size, d.channels,
                                        flat_seed)}


def negatives(cfg, attack: pairs_lib.Pairs, m_attack: np.ndarray,
              nulls: dict) -> dict[str, np.ndarray]:
  """Stage 2's negatives per source, in the order stage 2 and the calibration concatenate
  them (tools/recalibrate.py rebuilds them with this too, so the order cannot drift)."""
  return negative_sources(cfg, attack, m_attack, nulls, cfg.seed + 5)


def weak_copies(cfg, neg_sources: dict[str, np.ndarray], wm_attack: np.ndarray,
                m_attack: np.ndarray) -> np.ndarray:
  """Synthetic partial copies of the watermark for stage 2 (`stage2.weak_copies`, 0 = none).

  Imitators that stage 2 never trained against copy only part of the residual, inside their
  own imitation error: a ResNet-6 surrogate's residual correlated 0.025 with the watermark's
  where a U-Net's did 0.08. Each protector null model's output on the attack inputs (a real
  imitation error, no watermark) plus alpha times the watermark residual H(M(A)) - M(A),
  alpha ~ U[weak_copies, 1] per image, is such a copy; R is trained to read w in it while the
  same null output alone stays a negative, so the difference it learns is the residual
  itself, at a strength no lower than `weak_copies`.
  """
  alpha_min = float(cfg.stage2.get("weak_copies", 0.0))
  if alpha_min <= 0:
    return np.zeros((0, *wm_attack.shape[1:]), wm_attack.dtype)
  bases = [x for k, x in neg_sources.items() if k.startswith("null_")] or [m_attack]
  rng = np.random.default_rng([cfg.seed, 33])
  residual = wm_attack - m_attack
  return np.concatenate([
      np.clip(b + rng.uniform(alpha_min, 1.0, (len(b), 1, 1, 1)) * residual, 0.0, 1.0)
      for b in bases]).astype(wm_attack.dtype)


def train(r: common.Runner, extractor: dict, w, blank, sur_attack: np.ndarray,
          n_surrogates: int, wm_attack: np.ndarray, negatives_: np.ndarray,
          weak: np.ndarray) -> dict:
  """Stage 'stage2': fine-tunes R from `extractor`; returns R's new variables.

  `sur_attack` holds the `n_surrogates` surrogates' outputs on the attack inputs, one block
  per surrogate in the order of wm_attack.
  """
  cfg = r.cfg
  state = stage2.init_state(cfg, extractor)
  step = stage2.make_step(cfg, w, blank)
  b2 = cfg.stage2.batch
  # Each surrogate output (or weak copy) stays paired with the watermarked image of the same
  # input. The weak copies are training inputs only: the calibration's positives stay the
  # real surrogates' outputs.
  wm_paired = np.tile(wm_attack, (n_surrogates + len(weak) // len(wm_attack), 1, 1, 1))
  batches = common.sampler({"surrogate": np.concatenate([sur_attack, weak]),
                            "watermarked": wm_paired}, b2, (cfg.seed, 31), r.mesh)
  neg_batches = common.sampler({"negative": negatives_}, 2 * b2, (cfg.seed, 32), r.mesh)
  state = r.train("stage2", step, state, lambda s: {**batches(s), **neg_batches(s)},
                  cfg.stage2.steps)
  return state["extractor"]
