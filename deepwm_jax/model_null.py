"""A model-level null for a kit: rank a suspect set among independently trained null models.

  python -m deepwm_jax.model_null --kit runs/qs/kit --workdir runs/qs_mnull --out runs/qs_mnull/kit

Why (issue 9): a kit's p-value for a set without hits ranks each image among held-out
negatives per source and keeps the largest rank (verdict.rank_pvalues). That is valid for every
kind of innocent, but uniform only for the least favourable kind, and the images of one model
are not independent draws anyway. The unit an ownership claim is about is a model; so this
trains `models` null models (image-to-image networks fitted to clean pairs (A, B) of the kit's
attack split, never shown the watermark: U-Net, ResNet and plain CNN in turn, L1 and L2 loss,
seeds 3000 + i, each on crops of its own), scores `images` of each one's outputs on held-out
inputs of its own, and writes a copy of the kit with those scores (null_models.npy, one row
per model, in the manifest). `deepwm run` builds the same with the kit when the config's
`evaluate.model_null.models` > 0. A workdir's null models are reused as they are (checkpoints
named by index, crops, width and steps): share one only between kits of the same data and
seed (docs/verdicts.md). `verify` then gives a set its rank among the null models, by images
over the threshold first and mean score second (verdict.model_pvalue): for a suspect model
drawn like these, P(p <= x) <= x with p uniform on the grid 1/(models + 1). Sets of more images than `images` fall back to the per-source p-value.
Innocents unlike the population are not covered: build it from the kinds of model you expect
to verify (`--ngf`, `--steps`; `--append` adds models to a kit's model null).

The decision at alpha (1e-6 by default) still rests on the images over the threshold (the
binomial bound; a rank among J models cannot go below 1/(J + 1)), so detections and success
rates do not change; what changes is how innocent suspects' p-values are spread.
Null models are checkpointed in `workdir`, so an interrupted build resumes.
"""
import argparse
import datetime
import json
import os
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from deepwm_jax import kit as kit_lib
from deepwm_jax import pipeline, verdict
from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import imitation

NULL_ARCHS = ("unet", "resnet", "cnn")
SEED_BASE = 3000  # the false-claim study's own null models use 1000 + i: never the same
HELD_OFFSET = 20_000  # model i is scored on val crops of seed offset HELD_OFFSET + i
TRAIN_OFFSET = 30_000  # and trained on attack crops of seed offset TRAIN_OFFSET + i


def null_spec(cfg, arch: str, seed: int, steps: int, ngf: int) -> ml_collections.ConfigDict:
  """An innocent imitation model: the kit's null spec at a small width, L1 or L2 by seed."""
  spec = ml_collections.ConfigDict(cfg.evaluate.null.to_dict())
  spec.update(arch=arch, seed=seed, steps=steps, ngf=ngf, batch=16, loss="l2" if seed % 2 else "l1")
  spec.n_blocks = min(int(spec.get("n_blocks", 3)), 3)
  spec.depth = min(int(spec.get("depth", 8)), 6)
  return spec


def build(config, extract, watermark, blank, workdir: str, models: int = 24, images: int = 64,
          steps: int = 300, ngf: int = 8, archs: tuple[str, ...] = NULL_ARCHS, first: int = 0,
          log=print) -> np.ndarray:
  """The scores (models x images) of `models` null models' outputs on held-out inputs; model
  i is number first + i of the population (its seed, checkpoint name and inputs).

  `config`: the kit's config (its data and task); `extract`: images -> R's extractions (a
  kit's `extract`, or the extractor of a run that is writing its kit)."""
  if models < 1 or images < 1 or steps < 1 or ngf < 1:
    raise DeepwmError(f"model_null needs models, images, steps and ngf >= 1 (got {models}, "
                      f"{images}, {steps}, {ngf})")
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.log_every = max(25, steps // 4)
  cfg.ckpt_every = max(50, steps // 2)
  # Other crops than the run's (offsets 1-4) and the false-claim study's (101-103, 10000+,
  # 40000+). Photos loaded once: each model crops them anew.
  attack, val = pipeline.load_split(cfg, "attack"), pipeline.load_split(cfg, "val")
  runner = pipeline.Run(cfg, workdir, log=lambda *_: None)
  w, blank = jnp.asarray(watermark), jnp.asarray(blank)
  rows = []
  for i in tqdm(range(first, first + models), desc="null models",
                disable=not sys.stderr.isatty()):
    spec = null_spec(cfg, archs[i % len(archs)], SEED_BASE + i, steps, ngf)
    # Training crops of its own too: models fitted to one shared crop set vary less than
    # innocents trained on data their owners collected, so the population would be too narrow.
    # The checkpoint name says what was trained, so a workdir is only reused for the same
    # model (not for another width or length, nor the earlier shared-crop version).
    offset = TRAIN_OFFSET + i
    train = pipeline.pairs_from(cfg, attack, max(256, 4 * images), seed_offset=offset)
    variables = runner.imitate(f"model_null_{i}_crops{offset}_w{ngf}_s{steps}", spec, train.a,
                               train.b)
    # Each model on inputs of its own: a suspect is queried on other images than the null
    # models, so a shared input set would make every T_j lean the same way (seen in the
    # false-claim study: its sets ranked high or low together by which inputs they had).
    held = pipeline.pairs_from(cfg, val, images, seed_offset=HELD_OFFSET + i)
    out = pipeline.predict(imitation.make_predict_fn(spec, cfg), variables, held.a)
    rows.append(np.asarray(verdict.watermark_score(jnp.asarray(extract(out)), w, blank)))
    log(f"null model {i} ({spec.arch}, {spec.loss}): mean score {rows[-1].mean():.4f}")
  return np.stack(rows)


def describe(models: int, images: int, steps: int, ngf: int, first: int = 0) -> str:
  """How a model null was made, for kit.json."""
  return (f"{models} null models ({', '.join(NULL_ARCHS)} in turn, L1/L2, seeds "
          f"{SEED_BASE + first}+i, {steps} steps, width {ngf}), each on clean pairs of its own "
          f"from the attack split, {images} held-out outputs each")


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
  how = f"added {stamp} by deepwm_jax.model_null: {describe(models, images, steps, ngf, first)}"
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
