"""Give a kit written before calibration nulls existed its null, from the run that made it.

  python -m deepwm_jax.recalibrate --run runs/qs_payload --out runs/fc_payload2/kit

Kits now store the watermark score of every calibration negative (kit.py, null.npy), so that
`verify` can rank a suspect's images among them and give innocent sets a p-value close to
uniform (verdict.py, `set_pvalue`). Older kits have only the threshold and p0, and verify falls
back to the conservative binomial bound. This rebuilds the run's calibration negatives exactly as
`deepwm run` did (clean A, M(A), clean B of the attack split, the protector's null models'
outputs, flat images), from the run's own finished checkpoints, checks them against the kit's
record (the same count and the same largest statistic), and writes a copy of the kit with the
null. The run and the original kit are only read: the checkpoints are copied to a scratch
folder first, and the new kit goes to a new folder.
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
from deepwm_jax import pipeline, verdict
from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import imitation


def negatives(cfg, run_dir: str) -> np.ndarray:
  """The run's calibration negatives, in pipeline.run's order, from its checkpoints."""
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
    r = pipeline.Run(cfg, scratch, log=lambda *_: None)
    protect = pipeline.make_pairs(cfg, "protect", d.n_protect, 1)
    attack = pipeline.make_pairs(cfg, "attack", d.n_attack, 2)
    m_attack = r.task_outputs([protect, attack])[1]  # protect first, as the run trained M
    nulls = []
    for arch in cfg.attack.null_archs:
      spec = ml_collections.ConfigDict(cfg.attack.null.to_dict())
      spec.arch = arch
      variables = r.imitate(f"null_protector_{arch}", spec, attack.a, m_attack)
      nulls.append(pipeline.predict(imitation.make_predict_fn(spec, cfg), variables, attack.a))
  flats = pipeline.flat_images(max(8, d.n_attack // 8), d.image_size, d.channels, cfg.seed + 5)
  return np.concatenate([attack.a, m_attack, attack.b, *nulls, flats])


def null_scores(kit, images: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """(statistic, score) of every image under the kit's extractor."""
  stats, scores = [], []
  w, blank = jnp.asarray(kit.watermark), jnp.asarray(kit.blank)
  for i in range(0, len(images), batch):
    r = jnp.asarray(kit.extract(images[i:i + batch]))
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


def upgrade(kit_path: str, out: str, null: np.ndarray, how: str) -> str:
  """Copies the kit to `out` with `null` stored (kit.json and manifest rewritten)."""
  kit_path, out = os.path.abspath(kit_path), os.path.abspath(out)
  if os.path.exists(out):
    raise DeepwmError(f"'{out}' already exists; give a new folder for the recalibrated kit")
  info = kit_lib.read_info(kit_path, kit_lib.KIT_KIND, kit_lib.KIT_FORMAT)
  if info.get("calibration_null"):
    raise DeepwmError(f"kit '{kit_path}' already has a calibration null")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".kit-", dir=os.path.dirname(out))
  try:
    shutil.copytree(kit_path, tmp, dirs_exist_ok=True)
    os.remove(os.path.join(tmp, "manifest.json"))
    np.save(os.path.join(tmp, kit_lib.NULL_FILE), np.sort(np.asarray(null, np.float64)))
    info["calibration"] = {**info["calibration"], "n_null": int(null.size)}
    info["calibration_null"] = kit_lib.null_record(null.size, how)
    kit_lib.publish(tmp, out, info)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def recalibrate(run_dir: str, out: str, log=print) -> str:
  """The kit of `run_dir` (run_dir/kit) with its calibration null, written to `out`."""
  kit_path = os.path.join(run_dir, "kit")
  kit = kit_lib.load_kit(kit_path)
  if os.path.exists(out):
    raise DeepwmError(f"'{out}' already exists; give a new folder for the recalibrated kit")
  cfg = ml_collections.ConfigDict(kit.config.to_dict())
  images = negatives(cfg, run_dir)
  log(f"rebuilt {len(images)} calibration negatives; scoring them")
  stats, scores = null_scores(kit, images)
  check_reproduced(kit.calibration, stats)
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  how = (f"added {stamp} by deepwm_jax.recalibrate from the run {os.path.abspath(run_dir)}: "
         f"its {stats.size} negatives rebuilt from its checkpoints (largest statistic "
         f"{np.max(stats):.6g}, as the kit records)")
  return upgrade(kit_path, out, scores, how)


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
