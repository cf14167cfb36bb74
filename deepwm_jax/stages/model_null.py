"""A model-level null for a kit: rank a suspect set among independently trained null models.

Why: a kit's p-value for a set without hits ranks each image among held-out
negatives per source and keeps the largest rank (verdict.rank_pvalues). That is valid for every
kind of innocent, but uniform only for the least favourable kind, and the images of one model
are not independent draws anyway. The unit an ownership claim is about is a model; so this
trains `models` null models (image-to-image networks fitted to clean pairs (A, B) of the kit's
attack split, never shown the watermark: U-Net, ResNet and plain CNN in turn, L1 and L2 loss,
seeds 3000 + i, each on crops of its own) and scores `images` of each one's outputs on
held-out inputs of its own; the kit stores those scores (null_models.npy, one row per model).
`deepwm run` builds it with the kit when the config's `evaluate.model_null.models` > 0;
`python -m deepwm_jax.tools.model_null` adds one to an existing kit. A workdir's null models are reused as they are (checkpoints
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
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from deepwm_jax import verdict
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import common
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
  attack, val = pairs_lib.load_split(cfg, "attack"), pairs_lib.load_split(cfg, "val")
  runner = common.Runner(cfg, workdir, log=lambda *_: None)
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
    train = pairs_lib.pairs_from(cfg, attack, max(256, 4 * images), seed_offset=offset)
    variables = runner.imitate(f"model_null_{i}_crops{offset}_w{ngf}_s{steps}", spec, train.a,
                               train.b)
    # Each model on inputs of its own: a suspect is queried on other images than the null
    # models, so a shared input set would make every T_j lean the same way (seen in the
    # false-claim study: its sets ranked high or low together by which inputs they had).
    held = pairs_lib.pairs_from(cfg, val, images, seed_offset=HELD_OFFSET + i)
    out = common.predict(imitation.make_predict_fn(spec, cfg), variables, held.a)
    rows.append(np.asarray(verdict.watermark_score(jnp.asarray(extract(out)), w, blank)))
    log(f"null model {i} ({spec.arch}, {spec.loss}): mean score {rows[-1].mean():.4f}")
  return np.stack(rows)


def describe(models: int, images: int, steps: int, ngf: int, first: int = 0) -> str:
  """How a model null was made, for kit.json."""
  return (f"{models} null models ({', '.join(NULL_ARCHS)} in turn, L1/L2, seeds "
          f"{SEED_BASE + first}+i, {steps} steps, width {ngf}), each on clean pairs of its own "
          f"from the attack split, {images} held-out outputs each")
