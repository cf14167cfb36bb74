"""The classify kit: what the owner keeps to attribute a leaked copy later.

  state/          orbax checkpoint: every registered user's key images (uint8, LSBs intact)
  kit.json        users, model architecture, the null calibration, alpha, the config
  manifest.json   SHA-256 of every other file (deepwm_jax.kit's format), checked on load

Suspect models are read as orbax checkpoints of {'params': ...} (what `deepwm classify run`
writes under models/); the Python API takes any function from images to class indices.
"""
import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

import deepwm_jax
from deepwm_jax import kit as base_kit
from deepwm_jax.classify import models, train, verify
from deepwm_jax.errors import DeepwmError

KIT_KIND = "classify"
KIT_FORMAT = 1


def write_kit(path: str, cfg, user_keys: dict[str, np.ndarray],
              calibration: verify.NullCalibration) -> str:
  """Writes atomically: a failed write never leaves half a kit at `path`."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".kit-", dir=os.path.dirname(path))
  try:
    users = list(user_keys)
    state = {"keys": np.stack([np.asarray(user_keys[u], np.uint8) for u in users])}
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, "state"), state)
    ckptr.wait_until_finished()
    info = {
        "kind": KIT_KIND, "format": KIT_FORMAT,
        "package_version": deepwm_jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "users": users, "keys_shape": list(state["keys"].shape),
        "image_size": int(cfg.data.image_size), "channels": int(cfg.data.channels),
        "num_classes": int(cfg.data.num_classes), "watermark_class": int(cfg.data.num_classes),
        "calibration": calibration.to_dict(),
        "alpha": float(cfg.verify.alpha), "min_accuracy": float(cfg.verify.min_accuracy),
        "config": json.loads(cfg.to_json_best_effort()),
    }
    with open(os.path.join(tmp, "kit.json"), "w") as f:
      json.dump(info, f, indent=1)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(base_kit.digests(tmp), f, indent=1, sort_keys=True)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


@dataclasses.dataclass
class ClassifyKit:
  path: str
  info: dict
  config: ml_collections.ConfigDict
  user_keys: dict[str, np.ndarray]
  calibration: verify.NullCalibration

  @property
  def users(self) -> list[str]:
    return list(self.user_keys)

  def verify(self, classes_fn: Callable[[np.ndarray], np.ndarray], user: str | None = None,
             alpha: float | None = None) -> dict:
    """Queries `classes_fn` (NxHxWxC floats in [0, 1] -> N class indices) with every user's
    key images and returns the verdict (see verify.decide)."""
    if user is not None and user not in self.user_keys:
      raise DeepwmError(f"user '{user}' is not registered in this kit (registered: "
                        f"{', '.join(self.users)}); pass one of them to --user")
    counts = verify.query(classes_fn, self.user_keys, self.info["watermark_class"])
    return verify.decide(counts, self.user_keys, self.calibration,
                         self.info["alpha"] if alpha is None else alpha,
                         self.info["min_accuracy"], user)

  def load_model(self, path: str):
    return load_model(path, self.config)

  def verify_checkpoint(self, path: str, user: str | None = None) -> dict:
    """Verifies a classifier checkpoint of this kit's architecture."""
    return self.verify(classes_fn(self.config, self.load_model(path)), user)


def classes_fn(cfg, params) -> Callable:
  predictor = train.Predictor(models.classifier(cfg))
  return lambda x: predictor.classes(params, x)


def load_kit(path: str) -> ClassifyKit:
  path = os.path.abspath(path)
  info = base_kit.read_info(path, KIT_KIND, KIT_FORMAT)
  try:
    cfg = ml_collections.ConfigDict(info["config"])
    calibration = verify.NullCalibration.from_dict(info["calibration"])
    shape = tuple(info["keys_shape"])
    users = list(info["users"])
  except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
    raise DeepwmError(f"kit '{path}': kit.json is invalid ({type(e).__name__}: {e}); "
                      f"re-create the kit") from None
  like = {"keys": jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=_one_device())}
  try:
    state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"), like)
  except Exception as e:
    raise DeepwmError(f"kit '{path}': its key images cannot be read ({type(e).__name__}); "
                      f"re-create the kit") from None
  keys = np.asarray(state["keys"])
  return ClassifyKit(path, info, cfg, {u: keys[i] for i, u in enumerate(users)}, calibration)


def _one_device():
  return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def save_model(path: str, params) -> None:
  path = os.path.abspath(path)
  if os.path.exists(path):
    shutil.rmtree(path)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path, {"params": jax.device_get(params)})
  ckptr.wait_until_finished()


def load_model(path: str, cfg):
  """A classifier checkpoint written by save_model, checked against the kit's architecture."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise DeepwmError(f"model checkpoint '{path}' not found; pass a folder written by "
                      f"`deepwm classify run` (e.g. WORKDIR/models/USER)")
  net = models.classifier(cfg)
  shapes = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x), models.example_input(cfg))
  like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=_one_device()),
                      {"params": shapes["params"]})
  try:
    return ocp.StandardCheckpointer().restore(path, like)["params"]
  except Exception as e:
    raise DeepwmError(f"model checkpoint '{path}' cannot be read as this kit's classifier "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                      f"it is damaged or has another architecture") from None
