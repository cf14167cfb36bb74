"""Give an existing kit a model-level null (deepwm_jax/stages/model_null.py), or widen its own.

  python -m deepwm_jax.tools.model_null --kit KIT --workdir DIR --out NEW_KIT [--append]

The null models are checkpointed in DIR, so an interrupted build resumes; the kit is only read,
and the new kit is written to NEW_KIT.
"""
import argparse
import datetime
import json
import os
import sys

import numpy as np

from deepwm_jax import kit as kit_lib
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages.model_null import build, describe


def write(kit, out: str, scores: np.ndarray, how: str) -> str:
  """A copy of the kit with the model-level null (null_models.npy, recorded in kit.json)."""
  calibration = kit.calibration.with_model_null(scores)  # validates the array
  info = kit_lib.read_info(kit.path, kit_lib.KIT_KIND, kit_lib.KIT_FORMAT)
  info["calibration"] = {**info["calibration"], "null_models": list(scores.shape)}
  info["calibration_model_null"] = kit_lib.model_null_record(scores, how)
  return kit_lib.republish(kit.path, out, info, lambda folder: np.save(
      os.path.join(folder, kit_lib.MODEL_NULL_FILE), calibration.model_null),
      drop=(kit_lib.MODEL_NULL_FILE,))


def add_model_null(kit_path: str, workdir: str, out: str, models: int = 24, images: int = 64,
                   steps: int = 300, ngf: int = 8, append: bool = False, log=print) -> str:
  """`out`: the kit with a model null of `models` new null models, or with `append`, the
  kit's own model null and these appended (to widen the population, e.g. wider models)."""
  kit = kit_lib.load_kit(kit_path)
  if os.path.exists(out):  # before the training, not after it
    raise DeepwmError(f"'{out}' already exists; give a new folder for the new kit")
  if "method" in kit.info and kit.info["method"] != "deep":
    raise DeepwmError(f"kit '{kit_path}' is a {kit.info['method']} kit; a model-level null is "
                      "built for deep (H/R) kits")
  old = kit.calibration.model_null if append else None
  if append and old is None:
    raise DeepwmError(f"kit '{kit_path}' has no model-level null to append to; run without "
                      "--append first")
  if old is not None and old.shape[1] != images:
    raise DeepwmError(f"kit '{kit_path}' scores {old.shape[1]} images per null model; append "
                      f"with --images {old.shape[1]}")
  first = 0 if old is None else old.shape[0]
  scores = build(kit.config, kit.extract, kit.watermark, kit.blank, workdir, models, images,
                 steps, ngf, first=first, log=log)
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  how = f"added {stamp} by deepwm_jax.tools.model_null: {describe(models, images, steps, ngf, first)}"
  if old is not None:
    how = f"{kit.info['calibration_model_null']['how']}; then {how}"
    scores = np.concatenate([old, scores])
  return write(kit, out, scores, how)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="model_null", description=__doc__.splitlines()[0])
  p.add_argument("--kit", required=True, help="the kit to give a model-level null")
  p.add_argument("--workdir", required=True, help="where the null models are checkpointed")
  p.add_argument("--out", required=True, help="new folder for the kit with the model null")
  p.add_argument("--models", type=int, default=24, help="null models (p-value grid 1/(J+1))")
  p.add_argument("--images", type=int, default=64,
                 help="outputs scored per model: the largest set the model null speaks for")
  p.add_argument("--steps", type=int, default=300, help="training steps per null model")
  p.add_argument("--ngf", type=int, default=8, help="base width of the null models")
  p.add_argument("--append", action="store_true",
                 help="keep the kit's model null and add these models to it")
  args = p.parse_args(argv)
  try:
    path = add_model_null(args.kit, args.workdir, args.out, args.models, args.images,
                          args.steps, args.ngf, args.append,
                          log=lambda m: print(m, file=sys.stderr))
  except DeepwmError as e:
    print(f"model_null: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"kit": path}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
