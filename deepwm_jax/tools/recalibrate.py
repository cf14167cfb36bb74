"""Give a kit of an earlier version its held-out calibration null, from the run that made it.

  python -m deepwm_jax.tools.recalibrate --run runs/qs_payload --out runs/fc_payload2/kit

Kits now store the watermark scores of held-out calibration negatives, per source (kit.py,
null.npz), so that `verify` can rank a suspect's images among them and give innocent sets a
valid p-value (verdict.py, `rank_pvalues`, `set_pvalue`), and take p0 from them too. Kits of
an earlier version have the stage-2 negatives' scores pooled (null.npy) or no null at all (verify
then falls back to the conservative binomial bound). This rebuilds the run's stage-2 negatives
exactly as `deepwm run` did (clean A, M(A), clean B of the attack split, the protector's null
models' outputs, flat images) from the run's own finished checkpoints, checks them against the
kit's record (the same count and the same largest statistic), then builds the held-out negatives
as `deepwm run` does now (stages/calibrate.py) and writes a copy of the kit with them
(the image and, for payload kits, the bit calibration's p0 and held-out record). The run and the
original kit are only read: the checkpoints are copied to a scratch folder first, and the new
kit goes to a new folder.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile

import jax.numpy as jnp
import ml_collections
import numpy as np

from deepwm_jax import kit as kit_lib
from deepwm_jax import payload as payload_lib
from deepwm_jax import verdict
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.stages import attack as attack_lib
from deepwm_jax.stages import calibrate, common, harden, task
from deepwm_jax.errors import DeepwmError


def negatives(cfg, run_dir: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The run's stage-2 negatives, in the order deepwm run uses, and its held-out negatives per
  source, from its checkpoints."""
  d = cfg.data
  src = str(cfg.task.source)
  trained = src not in ("identity", "dataset") and not src.startswith("python:")
  needed = ["task"] if trained else []
  needed += [f"null_protector_{a}" for a in cfg.attack.null_archs]
  missing = [n for n in needed
             if not os.path.isdir(os.path.join(run_dir, "checkpoints", n))]
  if missing:
    raise DeepwmError(f"run '{run_dir}' has no finished checkpoint {missing[0]}; give the "
                      "workdir of the `deepwm run` that wrote the kit")
  with tempfile.TemporaryDirectory(prefix="recalibrate-") as scratch:
    for n in needed:  # read-only use of the run: restore from copies
      shutil.copytree(os.path.join(run_dir, "checkpoints", n),
                      os.path.join(scratch, "checkpoints", n))
    r = common.Runner(cfg, scratch, log=lambda *_: None)
    protect = pairs_lib.make_pairs(cfg, "protect", d.n_protect, 1)
    attack = pairs_lib.make_pairs(cfg, "attack", d.n_attack, 2)
    m_attack = task.outputs(r, [attack], train=protect)[0]  # M as the run trained it
    nulls = attack_lib.protector_nulls(r, attack.a, m_attack)
    stage2 = harden.negatives(cfg, attack, m_attack, nulls)
    held = calibrate.heldout_negatives(r, protect, nulls)
  return np.concatenate(list(stage2.values())), held


