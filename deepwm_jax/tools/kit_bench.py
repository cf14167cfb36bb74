"""`deepwm bench` cases 'embed-N' and 'verify-N': megapixels per second of a kit on one N x N
image, through its windows (deepwm_jax/windows.py), as a protected API would serve it.

The kit is `--kit PATH`, or else the networks of the config `protect` builds by default
(owner.DEFAULT_CONFIG) at their initial weights: speed depends on the networks' shapes and the
kit's kind (how its windows are laid out and read), not on what they learned, so no training
is needed to time them. The first call (compilation) is left out; the median of `reps` calls
is reported.
"""
import os
import platform
import statistics
import time

import numpy as np

from deepwm_jax import owner, windows
from deepwm_jax.errors import DeepwmError

DEFAULT_CONFIG = owner.DEFAULT_CONFIG


def untrained_kit(config_name: str = DEFAULT_CONFIG, conv_impl: str = "auto"):
  """A kit of the config's networks at their initial weights, in memory only: a keyed kit
  (with a key drawn from a fixed seed) for protect.method 'keyed', else a deep kit."""
  import jax
  from deepwm_jax import config as config_lib, models, secret_key, verdict
  from deepwm_jax.kit import deep, keyed as keyed_kit
  from deepwm_jax.data import watermarks
  from deepwm_jax.stages import keyed
  cfg = config_lib.load(config_name)
  cfg.conv_impl = conv_impl
  s, c = cfg.data.image_size, cfg.data.channels
  is_keyed = cfg.protect.method == "keyed"
  x = np.zeros((1, s, s, c), np.float32)
  w = (watermarks.key_blank(s, c) if is_keyed
       else watermarks.watermark_image(cfg.watermark.spec, s, c))
  kh, kr = jax.random.split(jax.random.PRNGKey(0))
  emb = models.embedder(cfg).init(kh, x, w, train=False)
  ext = models.extractor(cfg).init(kr, x)
  info = {"image_size": s, "channels": c, "alpha": float(cfg.evaluate.alpha),
          "nc_threshold": float(cfg.evaluate.nc_threshold),
          "min_success_rate": float(cfg.evaluate.min_success_rate)}
  name = "(untrained " + config_name + ")"
  if is_keyed:
    info["keyed"] = {"cell": int(cfg.protect.keyed.cell)}
    return keyed_kit.KeyedKit(name, info, cfg, emb, ext,
                              secret_key.new_key(keyed.n_bits(cfg), seed=0))
  cal = verdict.calibrate(np.linspace(0.0, 0.5, 101))
  return deep.Kit(name, info, cfg, emb, ext, w, watermarks.blank_image(s, c), cal)


def bench(case, kit, reps: int, log=print) -> dict:
  """One record: the case's operation on one image of the case's size, timed."""
  n = int(case.image_size)
  if n < kit.image_size:
    raise DeepwmError(f"--image-size {n} is smaller than the kit's crop ({kit.image_size}); "
                      f"use at least {kit.image_size}")
  img = np.random.default_rng(0).uniform(size=(n, n, kit.channels)).astype(np.float32)
  op = {"embed": kit.embed, "verify": kit.verify}[case.kind]
  load_before = os.getloadavg()
  t0 = time.perf_counter()
  op([img])  # compiles
  first = time.perf_counter() - t0
  secs = []
  for _ in range(reps):
    t0 = time.perf_counter()
    op([img])
    secs.append(time.perf_counter() - t0)
  s = statistics.median(secs)
  import jax
  rec = {"name": case.name, "kind": case.kind, "kit": kit.path, "image_size": n,
         "channels": kit.channels, "window": kit.image_size, "overlap": kit.overlap,
         # A filter kit has no windows (1 per image); other kits embed every window.
         "windows": (windows.count([img], kit.image_size, kit.overlap)[0]
                     if case.kind == "embed" and getattr(kit, "method", None) != "filter"
                     else kit.window_counts([img])[0]),
         "first_call_s": first, "s_per_image": s,
         "megapixels_per_s": n * n / 1e6 / s, "reps": reps, "backend": jax.default_backend(),
         "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
         "load_avg_before": load_before, "load_avg_after": os.getloadavg()}
  log(f"{case.name:<22} {rec['windows']:6d} windows of {kit.image_size} px  first call "
      f"{first:5.1f} s  {s:8.3f} s/image  {rec['megapixels_per_s']:6.2f} MP/s  "
      f"[load {load_before[0]:.1f}]")
  return rec
