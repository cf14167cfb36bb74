"""The deep kit: H's and R's variables, the watermark and the calibration; embed, extract and
verify images (float32 NHWC in [0, 1]). Its files are described in kit/files.py."""
import dataclasses
import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import deepwm_jax
from deepwm_jax import budget, metrics, models, verdict, windows
from deepwm_jax import payload as payload_lib
from deepwm_jax.errors import DeepwmError
from deepwm_jax.kit import files
from deepwm_jax.kit.files import KIT_FORMAT, KIT_KIND
from deepwm_jax.stages import common


def write_kit(path: str, cfg, embedder_vars, extractor_vars, watermark, blank,
              calibration: "verdict.Calibration", owner: str | None = None,
              payload: dict | None = None, model_null_how: str = "written with the kit") -> str:
  """Writes the kit atomically: a failed write never leaves a half kit at `path`.

  `payload`: the bit payload's record and its calibration (deepwm_jax/payload.py), if any;
  `model_null_how`: how the calibration's model-level null was made, if it has one.
  """
  path = os.path.abspath(path)
  if jax.process_index() != 0:  # multi-process run: process 0 writes the one kit
    return path
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".kit-", dir=parent)
  try:
    state = {"embedder": embedder_vars, "extractor": extractor_vars,
             "watermark": np.asarray(watermark, np.float32), "blank": np.asarray(blank, np.float32)}
    ckptr = files.checkpointer()
    ckptr.save(os.path.join(tmp, "state"), jax.device_get(state))
    ckptr.wait_until_finished()
    if calibration.null is not None:
      files.save_null(tmp, calibration.null)
    info = {
        "kind": KIT_KIND, "format": KIT_FORMAT,
        "package_version": deepwm_jax.__version__,
        "created": files.now(),
        "owner": owner or files.user(),
        "image_size": int(cfg.data.image_size), "channels": int(cfg.data.channels),
        "calibration": calibration.to_dict(),
        "alpha": float(cfg.evaluate.alpha), "nc_threshold": float(cfg.evaluate.nc_threshold),
        "min_success_rate": float(cfg.evaluate.min_success_rate),
        "parameters": {"embedder": models.count_params(embedder_vars),
                       "extractor": models.count_params(extractor_vars)},
        "config": json.loads(cfg.to_json_best_effort()),
    }
    if payload is not None:
      info["payload"] = payload
    if calibration.null is not None:
      info["calibration_null"] = files.null_record(calibration.null)
    if calibration.model_null is not None:  # `evaluate.model_null.models` > 0
      np.save(os.path.join(tmp, files.MODEL_NULL_FILE), calibration.model_null)
      info["calibration_model_null"] = files.model_null_record(calibration.model_null, model_null_how)
    files.publish(tmp, path, info)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


@dataclasses.dataclass
class NetworkKit:
  """What every kit with networks has: H and R, their config, and embed / extract on images
  (float32 in [0, 1]: an NHWC batch, or a list of HWC images of different sizes) of any size
  at least the kit's training crop, through overlapping windows (deepwm_jax/windows.py); a
  subclass sets `_embed` and `_extract`."""
  path: str
  info: dict
  config: ml_collections.ConfigDict
  embedder_vars: dict
  extractor_vars: dict

  @property
  def image_size(self) -> int:
    """The training crop: the window size, and the smallest image the kit takes."""
    return int(self.info["image_size"])

  @property
  def channels(self) -> int:
    return int(self.info["channels"])

  @property
  def overlap(self) -> int:
    """Pixels by which neighbouring windows overlap (and over which a residual fades)."""
    return windows.default_overlap(self.image_size)

  @property
  def read_every(self) -> int:
    """R reads every `read_every`-th window of the embedding's grid along an axis of more than
    windows.THIN_ABOVE windows: 2 here, a quarter of the windows of a large image, still
    hundreds at 512 px, for 3-4x faster verification."""
    return 2

  @property
  def read_checker(self) -> bool:
    """Whether R reads, instead, half of a large image's windows in a checkerboard
    (windows.grid)."""
    return False

  @property
  def context(self) -> int:
    """Pixels of surrounding content H was trained to see around a window (stage1.context)."""
    return int(self.config.stage1.get("context", 0))

  @property
  def frame(self) -> int:
    """Pixels at a window's edge that H leaves unchanged (config embedder.frame)."""
    return int(self.config.embedder.get("frame", 0))

  def _check(self, images, what):
    return windows.check(images, self.image_size, self.channels, what)

  def embed(self, images, psnr_floor: float = 0.0):
    """B -> B': watermark images (outputs of any model, a data set, an algorithm); each
    output has its input's size, and comes back in the input's form (array or list).
    `psnr_floor` (dB, 0 = off): each image's residual scaled down to that PSNR where stronger
    (deepwm_jax/budget.py)."""
    budget.check_floor(psnr_floor)
    items, stacked = self._check(images, "images")
    fn = lambda x: common.predict(self._embed, self.embedder_vars, x, batch=windows.BATCH)
    marked = windows.blend(fn, items, self.image_size, self.overlap, frame=self.frame,
                           context=self.context)
    return windows.restack(budget.cap(items, marked, psnr_floor), stacked)

  def extract(self, images) -> np.ndarray:
    """R(x) on every window of every image, [windows, s, s, C] (one window per image of the
    kit's size, so then [N, s, s, C]); `window_counts` says how many each image has."""
    return self._apply(self._extract, self.extractor_vars, images)[0]

  def window_counts(self, images) -> list[int]:
    """How many windows each image is read in."""
    items, _ = self._check(images, "images")
    return windows.count(items, self.image_size, self.overlap, self.read_every,
                         self.read_checker)

  def _apply(self, fn, variables, images):
    """fn(variables, windows) on every reading window: (outputs [K, ...], image of each window
    [K])."""
    items, _ = self._check(images, "images")
    return windows.apply(lambda x: common.predict(fn, variables, x, batch=windows.BATCH), items,
                         self.image_size, self.overlap, every=self.read_every,
                         checker=self.read_checker)


