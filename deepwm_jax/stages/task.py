"""The target model M: what the owner serves, and what the barrier watermarks.

`task.source` says where M comes from: 'train' (a U-Net trained here on the protect split's
pairs), 'identity' (the images themselves: a data set), 'dataset' (the data set's targets B)
or 'python:module:function' (the owner's own callable on NHWC float32 images in [0, 1]).
"""
import dataclasses
import importlib

import numpy as np

from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import common
from deepwm_jax.train import imitation


@dataclasses.dataclass
class Splits:
  """The three disjoint splits of a run, as (A, B) pairs: the owner's training data, the
  attacker's queries and the held-out images every number in the report is measured on."""
  protect: pairs_lib.Pairs
  attack: pairs_lib.Pairs
  val: pairs_lib.Pairs


def load_splits(cfg) -> Splits:
  d = cfg.data
  return Splits(pairs_lib.make_pairs(cfg, "protect", d.n_protect, pairs_lib.PROTECT),
                pairs_lib.make_pairs(cfg, "attack", d.n_attack, pairs_lib.ATTACK),
                pairs_lib.make_pairs(cfg, "val", d.n_val, pairs_lib.VAL))


def outputs(r: common.Runner, pairs_list, train: pairs_lib.Pairs | None = None):
  """M(A) for each set of pairs: the outputs the owner serves and H watermarks.

  A trained M learns from `train` (default: the first pairs, the protect split); callers
  that only need M on other images pass it here instead of predicting on it for nothing.
  """
  cfg = r.cfg
  src = cfg.task.source
  if src == "identity":
    return [p.a for p in pairs_list]
  if src == "dataset":  # the published data set's targets themselves (examples/dataset.py)
    return [p.b for p in pairs_list]
  if src.startswith("python:"):
    fn = import_callable(src[len("python:"):])
    return [checked_outputs(fn(p.a), p.a.shape, src) for p in pairs_list]
  protect = pairs_list[0] if train is None else train
  variables = train_model(r, protect)
  fn = imitation.make_predict_fn(cfg.task, cfg)
  return [common.predict(fn, variables, p.a) for p in pairs_list]


def train_model(r: common.Runner, protect: pairs_lib.Pairs):
  """The task network M trained on the protect split (stage 'task'); its variables."""
  return r.imitate("task", r.cfg.task, protect.a, protect.b)


def import_callable(path: str):
  """`module:function` -> the function (task.source='python:module:function')."""
  mod, _, attr = path.partition(":")
  try:
    return getattr(importlib.import_module(mod), attr)
  except (ImportError, AttributeError) as e:
    raise DeepwmError(f"task.source 'python:{path}' cannot be imported ({e}); give "
                      f"python:package.module:function, importable from the current directory")


def checked_outputs(y, shape, src):
  """A callable model's outputs as float32 in [0, 1], refused when the shape is wrong."""
  y = np.asarray(y, np.float32)
  if y.shape != shape:
    raise DeepwmError(f"task model {src} returned shape {y.shape} for inputs {shape}; it must "
                      f"map NHWC images in [0, 1] to images of the same shape")
  return np.clip(y, 0, 1)
