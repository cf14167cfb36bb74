"""The traditional baseline: a key-seeded additive spread-spectrum watermark in the DCT domain.

The AAAI 2020 paper compared its deep barrier with a traditional invisible watermark on the
outputs, fixed for all outputs. This is the standard scheme:

  embed     B' = clip(B + alpha * IDCT(p))  on every channel alike (a luminance pattern, so
            JPEG's chroma subsampling does not remove it), where p is +-1 on a band of DCT
            frequencies (u+v)/(2(n-1)) in [lo, hi) (no DC, no lowest/highest frequencies) and 0
            elsewhere, drawn from `key`; alpha is set by the target PSNR:
            MSE = alpha^2 |band| / n^2 with an orthonormal DCT.
  detect    v = the band of DCT(mean over channels of x), c = (u+v)^whiten per coefficient;
            z = <c v, p> / |c v|  (one z-score per image).
            Given v, with p's signs random, z has mean 0 and variance 1 for any fixed c: for
            an image that never saw p, z ~ N(0, 1) approximately. c whitens natural images,
            whose DCT amplitude falls about as 1/(u+v): with whiten=2 (the matched filter for
            that spectrum) watermarked 32 px crops at 40 dB scored a mean z of 17.5 instead of
            12.7 unweighted, and their minimum 3.3 instead of 1.4 (64 validation crops).
  decide    as the deep method does (verdict.py): a threshold calibrated on negatives (clean
            images and null models' outputs) plus `margin`, then the binomial p-value over a
            suspect's images and a majority of hits.

It is a zero-bit watermark (presence of one key's pattern): capacity 1 bit per model, against
the deep method's watermark image. With protect.method='traditional', `deepwm run` uses it in
place of H/R (no stage 1 or 2): `run_pipeline` trains the task model, watermarks its outputs,
trains the config's surrogates on them and gives the same report keys and a kit that
`deepwm verify` / `deepwm embed` read (kit.json "method": "traditional", no networks; the kit
is deepwm_jax/kit/traditional.py).
"""
import dataclasses
import time

import ml_collections
import numpy as np
import scipy.fft

from deepwm_jax import verdict
from deepwm_jax.data import imageio
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.stages import attack, common, task

METHOD = "traditional"


# ----------------------------------------------------------------------------- the watermark

