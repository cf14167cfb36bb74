"""Notebook-sized helpers over a finished `deepwm run`: its data, its models, an attack.

`pipeline.run` trains everything and keeps its arrays to itself; these functions give a notebook
(or any script) the same arrays and networks through public names, so that it can look at
A, B and B', train its own attacker and save or copy a kit without reaching into the pipeline:

  rep = pipeline.run(cfg, workdir)
  kit = deepwm_jax.load_kit(f"{workdir}/kit")
  val = api.pairs(cfg, "val")                    # the held-out (A, B) the report measured on
  M = api.task_model(cfg, workdir)               # the protected model
  b_marked = kit.embed(M(val.a))                 # what the protected API serves
  sm = api.train_imitator(cfg, workdir, "attack", x, y, arch="unet", steps=600)
  kit.verify(sm(val.a))
"""
import dataclasses
import importlib
import json
import os
import zlib
from typing import Callable

import jax
import ml_collections
import numpy as np

from deepwm_jax import kit as kit_lib
from deepwm_jax import models
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import common
from deepwm_jax.train import imitation, loop

# Split -> the seed offset `pipeline.run` draws it with (tests/test_notebook.py checks that
# these give the very images the run's report was measured on).
SPLITS = pairs_lib.SPLIT_OFFSETS


def pairs(cfg, split: str, n: int | None = None) -> pairs_lib.Pairs:
  """The (A, B) pairs of one split, exactly as `pipeline.run(cfg, ...)` made them.

  `n` (default: the config's count for the split) draws that many instead; the first images
  may then differ from the run's, so keep the default when comparing with the report.
  """
  if split not in SPLITS:
    raise DeepwmError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
  n = int(cfg.data[f"n_{split}"]) if n is None else int(n)
  if n < 1:
    raise DeepwmError(f"pairs(n={n}); ask for at least one image")
  return pairs_lib.make_pairs(cfg, split, n, SPLITS[split])


@dataclasses.dataclass
class ImageModel:
  """A trained image-to-image network; call it on float32 NHWC images in [0, 1]."""
  name: str
  spec: ml_collections.ConfigDict
  variables: dict
  predict_fn: Callable

  def __repr__(self):
    s = self.spec
    return (f"ImageModel({self.name!r}, arch={s.arch}, ngf={s.ngf}, loss={s.loss}, "
            f"steps={s.steps}, params={models.count_params(self.variables):,})")

  def __call__(self, images) -> np.ndarray:
    return common.predict(self.predict_fn, self.variables, np.asarray(images, np.float32))


def _image_model(cfg, name, spec, variables) -> ImageModel:
  return ImageModel(name, spec, variables, imitation.make_predict_fn(spec, cfg))


def task_model(cfg, workdir: str):
  """The protected model M of a finished run in `workdir`, as a callable on images.

  A config whose `task.source` is 'identity' or 'python:module:function' gets that callable
  back (the run protected its outputs and trained no network).
  """
  src = cfg.task.source
  if src == "identity":
    return lambda images: np.asarray(images, np.float32)
  if src.startswith("python:"):
    module, _, attr = src[len("python:"):].partition(":")
    try:
      return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
      raise DeepwmError(f"task.source {src!r} cannot be imported ({e}); give "
                        f"python:package.module:function") from None
  if src != "train":
    raise DeepwmError(f"task.source {src!r} protects images, not a model's outputs, so there is "
                      f"no task model to call; use api.pairs(cfg, split).b for its images")
  return _restore_model(cfg, workdir, "task", cfg.task)


def train_imitator(cfg, workdir: str, name: str, x, y, log=print, **spec) -> ImageModel:
  """Trains a model x -> y by imitation (a surrogate attacker on (A, B'), or a null model on
  clean pairs) and returns it.

  `spec` overrides `cfg.attack.surrogate`'s fields (arch, ngf, loss, steps, batch, seed, ...).
  The model is checkpointed in `workdir` under `name` plus a hash of its spec and data, so
  re-running the same call resumes or returns the finished model, and a changed call trains a
  new one instead of reusing a stale one.
  """
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  if x.shape != y.shape or x.ndim != 4:
    raise DeepwmError(f"train_imitator needs inputs and targets of the same NHWC shape, got "
                      f"{x.shape} and {y.shape}")
  s = ml_collections.ConfigDict(cfg.attack.surrogate.to_dict())
  unknown = sorted(set(spec) - set(s))
  if unknown:
    raise DeepwmError(f"train_imitator: unknown spec field(s) {unknown}; use fields of "
                      f"attack.surrogate: {', '.join(sorted(s))}")
  s.update(spec)
  tag = zlib.crc32(json.dumps(s.to_dict(), sort_keys=True, default=str).encode()
                   + x.tobytes() + y.tobytes())
  stage = f"{name}-{tag:08x}"
  variables = common.Runner(cfg, workdir, log).imitate(stage, s, x, y)
  return _image_model(cfg, stage, s, variables)


def _restore_model(cfg, workdir: str, stage: str, spec) -> ImageModel:
  like = imitation.init_state(spec, cfg, jax.random.PRNGKey(0), spec.steps)
  state = loop.finished_state(os.path.join(workdir, "checkpoints", stage), spec.steps, like)
  if state is None:
    raise DeepwmError(f"workdir '{workdir}' has no finished '{stage}' model for this config; "
                      f"run pipeline.run(cfg, '{workdir}') first")
  return _image_model(cfg, stage, spec, state["model"])


def save_kit(kit: "kit_lib.Kit", path: str) -> str:
  """Writes a loaded kit to `path` (orbax checkpoint, kit.json, manifest), keeping its owner.

  Refuses to replace an existing folder: a kit is evidence, and overwriting one by accident
  would lose it.
  """
  if os.path.exists(path):
    raise DeepwmError(f"'{path}' already exists; save the kit to a new folder or remove that "
                      f"one first")
  extra = {"payload": kit.info["payload"]} if "payload" in kit.info else {}
  if "calibration_model_null" in kit.info:  # kept with the calibration, and how it was made
    extra["model_null_how"] = kit.info["calibration_model_null"]["how"]
  return kit_lib.write_kit(path, kit.config, kit.embedder_vars, kit.extractor_vars,
                           kit.watermark, kit.blank, kit.calibration, owner=kit.info.get("owner"),
                           **extra)


def amplified_difference(marked, clean, gain: float = 10.0) -> np.ndarray:
  """|B' - B| x gain, clipped to [0, 1]: makes the (invisible) watermark residual visible."""
  return np.clip(gain * np.abs(np.asarray(marked) - np.asarray(clean)), 0.0, 1.0)
