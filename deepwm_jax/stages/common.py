"""What the protection stages share: the runner that trains and checkpoints one stage, batch
samplers, batched prediction, and the summary of one group of images."""
import os
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from deepwm_jax import metrics, parallel, secret_key, verdict
from deepwm_jax.train import imitation, loop


def stage1_guard(cfg) -> loop.Guard:
  """Stage 1's divergence guard on PSNR(B', B). Its collapse check starts once the fidelity
  band is at full weight: before that, fidelity falls on purpose when H and R begin to embed
  (from ~40 to ~25 dB in a few steps under the default keyed config), and a rollback with a
  lower learning rate there only moved the start later, or stopped it."""
  steps = cfg.stage1.steps
  warmup = steps // 10
  band = cfg.stage1.get("fidelity_band", {})
  if band.get("weight", 0.0):
    warmup = max(warmup, int(round(band.get("ramp", (0.0, 0.0))[1] * steps)))
  return loop.Guard(metric="psnr", drop=10.0, warmup=warmup)


class Runner:
  """Trains the stages of one run in `workdir`: each stage checkpoints under its name, resumes
  where it stopped and is skipped once finished; `timing` collects seconds per stage."""

  def __init__(self, cfg, workdir: str, log=print, mesh=None):
    self.cfg, self.workdir, self.log = cfg, workdir, log
    self.timing: dict[str, float] = {}
    self.key = jax.random.PRNGKey(cfg.seed)
    self.mesh = parallel.make_mesh(cfg) if mesh is None else mesh

  def train(self, name, step_fn, state, batch_fn, steps, guard=None):
    t = time.time()
    state = loop.run(name, step_fn, state, batch_fn, steps, self.workdir,
                     jax.random.fold_in(self.key, zlib.crc32(name.encode())),
                     log_every=self.cfg.log_every, ckpt_every=self.cfg.ckpt_every, guard=guard,
                     log=self.log, mesh=self.mesh,
                     shardings=parallel.state_shardings(self.mesh, state, self.cfg))
    # The first call times the stage; a later one (the task model restored again for the
    # held-out negatives) only reloads the finished checkpoint and must not overwrite it.
    self.timing.setdefault(name, round(time.time() - t, 2))
    # Inference between stages runs in every process on its first device (parallel.local_copy).
    return parallel.local_copy(state)

  def imitate(self, name: str, spec, x: np.ndarray, y: np.ndarray):
    """Trains an image-to-image model x -> y (task model or surrogate); returns its variables."""
    key = jax.random.PRNGKey(self.cfg.seed * 7919 + spec.seed)
    state = imitation.init_state(spec, self.cfg, key, spec.steps)
    step = imitation.make_step(spec, self.cfg, spec.steps)
    batches = sampler({"x": x, "y": y}, spec.batch, (self.cfg.seed, spec.seed, 11), self.mesh)
    return self.train(name, step, state, batches, spec.steps)["model"]


def owner_key(r: Runner, n_bits: int, seed: int, filename: str) -> np.ndarray:
  """The owner's key of `n_bits` signs: drawn once and kept in the workdir as `filename`, so a
  resumed run writes the same kit. From the OS's entropy unless `seed` >= 0 (studies)."""
  path = os.path.join(r.workdir, filename)
  if os.path.exists(path):
    key = secret_key.check_key(np.load(path))
  else:
    key = secret_key.new_key(n_bits, seed=None if seed < 0 else seed)
  key = parallel.share_from_primary(key)  # several processes: process 0's key in all
  if parallel.is_primary() and not os.path.exists(path):
    tmp = path + ".tmp.npy"
    np.save(tmp, key)
    os.replace(tmp, path)
  return key


def sampler(arrays: dict[str, np.ndarray], batch: int, seed: tuple, mesh=None):
  """batch_fn(step): a deterministic random batch, so a resumed stage sees the same data.

  The arrays are paired (x[i] goes with y[i]), so one index draw serves them all. With a
  `mesh` the batch is global arrays split over its data axis, of which this process builds only
  its own rows (the draw is the same in every process and on any number of devices).
  """
  n = {len(x) for x in arrays.values()}
  if len(n) != 1:
    raise ValueError(f"paired arrays of different lengths: {n}")
  n = n.pop()

  def batch_fn(step):
    idx = np.random.default_rng([*seed, step]).integers(0, n, batch)
    if mesh is not None:
      rows = idx[parallel.process_rows(mesh, batch)]
      return parallel.global_batch(mesh, {k: x[rows] for k, x in arrays.items()}, batch)
    return {k: jnp.asarray(x[idx]) for k, x in arrays.items()}
  return batch_fn


def predict(fn, variables, x: np.ndarray, batch: int = 64, axis: int = 0) -> np.ndarray:
  """fn(variables, x) over `x` in batches of `batch` images, as one NumPy array; the outputs
  are joined along `axis` (1 for a zoo group's stacked members, [K, N, H, W, C])."""
  return np.concatenate([np.asarray(fn(variables, jnp.asarray(x[i:i + batch])))
                         for i in range(0, len(x), batch)], axis=axis)


def residual_corr(suspect, clean, watermarked) -> float:
  """How much of the watermark residual B' - B a model reproduces: corr(SM(A) - M(A), B' - B).

  About 0 for a model that never saw the watermark; it tells whether a surrogate copied the
  watermark at all, independently of how well the extractor reads it.
  """
  d, wm = (suspect - clean).ravel(), (watermarked - clean).ravel()
  return float(np.corrcoef(d, wm)[0, 1])


def mean_psnr(x, y) -> float:
  """Mean PSNR (dB) over images of two NHWC arrays in [0, 1]."""
  return float(np.mean(metrics.psnr(jnp.asarray(x), jnp.asarray(y))))


def mean_ssim(x, y) -> float:
  """Mean SSIM over images of two NHWC arrays in [0, 1]."""
  return float(np.mean(metrics.ssim(jnp.asarray(x), jnp.asarray(y))))


def summarize(r, w, blank, calibration, ev) -> dict:
  """One group of extractions R(x) judged by the kit's decision: the report's keys per group.

  Keys starting with '_' (per-image statistics and NC) are for figures and pooling, not the
  report (`public`).
  """
  rj = jnp.asarray(r)
  stats = np.asarray(verdict.watermark_statistic(rj, jnp.asarray(w), jnp.asarray(blank)))
  nc = np.asarray(metrics.nc(rj, jnp.asarray(w)))
  v = verdict.decide(stats, calibration, ev.alpha, min_success_rate=ev.min_success_rate)
  return {"success_rate": v.success_rate, "paper_success_rate":
          float(metrics.paper_success_rate(nc, ev.nc_threshold)), "nc_mean": float(np.mean(nc)),
          "centered_nc_mean": float(np.mean(np.asarray(metrics.centered_nc(rj, jnp.asarray(w))))),
          "stat_mean": float(np.mean(stats)), "p_value": v.p_value, "detected": v.detected,
          "n_images": int(len(stats)), "_stats": stats, "_nc": nc}


def public(s: dict) -> dict:
  """A summary without its private per-image arrays."""
  return {k: v for k, v in s.items() if not k.startswith("_")}