@dataclasses.dataclass(frozen=True)
class SpreadSpectrum:
  """The pattern of one key at one image size; `embed` and `statistic` are pure NumPy."""
  key: int
  image_size: int
  channels: int
  psnr: float = 40.0
  band: tuple = (0.1, 0.7)
  whiten: float = 2.0

  @property
  def mask(self) -> np.ndarray:
    n = self.image_size
    u, v = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    radius = (u + v) / (2.0 * (n - 1))
    lo, hi = self.band
    return (radius >= lo) & (radius < hi) & ((u + v) > 0)

  @property
  def pattern(self) -> np.ndarray:
    """p: +-1 on the band, 0 elsewhere (n x n), from the key alone."""
    signs = np.random.default_rng([int(self.key), 0x55]).choice([-1.0, 1.0], self.mask.shape)
    return np.where(self.mask, signs, 0.0)

  @property
  def alpha(self) -> float:
    """Amplitude per DCT coefficient for the target PSNR (before clipping)."""
    mse = 10.0 ** (-self.psnr / 10.0)
    return float(np.sqrt(mse * self.image_size ** 2 / self.mask.sum()))

  def residual(self) -> np.ndarray:
    """alpha * IDCT(p): the spatial pattern added to every channel (n x n)."""
    return self.alpha * scipy.fft.idctn(self.pattern, type=2, norm="ortho")

  def _check(self, images, what="images") -> np.ndarray:
    return imageio.check_images(images, self.image_size, self.channels, what, "the watermark")

  def embed(self, images) -> np.ndarray:
    x = self._check(images)
    return np.clip(x + self.residual()[None, :, :, None], 0.0, 1.0).astype(np.float32)

  def correlations(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(z, nc) per image: the z-score <c v, p>/|c v| and the normalized correlation z/|p|."""
    x = self._check(images)
    luma = x.mean(axis=-1).astype(np.float64)
    coeffs = scipy.fft.dctn(luma, type=2, norm="ortho", axes=(1, 2))
    mask, p = self.mask, self.pattern[self.mask]
    v = coeffs[:, mask]
    n = self.image_size
    u, w = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    v = v * ((u + w)[mask].astype(np.float64) ** self.whiten)
    norm = np.sqrt(np.sum(v * v, axis=1))
    # An image with no energy in the band (flat, or JPEG-quantised to zero) holds no evidence.
    z = np.where(norm > 1e-9, (v @ p) / np.maximum(norm, 1e-12), 0.0)
    return z, z / np.sqrt(mask.sum())

  def statistic(self, images) -> np.ndarray:
    return self.correlations(images)[0]

  def to_dict(self) -> dict:
    return {"key": int(self.key), "image_size": int(self.image_size),
            "channels": int(self.channels), "psnr": float(self.psnr),
            "band": [float(b) for b in self.band], "whiten": float(self.whiten)}

  @classmethod
  def from_config(cls, cfg) -> "SpreadSpectrum":
    t = cfg.protect.traditional
    return cls(int(t.key), int(cfg.data.image_size), int(cfg.data.channels), float(t.psnr),
               tuple(float(b) for b in t.band), float(t.whiten))


def capacity_bits() -> int:
  """Zero-bit watermark: one key's pattern is present or not."""
  return 1


# ----------------------------------------------------------------------------- the run

def _summary(z, nc, calibration, ev) -> dict:
  v = verdict.decide(z, calibration, ev.alpha, min_success_rate=ev.min_success_rate)
  return {"success_rate": v.success_rate,
          "paper_success_rate": float(np.mean(nc > ev.nc_threshold)),
          "nc_mean": float(np.mean(nc)), "stat_mean": float(np.mean(z)), "p_value": v.p_value,
          "detected": v.detected, "n_images": int(len(z))}


def run(r: common.Runner, write_kit) -> tuple[dict, dict, dict, float]:
  """`deepwm run` with protect.method='traditional': the same report keys as the deep run.

  `write_kit(spread_spectrum, calibration)` is called as soon as the calibration exists (the
  kit needs nothing from the evaluation models). Returns (report, grid, per-group statistics,
  threshold) for report.write_report. Surrogates get their own stage names (traditional_*): a
  workdir copied from a deep run may reuse its task model and null models (trained without
  any watermark) but never its surrogates (trained on H's outputs).
  """
  cfg = r.cfg
  d, ev, t0 = cfg.data, cfg.evaluate, time.time()
  splits = task.load_splits(cfg)
  protect, attack_, val = splits.protect, splits.attack, splits.val
  r.timing["data"] = round(time.time() - t0, 2)
  _, m_attack, m_val = task.outputs(r, [protect, attack_, val])

  ss = SpreadSpectrum.from_config(cfg)
  wm_attack, wm_val = ss.embed(m_attack), ss.embed(m_val)

  # Surrogates on the watermarked outputs (the same specs as the deep run's) and nulls.
  sur = attack.imitator(r, "traditional_surrogate", cfg.attack.surrogate, attack_.a, wm_attack)
  nulls = {}
  for arch in cfg.attack.null_archs:
    spec = ml_collections.ConfigDict(cfg.attack.null.to_dict())
    spec.arch = arch
    nulls[arch] = attack.imitator(r, f"null_protector_{arch}", spec, attack_.a, m_attack)
  eval_null = attack.imitator(r, "eval_null", ev.null, attack_.a, attack_.b)

  # Calibration on the attack split, as the deep run does.
  flats = pairs_lib.flat_images(max(8, d.n_attack // 8), d.image_size, d.channels, cfg.seed + 5)
  negatives = np.concatenate([attack_.a, m_attack, attack_.b, flats]
                             + [f(attack_.a) for f in nulls.values()])
  sur_attack = sur(attack_.a)
  calibration = verdict.calibrate(ss.statistic(negatives),
                                  ss.statistic(np.concatenate([wm_attack, sur_attack])),
                                  margin=cfg.protect.traditional.margin)
  # verdict.calibrate's note about a statistic capped at 1 does not apply to z-scores.
  calibration = dataclasses.replace(calibration, method=calibration.method.replace(
      "; threshold above the statistic's maximum 1, so nothing can be detected", ""))
  write_kit(ss, calibration)
  eval_sur = attack.imitator(r, "traditional_eval_surrogate", ev.surrogate, attack_.a,
                             wm_attack)

  t = time.time()
  groups = {"watermarked": wm_val, "clean A": val.a, "clean B": val.b, "clean M(A)": m_val,
            "surrogate (stage 2 spec)": sur(val.a), "surrogate (unseen)": eval_sur(val.a),
            **{f"null (protector {a})": f(val.a) for a, f in nulls.items()},
            "null (independent)": eval_null(val.a)}
  corr = {k: ss.correlations(x) for k, x in groups.items()}
  summary = {k: _summary(z, nc, calibration, ev) for k, (z, nc) in corr.items()}
  r.timing["evaluate"] = round(time.time() - t, 2)

  psnr = common.mean_psnr

  def entry(name, spec, key, seen):
    return {**summary[key], "name": name, "arch": spec.arch, "loss": spec.loss,
            "seen_in_stage2": seen, "task_psnr": psnr(groups[key], wm_val),
            "residual_corr": common.residual_corr(groups[key], m_val, wm_val)}

  clean_keys = ("clean A", "clean B", "clean M(A)")
  clean_z = np.concatenate([corr[k][0] for k in clean_keys])
  clean_nc = np.concatenate([corr[k][1] for k in clean_keys])
  rep = {
      "method": METHOD,
      "fidelity": {"psnr": psnr(wm_val, m_val), "ssim": common.mean_ssim(wm_val, m_val)},
      "task": {"psnr_M_vs_B": psnr(m_val, val.b), "psnr_A_vs_B": psnr(val.a, val.b)},
      "watermarked": summary["watermarked"],
      "clean": {**_summary(clean_z, clean_nc, calibration, ev),
                "by_kind": {k: summary[k] for k in clean_keys}},
      "surrogates": [entry("surrogate-stage2", cfg.attack.surrogate, "surrogate (stage 2 spec)",
                           False),
                     entry("surrogate-unseen", ev.surrogate, "surrogate (unseen)", False)],
      "null": [entry("null-independent", ev.null, "null (independent)", False)]
              + [entry(f"null-protector-{a}", nulls[a].spec, f"null (protector {a})", True)
                 for a in nulls],
      "calibration": calibration.to_dict(),
      "traditional": {**ss.to_dict(), "alpha_per_coefficient": ss.alpha,
                      "band_coefficients": int(ss.mask.sum()),
                      "capacity_bits": capacity_bits(), "statistic": "z = <c v, p> / |c v|"},
      "alpha": ev.alpha, "min_success_rate": ev.min_success_rate,
      "timing": {**r.timing, "total": round(time.time() - t0, 2)},
      "n_val": int(d.n_val), "image_size": int(d.image_size), "channels": int(d.channels),
  }
  n = min(6, d.n_val)
  res = ss.residual()
  grid = {"A": val.a[:n], "B": m_val[:n], "B'": wm_val[:n],
          "|B'-B| x10": np.clip(10 * np.abs(wm_val[:n] - m_val[:n]), 0, 1),
          "pattern": np.repeat(np.clip(0.5 + res / (4 * np.abs(res).max()), 0, 1)[None, :, :, None],
                               n, 0).repeat(d.channels, -1)}
  stats = {k: z for k, (z, _) in corr.items()}
  return rep, grid, stats, calibration.threshold
