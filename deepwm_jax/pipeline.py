"""`deepwm run`: protect a model end to end and measure how well the protection holds.

  data -> task model M -> stage 1 (H, R, D) -> attack: surrogate SM on (A, B') and the
  protector's null model on clean pairs -> stage 2 (R fine-tuned) -> independent evaluation
  surrogate and null model -> calibration -> evaluation on held-out images -> kit + report.

Every stage checkpoints; re-running the same command resumes and skips finished stages.
"""
import dataclasses
import json
import os
import time
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deepwm_jax import config as config_lib
from deepwm_jax import kit as kit_lib
from deepwm_jax import metrics, parallel, payload, report, verdict
from deepwm_jax.data import degrade, sources, watermarks
from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import imitation, loop, stage1, stage2


# ----------------------------------------------------------------------------- data

@dataclasses.dataclass
class Pairs:
  a: np.ndarray   # task inputs A (degraded)
  b: np.ndarray   # clean targets B


def make_pairs(cfg, split: str, n: int, seed_offset: int) -> Pairs:
  return pairs_from(cfg, load_split(cfg, split), n, seed_offset)


def load_split(cfg, split: str) -> list[np.ndarray]:
  """The photos of `split` of the config's data source (for callers that crop them often)."""
  d = cfg.data
  return sources.load_split(d.source, split, d.channels, d.get("tfds_dir", ""),
                            d.get("tfds_max_images", 0))


def pairs_from(cfg, images: list[np.ndarray], n: int, seed_offset: int) -> Pairs:
  """`n` (A, B) crops of already loaded photos; the same crops as make_pairs of their split."""
  d = cfg.data
  rng = np.random.default_rng([cfg.seed, seed_offset])
  b = sources.make_patches(images, n, d.image_size, rng, flip=True, scale=d.scale)
  a = degrade.degrade(b, d.task, seed=cfg.seed * 1000 + seed_offset, strength=d.strength)
  return Pairs(a.astype(np.float32), b.astype(np.float32))


