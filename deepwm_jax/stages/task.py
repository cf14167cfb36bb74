"""The target model M: what the owner serves, and what the barrier watermarks.

`task.source` says where M comes from: 'train' (a U-Net trained here on the protect split's
pairs), 'identity' (the images themselves: a data set), 'dataset' (the data set's targets B,
or the owner's collected outputs of a 'pairs:' source), 'python:module:function' (the owner's
own callable on NHWC float32 images in [0, 1], imported), or 'callable:NAME' (a callable handed
to `deepwm_jax.protect(model=...)` in this process). A callable is fed the inputs in batches
of `CALL_BATCH` and must return images of the same shape, finite and in [0, 1].
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
  if src.startswith(("python:", "callable:")):
    fn = model_callable(src)
    return [call_model(fn, p.a, src) for p in pairs_list]
  protect = pairs_list[0] if train is None else train
  variables = train_model(r, protect)
  fn = imitation.make_predict_fn(cfg.task, cfg)
  return [common.predict(fn, variables, p.a) for p in pairs_list]


def train_model(r: common.Runner, protect: pairs_lib.Pairs):
  """The task network M trained on the protect split (stage 'task'); its variables."""
  return r.imitate("task", r.cfg.task, protect.a, protect.b)


CALL_BATCH = 64
_CALLABLES: dict = {}


def register_callable(fn) -> str:
  """Makes `fn` the model of task.source='callable:NAME' in this process; returns that source."""
  if not callable(fn):
    raise DeepwmError(f"model {fn!r} is not callable; pass a function of NHWC float32 images in "
                      f"[0, 1], or a folder of the model's outputs")
  name = getattr(fn, "__qualname__", None) or type(fn).__name__
  _CALLABLES[name] = fn
  return f"callable:{name}"


def model_callable(src: str):
  """The callable a 'python:' or 'callable:' task.source names."""
  if src.startswith("python:"):
    return import_callable(src[len("python:"):])
  name = src[len("callable:"):]
  if name not in _CALLABLES:
    raise DeepwmError(f"task.source {src!r} was a Python callable given to deepwm_jax.protect() "
                      f"in another process; call protect(model=...) again with it (the run "
                      f"resumes where it stopped)")
  return _CALLABLES[name]


def call_model(fn, a_NxHxWxC: np.ndarray, src: str) -> np.ndarray:
  """fn on the inputs in batches of CALL_BATCH, each answer checked (`checked_outputs`)."""
  out = []
  for i in range(0, len(a_NxHxWxC), CALL_BATCH):
    x = a_NxHxWxC[i:i + CALL_BATCH]
    try:
      y = fn(x)
    except DeepwmError:
      raise
    except Exception as e:  # the owner's code: say which model failed and how
      raise DeepwmError(f"task model {src} raised {type(e).__name__}: {e}; check that it takes "
                        f"NHWC float32 images in [0, 1] (a batch of shape {x.shape})") from None
    out.append(checked_outputs(y, x.shape, src))
  return np.concatenate(out)


def import_callable(path: str):
  """`module:function` -> the function (task.source='python:module:function')."""
  mod, _, attr = path.partition(":")
  try:
    return getattr(importlib.import_module(mod), attr)
  except (ImportError, AttributeError) as e:
    raise DeepwmError(f"task.source 'python:{path}' cannot be imported ({e}); give "
                      f"python:package.module:function, importable from the current directory")


def checked_outputs(y, shape, src):
  """A callable model's outputs as float32 in [0, 1]; refused when the shape is wrong, a value
  is NaN or infinite, or values leave [0, 1] by more than rounding (1e-3): such a model is
  probably given inputs or returning outputs in another range ([-1, 1], [0, 255])."""
  try:
    y = np.asarray(y, np.float32)
  except (TypeError, ValueError) as e:
    raise DeepwmError(f"task model {src} returned {type(y).__name__}, not an array ({e}); it "
                      f"must return NHWC float32 images") from None
  if y.shape != shape:
    raise DeepwmError(f"task model {src} returned shape {y.shape} for inputs {shape}; it must "
                      f"map NHWC images in [0, 1] to images of the same shape")
  if not np.all(np.isfinite(y)):
    raise DeepwmError(f"task model {src} returned NaN or infinite values; check the model")
  lo, hi = float(y.min()), float(y.max())
  if lo < -1e-3 or hi > 1 + 1e-3:
    raise DeepwmError(f"task model {src} returned values in [{lo:.3g}, {hi:.3g}], outside "
                      f"[0, 1]; wrap it so it maps images in [0, 1] to images in [0, 1]")
  return np.clip(y, 0, 1)
