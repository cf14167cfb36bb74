"""Protect the owner's own model on the owner's own inputs, in one call.

  kit = deepwm_jax.protect(model=my_model, inputs="photos/", workdir="runs/mine")
  kit = deepwm_jax.protect(model="outputs/", inputs="inputs/", workdir="runs/mine")

`model` is either a Python callable on float32 NHWC images in [0, 1] (a JAX function, a Flax
module's apply, a wrapped PyTorch or ONNX model; the package feeds it batches of crops of the
inputs, with no synthetic degradation), a 'python:module:function' to import, or a folder of
the model's outputs collected offline, with the same file names as the inputs. `inputs` is a
folder of images of any sizes, or an array of images. Training crops are cut at the config's
crop size from the images at their own scale (data.scale = 1); the kit then embeds and
verifies images of any size. Progress, checkpoints and resume are `deepwm run`'s: calling
protect() again with the same workdir picks up where it stopped.
"""
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from deepwm_jax import config as config_lib
from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import task

INPUTS_DIR = "inputs"  # where protect() writes inputs given as arrays, inside the workdir
# The keyed kit: an exact verdict for suspects of any family, one photo per verdict at full size.
DEFAULT_CONFIG = "keyed"


def owner_config(model: Callable | str, inputs: str, config: str = DEFAULT_CONFIG,
                 overrides: Mapping[str, Any] | Sequence[str] | None = None
                 ) -> ml_collections.ConfigDict:
  """The config of a protect() call: `config` (a file or a shipped config's name) pointed at
  the owner's data and model, then `overrides` ({'stage1.steps': 200} or ['stage1.steps=200'])."""
  cfg = config_lib.load(config)
  if not os.path.isdir(inputs):
    raise DeepwmError(f"inputs '{inputs}' is not a folder; give a folder of images or an array")
  cfg.data.scale = 1.0  # the images as the model serves them, not shrunk photos
  if callable(model):
    cfg.task.source = task.register_callable(model)
  elif isinstance(model, (str, os.PathLike)) and str(model).startswith("python:"):
    cfg.task.source = str(model)
  elif isinstance(model, (str, os.PathLike)) and not os.path.isdir(model):
    raise DeepwmError(f"outputs folder '{model}' does not exist; give the folder of the model's "
                      f"outputs for the inputs (same file names), or the model itself")
  elif isinstance(model, (str, os.PathLike)):
    cfg.data.source = f"pairs:{os.path.abspath(inputs)}:{os.path.abspath(model)}"
    cfg.task.source = "dataset"  # M's outputs are the collected ones
  else:
    raise DeepwmError(f"model {model!r} is neither a callable, 'python:module:function' nor a "
                      f"folder of the model's outputs")
  if not cfg.data.source.startswith("pairs:"):
    cfg.data.source = f"folder:{os.path.abspath(inputs)}"
    cfg.data.task = "none"  # the model's real inputs, not degraded crops
  items = ([f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in overrides.items()]
           if isinstance(overrides, Mapping) else list(overrides or []))
  config_lib.apply_overrides(cfg, items)
  config_lib.validate(cfg)
  return cfg


def inputs_folder(inputs, workdir: str) -> str:
  """`inputs` as a folder: a folder as it is; an array (NHWC, or a list of HWC images)
  written once as PNGs into workdir/inputs (8-bit, what a served image is)."""
  if isinstance(inputs, (str, os.PathLike)):
    return str(inputs)
  images = list(inputs) if not isinstance(inputs, np.ndarray) else list(np.asarray(inputs))
  if not images:
    raise DeepwmError("inputs is empty; give at least 3 images (protect, attack and val)")
  path = os.path.join(workdir, INPUTS_DIR)
  names = [f"{i:05d}.png" for i in range(len(images))]
  if os.path.isdir(path) and sorted(os.listdir(path)) == names:
    return path  # written by an earlier call: resume on the same files
  imageio.write_images(path, [np.asarray(i, np.float32) for i in images], names)
  return path


def protect(model, inputs, workdir: str, config: str = DEFAULT_CONFIG,
            overrides: Mapping[str, Any] | Sequence[str] | None = None, log=print):
  """Runs the protection pipeline on the owner's model and inputs; returns the kit
  (module docstring). The report and kit are in `workdir` as after `deepwm run`."""
  from deepwm_jax import kit as kit_lib, pipeline
  os.makedirs(workdir, exist_ok=True)
  cfg = owner_config(model, inputs_folder(inputs, workdir), config, overrides)
  pipeline.run(cfg, workdir, log=log)
  return kit_lib.load_kit(os.path.join(workdir, "kit"))