def extract_all(kit, images: np.ndarray, batch: int = 512) -> np.ndarray:
  """The kit's extractor on every image, in batches (the negatives run to thousands)."""
  return np.concatenate([np.asarray(kit.extract(images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def null_scores(kit, extractions: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """(statistic, score) of every extraction R(x) against the kit's watermark."""
  w, blank = jnp.asarray(kit.watermark), jnp.asarray(kit.blank)
  stats, scores = [], []
  for i in range(0, len(extractions), batch):
    r = jnp.asarray(extractions[i:i + batch])
    stats.append(np.asarray(verdict.watermark_statistic(r, w, blank)))
    scores.append(np.asarray(verdict.watermark_score(r, w, blank)))
  return np.concatenate(stats), np.concatenate(scores)


def check_reproduced(calibration: verdict.Calibration, stats: np.ndarray) -> None:
  """The rebuilt negatives must be the kit's: same count, same largest statistic."""
  if stats.size != calibration.n_negatives or not np.isclose(
      float(np.max(stats)), calibration.max_negative, rtol=1e-4, atol=1e-6):
    raise DeepwmError(
        f"the rebuilt negatives ({stats.size}, largest statistic {np.max(stats):.6g}) are not "
        f"the kit's ({calibration.n_negatives}, {calibration.max_negative:.6g}); this run did "
        "not write this kit, or the data or code changed since")


def upgrade(kit_path: str, out: str, calibration: verdict.Calibration, how: str,
            bit_calibration: verdict.Calibration | None = None) -> str:
  """Copies the kit to `out` with `calibration` (and its null) in place of the kit's own
  (kit.json and manifest rewritten; a pooled null.npy of an earlier version is dropped)."""
  info = kit_lib.read_info(kit_path, kit_lib.KIT_KIND, kit_lib.KIT_FORMAT)
  if (info.get("calibration_null") or {}).get("sources"):
    raise DeepwmError(f"kit '{kit_path}' already has a held-out calibration null")
  info["calibration"] = calibration.to_dict()
  info["calibration_null"] = kit_lib.null_record(calibration.null, how)
  if bit_calibration is not None:
    info["payload"] = {**info["payload"], "calibration": bit_calibration.to_dict()}
  return kit_lib.republish(kit_path, out, info,
                           lambda folder: kit_lib.save_null(folder, calibration.null),
                           drop=(kit_lib.NULL_FILE,))


def recalibrate(run_dir: str, out: str, log=print) -> str:
  """The kit of `run_dir` (run_dir/kit) with its held-out calibration null, written to `out`."""
  kit_path = os.path.join(run_dir, "kit")
  kit = kit_lib.load_kit(kit_path)
  kit_lib.require_calibrated(kit, "python -m deepwm_jax.tools.recalibrate")
  if os.path.exists(out):
    raise DeepwmError(f"'{out}' already exists; give a new folder for the recalibrated kit")
  if isinstance(kit.calibration.null, dict):
    raise DeepwmError(f"kit '{kit_path}' already has a held-out calibration null; it needs no "
                      "recalibration")
  cfg = ml_collections.ConfigDict(kit.config.to_dict())
  images, held = negatives(cfg, run_dir)
  log(f"rebuilt {len(images)} calibration negatives and {sum(map(len, held.values()))} "
      "held-out ones; scoring them")
  stats, _ = null_scores(kit, extract_all(kit, images))
  check_reproduced(kit.calibration, stats)
  r_held = {k: extract_all(kit, x) for k, x in held.items()}  # once: payload bits reuse them
  scored = {k: null_scores(kit, r) for k, r in r_held.items()}
  calibration = kit.calibration.with_heldout({k: v[0] for k, v in scored.items()},
                                             {k: v[1] for k, v in scored.items()})
  bit_calibration = None
  if "payload" in kit.info:
    pay, bit_cal = payload_lib.from_kit_info(kit.info)
    bit_calibration = payload_lib.with_heldout_bits(
        pay, bit_cal, pay.soft_bits(np.concatenate(list(r_held.values()))))
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  how = (f"added {stamp} by deepwm_jax.tools.recalibrate from the run {os.path.abspath(run_dir)}: "
         f"its {stats.size} stage-2 negatives rebuilt from its checkpoints (largest statistic "
         f"{np.max(stats):.6g}, as the kit records), held-out negatives built as `deepwm run` "
         "does")
  return upgrade(kit_path, out, calibration, how, bit_calibration)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="recalibrate", description=__doc__.splitlines()[0])
  p.add_argument("--run", required=True, help="workdir of the `deepwm run` that wrote the kit")
  p.add_argument("--out", required=True, help="new folder for the kit with its null")
  args = p.parse_args(argv)
  try:
    path = recalibrate(args.run, args.out, log=lambda m: print(m, file=sys.stderr))
  except DeepwmError as e:
    print(f"recalibrate: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"kit": path}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
