"""The calibration: the per-image threshold and the nulls `verify` ranks a suspect against.

On images the evaluation never uses (the attack split): the threshold sits above the stage-2
negatives' statistics plus a margin (verdict.calibrate); held-out negatives of every kind stage
2 trains on, that it never saw, bound p0 too and are stored per source (the per-source null);
and, with evaluate.model_null, small null models trained on clean pairs of their own give the
model-level null (stages/model_null.py). docs/verdicts.md explains how `verify` uses each.
"""
import dataclasses
import time

import jax.numpy as jnp
import numpy as np

from deepwm_jax import payload as payload_lib
from deepwm_jax import verdict
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.stages import common, harden, model_null, task
from deepwm_jax.train import stage1


@dataclasses.dataclass
class Result:
  calibration: verdict.Calibration
  bit_calibration: "verdict.Calibration | None"  # of a bit payload, else None
  max_negative_by_source: dict[str, float]
  warnings: list[str]
  model_null_how: str


def heldout_negatives(r: common.Runner, protect: pairs_lib.Pairs,
                      nulls: dict) -> dict[str, np.ndarray]:
  """Calibration negatives of every kind stage 2 trains R on, that it never saw, per source.

  Stage 2 fits R to say "blank" on its negatives, so their statistics understate what R does on
  a new innocent image: the protector's own null ResNet, at most 0.21 on its stage-2 inputs,
  was measured at 0.69 on one of 1024 fresh crops. These are fresh crops of the attack split,
  M's outputs on them, the same null models' outputs on them, and other flat images.
  """
  cfg = r.cfg
  fresh = pairs_lib.make_pairs(cfg, "attack", max(16, cfg.data.n_attack // 2),
                               pairs_lib.HELDOUT)
  return harden.negative_sources(cfg, fresh, task.outputs(r, [fresh], train=protect)[0], nulls,
                                 cfg.seed + 6)


def run(r: common.Runner, extractor: dict, wm, neg_sources: dict[str, np.ndarray],
        positives: np.ndarray, protect: pairs_lib.Pairs, nulls: dict) -> Result:
  """Calibrates R (`extractor`) on the stage-2 negatives and `positives` (B' and the stage-2
  surrogates' outputs on the attack split), then adds the held-out and model-level nulls."""
  cfg, log, ev = r.cfg, r.log, r.cfg.evaluate
  extract = stage1.make_extract_fn(cfg)
  negatives = np.concatenate(list(neg_sources.values()))
  r_neg = common.predict(extract, extractor, negatives)
  r_pos = common.predict(extract, extractor, positives)
  stat = lambda x: np.asarray(verdict.watermark_statistic(
      jnp.asarray(x), jnp.asarray(wm.w), jnp.asarray(wm.blank)))
  neg_stats = stat(r_neg)
  calibration = verdict.calibrate(neg_stats, stat(r_pos), margin=ev.margin,
                                  fpr=ev.per_image_fpr)
  # Which kind of negative the threshold has to clear (report.json, and the warning below).
  bounds = np.cumsum([0] + [len(x) for x in neg_sources.values()])
  neg_max = {k: float(np.max(neg_stats[lo:hi]))
             for k, lo, hi in zip(neg_sources, bounds[:-1], bounds[1:])}
  warns = []
  if calibration.threshold > 1.0:  # a kit that can never detect anything: say so loudly
    warns.append(
        f"R reads the watermark in some calibration negatives (largest statistic "
        f"{calibration.max_negative:.3f}; per source "
        f"{', '.join(f'{k} {v:.3f}' for k, v in neg_max.items())}), so this kit's threshold "
        "is above 1 and it will detect nothing; if only a few negatives are that high, set "
        "evaluate.per_image_fpr (e.g. 1e-3), else give stage 2 more negatives or drop "
        "surrogates that barely copy the watermark")
    log(f"warning: {warns[-1]}")
  # p0 also from negatives stage 2 never saw, and the kit keeps their scores per source:
  # verify ranks a suspect's images among them (verdict.rank_pvalues).
  r_held = {k: common.predict(extract, extractor, x)
            for k, x in heldout_negatives(r, protect, nulls).items()}
  score = lambda x: np.asarray(verdict.watermark_score(
      jnp.asarray(x), jnp.asarray(wm.w), jnp.asarray(wm.blank)))
  calibration = calibration.with_heldout({k: stat(v) for k, v in r_held.items()},
                                         {k: score(v) for k, v in r_held.items()})
  pay = wm.payload
  bit_calibration = None if pay is None else payload_lib.calibrate_bits(
      pay, pay.soft_bits(r_neg), pay.soft_bits(r_pos), margin=ev.margin,
      heldout_soft=pay.soft_bits(np.concatenate(list(r_held.values()))))
  del r_neg, r_pos, r_held
  how, mn = "written with the kit", ev.get("model_null", None)
  if mn is not None and mn.models > 0:  # suspects ranked among null models
    t = time.time()
    calibration = calibration.with_model_null(model_null.build(
        cfg, lambda x: common.predict(extract, extractor, x), wm.w, wm.blank, r.workdir,
        mn.models, mn.images, mn.steps, mn.ngf, log=log))
    how = f"built by deepwm run: {model_null.describe(**mn.to_dict())}"
    r.timing["model_null"] = round(time.time() - t, 2)
  return Result(calibration, bit_calibration, neg_max, warns, how)