def flat_images(n: int, size: int, channels: int, seed: int) -> np.ndarray:
  """Flat and smoothly shaded images, dark ones included: stage-2 negatives, since a
  fine-tuned extractor was seen to draw the logo on flat dark sky (METHOD.md section 8)."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(0, 1, (n, 1, 1, channels)) ** 2
  ramp = np.linspace(-1, 1, size)[None, :, None, None] * rng.uniform(-0.2, 0.2, (n, 1, 1, 1))
  return np.clip(base + ramp, 0, 1).astype(np.float32) * np.ones((1, size, size, 1), np.float32)


def protector_nulls(cfg, r: "Run", attack: Pairs, m_attack: np.ndarray) -> dict:
  """The protector's null models (trained on clean (A, M(A))): arch -> (spec, variables,
  predict fn)."""
  nulls = {}
  for arch in cfg.attack.null_archs:
    spec = ml_collections.ConfigDict(cfg.attack.null.to_dict())
    spec.arch = arch
    variables = r.imitate(f"null_protector_{arch}", spec, attack.a, m_attack)
    nulls[arch] = (spec, variables, imitation.make_predict_fn(spec, cfg))
  return nulls


def negative_sources(cfg, pairs: Pairs, m_outputs: np.ndarray, nulls: dict,
                     flat_seed: int) -> dict[str, np.ndarray]:
  """Innocent images per source: clean A, M(A), clean B, each null model's output on A, and
  flat images. `nulls`: arch -> (spec, variables, predict fn) of the protector's null models."""
  d = cfg.data
  return {"clean_A": pairs.a, "M_A": m_outputs, "clean_B": pairs.b,
          **{f"null_{arch}": predict(fn, v, pairs.a) for arch, (_, v, fn) in nulls.items()},
          "flat": flat_images(max(8, d.n_attack // 8), d.image_size, d.channels, flat_seed)}


def stage2_negatives(cfg, attack: Pairs, m_attack: np.ndarray,
                     nulls: dict) -> dict[str, np.ndarray]:
  """Stage 2's negatives per source, in the order stage 2 and the calibration concatenate
  them (recalibrate rebuilds them with this too, so the order cannot drift)."""
  return negative_sources(cfg, attack, m_attack, nulls, cfg.seed + 5)


def weak_copies(cfg, neg_sources: dict[str, np.ndarray], wm_attack: np.ndarray,
                m_attack: np.ndarray) -> np.ndarray:
  """Synthetic partial copies of the watermark for stage 2 (`stage2.weak_copies`, 0 = none).

  Imitators that stage 2 never trained against copy only part of the residual, inside their
  own imitation error (docs/quickstart_study.md): a ResNet-6 surrogate's residual correlates
  0.025 with the watermark's where a U-Net's does 0.08. Each protector null model's output on
  the attack inputs (a real imitation error, no watermark) plus alpha times the watermark
  residual H(M(A)) - M(A), alpha ~ U[weak_copies, 1] per image, is such a copy; R is trained to
  read w in it while the same null output alone stays a negative, so the difference it learns
  is the residual itself, at a strength no lower than `weak_copies`.
  """
  alpha_min = float(cfg.stage2.get("weak_copies", 0.0))
  if alpha_min <= 0:
    return np.zeros((0, *wm_attack.shape[1:]), wm_attack.dtype)
  bases = [x for k, x in neg_sources.items() if k.startswith("null_")] or [m_attack]
  rng = np.random.default_rng([cfg.seed, 33])
  residual = wm_attack - m_attack
  return np.concatenate([
      np.clip(b + rng.uniform(alpha_min, 1.0, (len(b), 1, 1, 1)) * residual, 0.0, 1.0)
      for b in bases]).astype(wm_attack.dtype)


HELDOUT_SEED_OFFSET = 4  # make_pairs offsets: 1 protect, 2 attack, 3 val, 4 held-out negatives


def heldout_negatives(cfg, r: "Run", protect: Pairs, nulls: dict) -> dict[str, np.ndarray]:
  """Calibration negatives of every kind stage 2 trains R on, that it never saw, per source.

  Stage 2 fits R to say "blank" on its negatives, so their statistics understate what R does on
  a new innocent image: the protector's own null ResNet, at most 0.21 on its stage-2 inputs,
  was measured at 0.69 on one of 1024 fresh crops. These are fresh crops of the attack split,
  M's outputs on them, the same null models' outputs on them, and other flat images.
  """
  fresh = make_pairs(cfg, "attack", max(16, cfg.data.n_attack // 2), HELDOUT_SEED_OFFSET)
  return negative_sources(cfg, fresh, r.task_outputs([fresh], train=protect)[0], nulls,
                          cfg.seed + 6)


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


def predict(fn, variables, x: np.ndarray, batch: int = 64) -> np.ndarray:
  return np.concatenate([np.asarray(fn(variables, jnp.asarray(x[i:i + batch])))
                         for i in range(0, len(x), batch)])


# ----------------------------------------------------------------------------- stages

class Run:
  """One protection run in `workdir`; each method is a stage of the method."""

  def __init__(self, cfg, workdir: str, log=print, mesh=None):
    self.cfg, self.workdir, self.log = cfg, workdir, log
    self.timing: dict[str, float] = {}
    self.key = jax.random.PRNGKey(cfg.seed)
    self.mesh = parallel.make_mesh(cfg) if mesh is None else mesh

  def _train(self, name, step_fn, state, batch_fn, steps, guard=None):
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
    return self._train(name, step, state, batches, spec.steps)["model"]

  def task_outputs(self, pairs_list, train: Pairs | None = None):
    """M(A) for each set of pairs: the outputs the owner serves and H watermarks.

    A trained M learns from `train` (default: the first pairs, the protect split); callers
    that only need M on other images pass it here instead of predicting on it for nothing.
    """
    cfg = self.cfg
    src = cfg.task.source
    if src == "identity":
      return [p.a for p in pairs_list]
    if src == "dataset":  # the published data set's targets themselves (examples/dataset.py)
      return [p.b for p in pairs_list]
    if src.startswith("python:"):
      fn = _import_callable(src[len("python:"):])
      return [_checked(fn(p.a), p.a.shape, src) for p in pairs_list]
    protect = pairs_list[0] if train is None else train
    variables = self.imitate("task", cfg.task, protect.a, protect.b)
    fn = imitation.make_predict_fn(cfg.task, cfg)
    return [predict(fn, variables, p.a) for p in pairs_list]


def _import_callable(path: str):
  import importlib
  mod, _, attr = path.partition(":")
  try:
    return getattr(importlib.import_module(mod), attr)
  except (ImportError, AttributeError) as e:
    raise DeepwmError(f"task.source 'python:{path}' cannot be imported ({e}); give "
                      f"python:package.module:function, importable from the current directory")


def _checked(y, shape, src):
  y = np.asarray(y, np.float32)
  if y.shape != shape:
    raise DeepwmError(f"task model {src} returned shape {y.shape} for inputs {shape}; it must "
                      f"map NHWC images in [0, 1] to images of the same shape")
  return np.clip(y, 0, 1)


def run(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
  config_lib.validate(cfg)
  parallel.initialize(cfg)  # a no-op unless this is one process of several
  mesh = parallel.make_mesh(cfg)
  parallel.check_config_batches(cfg, mesh)
  if not parallel.is_primary():
    log = lambda *_: None
  if parallel.data_shards(mesh) > 1 or jax.process_count() > 1:
    log(f"training on {parallel.describe(mesh)}")
  if parallel.is_primary():  # process 0 writes config.json, the others then check against it
    _check_workdir_config(cfg, workdir)
  parallel.barrier("workdir-config")
  if not parallel.is_primary():
    _check_workdir_config(cfg, workdir)
  if _protect(cfg).method == "traditional":  # classical barrier, no H/R (issue 6)
    from deepwm_jax import traditional
    return traditional.run_pipeline(cfg, workdir, log)
  r = Run(cfg, workdir, log, mesh)
  d, t0 = cfg.data, time.time()

  # ---- data: three disjoint splits by image (protect / attack / val)
  protect = make_pairs(cfg, "protect", d.n_protect, 1)
  attack = make_pairs(cfg, "attack", d.n_attack, 2)
  val = make_pairs(cfg, "val", d.n_val, 3)
  owner = payload.owner_of(cfg)
  pay = payload.from_config(cfg, owner)  # None unless watermark.spec == 'payload'
  w = (pay.render(d.channels) if pay is not None
       else watermarks.watermark_image(cfg.watermark.spec, d.image_size, d.channels))
  blank = watermarks.blank_image(d.image_size, d.channels)
  r.timing["data"] = round(time.time() - t0, 2)

  # ---- the target model M
  m_protect, m_attack, m_val = r.task_outputs([protect, attack, val])

  # ---- stage 1: the barrier
  state = stage1.init_state(cfg, jax.random.fold_in(r.key, 1), w)
  step = stage1.make_step(cfg, w, blank)
  batches = sampler({"a": protect.a, "b": m_protect}, cfg.stage1.batch, (cfg.seed, 21), mesh)
  state = r._train("stage1", step, state, batches, cfg.stage1.steps,
                   guard=loop.Guard(metric="psnr", drop=10.0, warmup=cfg.stage1.steps // 10))
  emb_vars, ext_vars = state["embedder"], {"params": state["extractor"]["params"]}
  embed = stage1.make_embed_fn(cfg, w)
  wm_attack = predict(embed, emb_vars, m_attack)   # what the attacker gets from the API
  wm_val = predict(embed, emb_vars, m_val)

  # ---- the attack the extractor is hardened against, and the protector's null model
  surs = {}  # checkpoint name -> (spec, variables, predict fn)
  for name, spec in config_lib.stage2_surrogates(cfg).items():
    surs[name] = (spec, r.imitate(name, spec, attack.a, wm_attack),
                  imitation.make_predict_fn(spec, cfg))
  sur_attack = np.concatenate([predict(fn, v, attack.a) for _, v, fn in surs.values()])
  nulls = protector_nulls(cfg, r, attack, m_attack)

  # ---- stage 2: fine-tune R
  neg_sources = stage2_negatives(cfg, attack, m_attack, nulls)
  negatives = np.concatenate(list(neg_sources.values()))
  weak = weak_copies(cfg, neg_sources, wm_attack, m_attack)
  state2 = stage2.init_state(cfg, ext_vars)
  step2 = stage2.make_step(cfg, w, blank)
  b2 = cfg.stage2.batch
  # Each surrogate output (or weak copy) stays paired with the watermarked image of the same
  # input. The weak copies are training inputs only: the calibration's positives stay the
  # real surrogates' outputs.
  wm_paired = np.tile(wm_attack, (len(surs) + len(weak) // len(wm_attack), 1, 1, 1))
  batches = sampler({"surrogate": np.concatenate([sur_attack, weak]), "watermarked": wm_paired},
                    b2, (cfg.seed, 31), mesh)
  neg_batches = sampler({"negative": negatives}, 2 * b2, (cfg.seed, 32), mesh)
  state2 = r._train("stage2", step2, state2, lambda s: {**batches(s), **neg_batches(s)},
                    cfg.stage2.steps)
  ext_vars = state2["extractor"]

  # ---- independent evaluation models, trained after stage 2 and never seen by R
  ev = cfg.evaluate
  eval_sur_vars = r.imitate("eval_surrogate", ev.surrogate, attack.a, wm_attack)
  eval_null_vars = r.imitate("eval_null", ev.null, attack.a, attack.b)

  # ---- calibration on images the evaluation never uses (attack split)
  extract = stage1.make_extract_fn(cfg)
  r_neg = predict(extract, ext_vars, negatives)
  r_pos = predict(extract, ext_vars, np.concatenate([wm_attack, sur_attack]))
  stat = lambda r: np.asarray(verdict.watermark_statistic(
      jnp.asarray(r), jnp.asarray(w), jnp.asarray(blank)))
  neg_stats = stat(r_neg)
  calibration = verdict.calibrate(neg_stats, stat(r_pos), margin=ev.margin,
                                  fpr=ev.per_image_fpr)
  # Which kind of negative the threshold has to clear (report.json, and the warning below).
  bounds = np.cumsum([0] + [len(x) for x in neg_sources.values()])
  neg_max = {k: float(np.max(neg_stats[lo:hi]))
             for k, lo, hi in zip(neg_sources, bounds[:-1], bounds[1:])}
  warns = []  # report.json "warnings", each also logged when it is found
  if calibration.threshold > 1.0:  # a kit that can never detect anything: say so loudly
    warns.append(
        f"R reads the watermark in some calibration negatives (largest statistic "
        f"{calibration.max_negative:.3f}; per source "
        f"{', '.join(f'{k} {v:.3f}' for k, v in neg_max.items())}), so this kit's threshold "
        "is above 1 and it will detect nothing; if only a few negatives are that high, set "
        "evaluate.per_image_fpr (e.g. 1e-3), else give stage 2 more negatives or drop "
        "surrogates that barely copy the watermark")
    log(f"warning: {warns[-1]}")
  # p0 also from negatives stage 2 never saw, and the kit keeps their scores per source:
  # verify ranks a suspect's images among them (verdict.rank_pvalues).
  r_held = {k: predict(extract, ext_vars, x)
            for k, x in heldout_negatives(cfg, r, protect, nulls).items()}
  score = lambda r: np.asarray(verdict.watermark_score(
      jnp.asarray(r), jnp.asarray(w), jnp.asarray(blank)))
  calibration = calibration.with_heldout({k: stat(v) for k, v in r_held.items()},
                                         {k: score(v) for k, v in r_held.items()})
  bit_calibration = None if pay is None else payload.calibrate_bits(
      pay, pay.soft_bits(r_neg), pay.soft_bits(r_pos), margin=ev.margin,
      heldout_soft=pay.soft_bits(np.concatenate(list(r_held.values()))))
  del r_neg, r_pos, r_held
  model_null_how, mn = "written with the kit", ev.get("model_null", None)
  if mn is not None and mn.models > 0:  # suspects ranked among null models (model_null.py)
    from deepwm_jax import model_null
    t = time.time()
    calibration = calibration.with_model_null(model_null.build(
        cfg, lambda x: predict(extract, ext_vars, x), w, blank, workdir, mn.models, mn.images,
        mn.steps, mn.ngf, log=log))
    model_null_how = f"built by deepwm run: {model_null.describe(**mn.to_dict())}"
    r.timing["model_null"] = round(time.time() - t, 2)

  # ---- evaluation on held-out validation images
  t = time.time()
  groups = {
      "watermarked": wm_val,
      "clean A": val.a, "clean B": val.b, "clean M(A)": m_val,
      **{_stage2_group(n): predict(fn, v, val.a) for n, (_, v, fn) in surs.items()},
      "surrogate (unseen)": predict(imitation.make_predict_fn(ev.surrogate, cfg), eval_sur_vars,
                                    val.a),
      **{f"null (protector {a})": predict(fn, v, val.a) for a, (_, v, fn) in nulls.items()},
      "null (independent)": predict(imitation.make_predict_fn(ev.null, cfg), eval_null_vars,
                                    val.a),
  }
  extractions = {k: predict(extract, ext_vars, x) for k, x in groups.items()}
  summary = {k: _group_summary(extractions[k], w, blank, calibration, ev) for k in groups}
  r.timing["evaluate"] = round(time.time() - t, 2)

  fid_psnr = float(np.mean(metrics.psnr(jnp.asarray(wm_val), jnp.asarray(m_val))))
  fid_ssim = float(np.mean(metrics.ssim(jnp.asarray(wm_val), jnp.asarray(m_val))))
  clean_stats = np.concatenate([summary[k]["_stats"] for k in ("clean A", "clean B", "clean M(A)")])
  clean_nc = np.concatenate([summary[k]["_nc"] for k in ("clean A", "clean B", "clean M(A)")])

  def entry(name, spec, key, seen):
    s = _public(summary[key])
    s.update(name=name, arch=spec.arch, loss=spec.loss, seen_in_stage2=seen,
             task_psnr=float(np.mean(metrics.psnr(jnp.asarray(groups[key]), jnp.asarray(wm_val)))),
             residual_corr=residual_corr(groups[key], m_val, wm_val))
    return s

  rep = {
      "fidelity": {"psnr": fid_psnr, "ssim": fid_ssim},
      "task": {"psnr_M_vs_B": float(np.mean(metrics.psnr(jnp.asarray(m_val), jnp.asarray(val.b)))),
               "psnr_A_vs_B": float(np.mean(metrics.psnr(jnp.asarray(val.a), jnp.asarray(val.b))))},
      "watermarked": _public(summary["watermarked"]),
      "clean": {**_public(summary["clean A"]),
                "success_rate": float(np.mean(verdict.per_image_decisions(clean_stats, calibration))),
                "paper_success_rate": float(metrics.paper_success_rate(clean_nc, ev.nc_threshold)),
                "nc_mean": float(np.mean(clean_nc)), "n_images": int(len(clean_stats)),
                "by_kind": {k: _public(summary[k]) for k in ("clean A", "clean B", "clean M(A)")}},
      "surrogates": [entry("surrogate-stage2" + n[len("surrogate"):].replace("_", "-"), spec,
                           _stage2_group(n), True) for n, (spec, _, _) in surs.items()]
                    + [entry("surrogate-unseen", ev.surrogate, "surrogate (unseen)",
                             ev.surrogate.arch in {spec.arch for spec, _, _ in surs.values()})],
      "null": [entry("null-independent", ev.null, "null (independent)", False)]
              + [entry(f"null-protector-{a}", spec, f"null (protector {a})", True)
                 for a, (spec, _, _) in nulls.items()],
      "calibration": calibration.to_dict(),
      "calibration_max_negative_by_source": neg_max,
      "alpha": ev.alpha, "min_success_rate": ev.min_success_rate,
      "timing": {**r.timing, "total": round(time.time() - t0, 2)},
      "n_val": int(d.n_val),
      "image_size": int(d.image_size), "channels": int(d.channels),
  }
  specific = _protect(cfg).strategy == "specific"
  for msg in [] if specific else kit_warnings(cfg, rep):  # M' is checked once it exists
    warns.append(msg)
    log(f"warning: {msg}")
  rep["warnings"] = warns
  if pay is not None:  # the bit payload's verdict and decoded message per group
    rep["payload"] = {
        "message": pay.message, "bits": pay.bits, "ecc_bytes": pay.ecc_bytes,
        "n_coded": pay.n_coded, "cell": pay.cell, "calibration": bit_calibration.to_dict(),
        "groups": {k: payload.group_summary(pay, pay.soft_bits(extractions[k]), bit_calibration,
                                            ev.alpha, ev.min_success_rate) for k in groups}}

  # ---- the verification kit and the report
  kit_lib.write_kit(os.path.join(workdir, "kit"), cfg, emb_vars, ext_vars, w, blank, calibration,
                    owner=owner, payload=None if pay is None else
                    {**pay.record(), "calibration": bit_calibration.to_dict()},
                    model_null_how=model_null_how)
  n = min(6, d.n_val)
  grid = {"A": val.a[:n], "B": m_val[:n], "B'": wm_val[:n],
          "|B'-B| x10": np.clip(10 * np.abs(wm_val[:n] - m_val[:n]), 0, 1),
          "R(B')": _show(extractions["watermarked"][:n]), "R(B)": _show(extractions["clean M(A)"][:n]),
          "R(surrogate)": _show(extractions["surrogate (unseen)"][:n]),
          "R(null)": _show(extractions["null (independent)"][:n])}
  curves = {name: loop.read_log(os.path.join(workdir, "logs", f"{name}.jsonl"))
            for name in ("task", "stage1", "surrogate", "stage2", "eval_surrogate")}
  stats = {k: v["_stats"] for k, v in summary.items()}
  stats.update({f"nc:{k}": v["_nc"] for k, v in summary.items()})
  if parallel.is_primary():  # one writer; every process computed the same report
    report.write_report(workdir, rep, grid=grid, curves={k: v for k, v in curves.items() if v},
                        stats=stats, threshold=calibration.threshold)
  log(f"wrote {os.path.join(workdir, 'report.md')} and the kit {os.path.join(workdir, 'kit')}")
  if specific:  # H absorbed into M' (issue 6, train/absorb.py)
    from deepwm_jax.train import absorb
    rep = absorb.run(r, rep, calibration, protect=protect, attack=attack, val=val,
                     m_protect=m_protect, m_val=m_val, wm_val=wm_val, emb_vars=emb_vars,
                     ext_vars=ext_vars, w=w, blank=blank)
    for msg in rep["specific"]["warnings"]:  # M's self-check, appended to rep["warnings"]
      log(f"warning: {msg}")
    log(f"model-specific strategy: M' and its surrogates added to {workdir}/report.md")
  return rep


def kit_warnings(cfg, rep: dict) -> list[str]:
  """What makes this kit unfit to deploy, read off its own report (empty when nothing does).

  The kit's self-checks are the deployed outputs (H(M(A)), or M'(A) once rep has 'specific')
  and the surrogates of stage 2's specs trained on them, judged on held-out images. When R
  cannot tell the surrogates' outputs from innocent ones, the calibration keeps p-values valid
  by raising the threshold and the kit then catches no imitator. On an H100
  (docs/quickstart_study.md) this check flagged exactly the two of 14 agnostic kits whose
  probe zoo had no member at 90%: one plain stage 2 (which weak copies then rescued) and one
  with stage2.weak_copies=0.25 (which weak copies broke). A threshold above 1 has its own
  warning, logged at calibration.
  """
  cal = rep["calibration"]
  if cal["threshold"] > 1.0:
    return []
  deployed = rep.get("specific", rep)  # M' is what the absorbed strategy deploys
  outputs = "M' outputs" if "specific" in rep else "protected outputs"
  by_source = rep.get("calibration_max_negative_by_source") or {}
  worst = max(by_source, key=by_source.get) if by_source else None
  why = f"threshold {cal['threshold']:.3f}" + (
      f", calibration negatives up to {by_source[worst]:.3f} from {worst}" if worst else "")
  wc = float(cfg.stage2.get("weak_copies", 0.0))
  wc_hint = (f"; stage2.weak_copies={wc:g} can make R read innocent outputs too: run again "
             "(new workdir) with a larger value or 0")
  if not deployed["watermarked"]["detected"]:
    return [f"this kit does not detect the {outputs} on held-out images (success rate "
            f"{100 * deployed['watermarked']['success_rate']:.0f}%; {why})"
            + (wc_hint if wc else "; train stage 1 longer, lower the fidelity weights, or run "
               "again with another seed")]
  seen = [s for s in deployed["surrogates"] if s["name"].startswith("surrogate-stage2")]
  if not seen or any(s["detected"] for s in seen):
    return []
  return ["this kit detects none of its stage-2 surrogates on held-out images ("
          + ", ".join(f"{s['name']} {100 * s['success_rate']:.0f}%" for s in seen)
          + f"; {why}), so it will not catch imitators"
          + (wc_hint if wc else "; run again (new workdir) with stage2.weak_copies=0.25 and "
             "evaluate.per_image_fpr=1e-3, or with another seed")]


def _stage2_group(name: str) -> str:
  """'surrogate' -> 'surrogate (stage 2)', 'surrogate_resnet' -> 'surrogate (stage 2 resnet)'."""
  return "surrogate (stage 2" + name[len("surrogate"):].replace("_", " ") + ")"


def _protect(cfg):
  """cfg.protect, or the default (deep, agnostic) for configs written before it existed."""
  return cfg.protect if "protect" in cfg else config_lib.base_config().protect


def residual_corr(suspect, clean, watermarked) -> float:
  """How much of the watermark residual B' - B a model reproduces: corr(SM(A) - M(A), B' - B).

  About 0 for a model that never saw the watermark; it tells whether a surrogate copied the
  watermark at all, independently of how well the extractor reads it.
  """
  d, wm = (suspect - clean).ravel(), (watermarked - clean).ravel()
  return float(np.corrcoef(d, wm)[0, 1])


def _show(r):
  return np.clip(r, 0, 1)


def _group_summary(r, w, blank, calibration, ev) -> dict:
  rj = jnp.asarray(r)
  stats = np.asarray(verdict.watermark_statistic(rj, jnp.asarray(w), jnp.asarray(blank)))
  nc = np.asarray(metrics.nc(rj, jnp.asarray(w)))
  v = verdict.decide(stats, calibration, ev.alpha, min_success_rate=ev.min_success_rate)
  return {"success_rate": v.success_rate, "paper_success_rate":
          float(metrics.paper_success_rate(nc, ev.nc_threshold)), "nc_mean": float(np.mean(nc)),
          "centered_nc_mean": float(np.mean(np.asarray(metrics.centered_nc(rj, jnp.asarray(w))))),
          "stat_mean": float(np.mean(stats)), "p_value": v.p_value, "detected": v.detected,
          "n_images": int(len(stats)), "_stats": stats, "_nc": nc}


def _public(s: dict) -> dict:
  return {k: v for k, v in s.items() if not k.startswith("_")}


def _check_workdir_config(cfg, workdir: str) -> None:
  """Resuming with a different config would mix incompatible checkpoints: refuse."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = json.loads(cfg.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    defaults = json.loads(config_lib.base_config().to_json_best_effort())
    if "protect" not in saved and current.get("protect") == defaults["protect"]:
      saved["protect"] = current["protect"]  # written before protect.* existed: the default
    if isinstance(saved.get("watermark"), dict) and saved["watermark"].get("spec") != "payload":
      # written before the payload keys existed: they change nothing for other watermarks
      saved["watermark"] = {**current.get("watermark", {}), "spec": saved["watermark"]["spec"]}
    for section, k in (("data", "tfds_dir"), ("data", "tfds_max_images"),
                       ("attack", "extra_surrogate_archs"), ("embedder", "arch"),
                       ("embedder", "depth"), ("evaluate", "per_image_fpr"),
                       ("stage2", "weak_copies"), ("stage1", "fidelity_band")):
      if k in current.get(section, {}):  # added later: older runs had the default
        saved.setdefault(section, {}).setdefault(k, defaults[section][k])
    for k in ("mesh", "distributed"):  # the topology may change between runs (resume anywhere)
      saved.pop(k, None)
      if k in current:
        saved[k] = current[k]
    # The model null only adds to the calibration, and its checkpoints are named by what they
    # are: a finished run may be resumed with one to add it to the kit.
    saved.get("evaluate", {}).pop("model_null", None)
    if "model_null" in current.get("evaluate", {}):
      saved.setdefault("evaluate", {})["model_null"] = current["evaluate"]["model_null"]
    if saved != current:
      diff = sorted(_diff_keys(saved, current))[:5]
      raise DeepwmError(f"workdir '{workdir}' holds a run with a different config (differs at "
                        f"{', '.join(diff)}); use a new --workdir, or the same config to resume")
    return
  with open(path, "w") as f:
    json.dump(current, f, indent=1)


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix.rstrip(".")