@dataclasses.dataclass
class Kit(NetworkKit):
  """A loaded kit: embed, extract and verify images (float32 NHWC in [0, 1])."""
  watermark: np.ndarray
  blank: np.ndarray
  calibration: "verdict.Calibration"

  @property
  def threshold(self) -> float:
    """The per-image threshold on the statistic (calibrated)."""
    return self.calibration.threshold

  def __post_init__(self):
    H, R = models.embedder(self.config), models.extractor(self.config)
    w = jnp.asarray(self.watermark)
    self._embed = jax.jit(lambda v, b: H.apply(v, b, w, train=False))
    self._extract = jax.jit(lambda v, x: R.apply(v, x))

  def statistic(self, images) -> np.ndarray:
    """The per-image detection statistic (1: the watermark, 0: blank)."""
    return self._statistic(jnp.asarray(self.extract(images)))

  def _statistic(self, r) -> np.ndarray:
    return np.asarray(verdict.watermark_statistic(r, jnp.asarray(self.watermark),
                                                  jnp.asarray(self.blank)))

  def verify(self, images, alpha: float | None = None,
             message_evidence: bool = False) -> "verdict.Verdict":
    """Decides whether the images come from a model that carries this kit's watermark.

    A payload kit also decodes its message and detects when the image statistic and the bits
    both do; with `message_evidence` also when the decoded message is the kit's
    (payload.combine: Bonferroni over the two; off by default, see there why).
    """
    return self.verify_extracted(self.extract(images), alpha, message_evidence)

  def verify_extracted(self, r, alpha: float | None = None,
                       message_evidence: bool = False) -> "verdict.Verdict":
    """`verify` on extractions R(x) already made (`extract`): callers that also need R(x)
    for their own numbers (the zoo) run the extractor once."""
    r = np.asarray(r, np.float32)
    want = (self.image_size, self.image_size, self.channels)
    if r.ndim != 4 or r.shape[1:] != want:
      raise DeepwmError(f"extractions have shape {r.shape} but this kit's R gives (N, {want[0]}, "
                        f"{want[1]}, {want[2]}); pass kit.extract(images)")
    rj = jnp.asarray(r)
    stats = self._statistic(rj)
    no_null = self.calibration.null is None and self.calibration.model_null is None
    scores = None if no_null else np.asarray(verdict.watermark_score(
        rj, jnp.asarray(self.watermark), jnp.asarray(self.blank)))
    alpha = self.info["alpha"] if alpha is None else alpha
    v = verdict.decide(stats, self.calibration, alpha,
                       min_success_rate=self.info["min_success_rate"], scores=scores)
    nc = np.asarray(metrics.nc(rj, jnp.asarray(self.watermark)))
    v.nc_mean = float(np.mean(nc))
    v.paper_success_rate = float(metrics.paper_success_rate(nc, self.info["nc_threshold"]))
    if "payload" in self.info:
      pay, bit_cal = payload_lib.from_kit_info(self.info)
      bits = payload_lib.decide(pay, pay.soft_bits(r), bit_cal, alpha,
                                self.info["min_success_rate"])
      v.image_detected, v.image_p_value = v.detected, v.p_value
      v.detected, v.p_value, bits["decided_by"] = payload_lib.combine(
          v.p_value, v.success_rate, bits, alpha, self.info["min_success_rate"],
          message_evidence)
      v.payload = bits
    return v


def load(path: str, info: dict) -> Kit:
  """The deep kit at `path`, from its kit.json `info` (manifest, kind and format checked)."""
  if "calibration" not in info:
    raise DeepwmError(f"kit '{path}' has no calibration (written by an older deepwm_jax), so "
                      f"no p-value can be given; re-create it with `deepwm run`")
  try:
    cfg = ml_collections.ConfigDict(info["config"])
    calibration = verdict.Calibration.from_dict(info["calibration"])
    null = files.load_null(path, info)
    if null is not None:  # already sorted, per source or pooled
      calibration = dataclasses.replace(calibration, null=null)
    model_null = files.load_model_null(path, info)
    if model_null is not None:
      calibration = dataclasses.replace(calibration, model_null=model_null)
  except (KeyError, TypeError, ValueError) as e:
    raise DeepwmError(f"kit '{path}': kit.json is invalid ({e}); re-create the kit") from None
  like = abstract_state(cfg)
  try:
    state = files.checkpointer().restore(os.path.join(path, "state"), like)
  except Exception as e:
    raise DeepwmError(f"kit '{path}': its networks do not match its config ({type(e).__name__}); "
                      f"re-create the kit") from None
  return Kit(path, info, cfg, state["embedder"], state["extractor"], np.asarray(state["watermark"]),
             np.asarray(state["blank"]), calibration)


def abstract_state(cfg):
  """Shapes of the kit's arrays from its config, placed on this process's first device, so a
  kit written on any number of devices loads here."""
  s, c = cfg.data.image_size, cfg.data.channels
  x = jax.ShapeDtypeStruct((2, s, s, c), jnp.float32)
  w = jax.ShapeDtypeStruct((s, s, c), jnp.float32)
  H, R = models.embedder(cfg), models.extractor(cfg)
  key = jax.random.PRNGKey(0)
  emb = jax.eval_shape(lambda k, x, w: H.init(k, x, w, train=False), key, x, w)
  ext = jax.eval_shape(lambda k, x: R.init(k, x), key, x)
  tree = {"embedder": emb, "extractor": ext, "watermark": w, "blank": w}
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)
