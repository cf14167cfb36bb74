"""`deepwm run`: protect a model end to end and measure how well the protection holds.

  data -> task model M -> stage 1: the barrier H, R, D -> the attack stage 2 hardens R
  against (surrogates on (A, B'), the protector's null models on clean pairs) -> stage 2: R
  fine-tuned -> independent evaluation models -> calibration -> evaluation on held-out images
  -> kit + report [-> M', the barrier absorbed into the task network]

Each stage is one function in deepwm_jax/stages/; this module only composes them. Every stage
checkpoints, so re-running the same command resumes and skips finished stages.
"""
import json
import os
import time

import jax
import ml_collections
import numpy as np

from deepwm_jax import config as config_lib
from deepwm_jax import kit as kit_lib
from deepwm_jax import parallel, payload, report
from deepwm_jax.errors import DeepwmError
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.stages import (absorb, attack, barrier, calibrate, common, evaluate, full_size,
                               harden, keyed, keyed_filter, task, traditional)
from deepwm_jax.train import loop


def run(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
  """Runs every stage of `cfg` in `workdir` (resuming) and returns the report (report.json)."""
  mesh, log = _start(cfg, workdir, log)
  if _protect(cfg).method == "traditional":
    return _run_traditional(cfg, workdir, log)
  if _protect(cfg).method == "keyed":
    return _run_keyed(cfg, workdir, log, mesh)
  if _protect(cfg).method == "filter":
    return _run_filter(cfg, workdir, log, mesh)
  r = common.Runner(cfg, workdir, log, mesh)
  t0 = time.time()

  # ---- data: three disjoint splits by image (protect / attack / val), and the watermark
  splits = task.load_splits(cfg)
  wm = barrier.watermark(cfg)
  r.timing["data"] = round(time.time() - t0, 2)

  # ---- the target model M
  m_protect, m_attack, m_val = task.outputs(r, [splits.protect, splits.attack, splits.val])

  # ---- stage 1: the barrier (on crops with their surroundings when stage1.context is set)
  if cfg.stage1.get("context", 0):
    a_c, m_c, m_ctx = barrier.context_pairs(r, cfg, splits.protect)
    bar = barrier.train(r, a_c, m_c, wm, b_ctx=m_ctx)
  else:
    bar = barrier.train(r, splits.protect.a, m_protect, wm)
  wm_attack = bar.embed(m_attack)   # what the attacker gets from the API
  wm_val = bar.embed(m_val)

  # ---- the attack the extractor is hardened against, and the protector's null models
  surrogates = attack.surrogates(r, splits.attack.a, wm_attack)
  sur_attack = np.concatenate([s(splits.attack.a) for s in surrogates.values()])
  nulls = attack.protector_nulls(r, splits.attack.a, m_attack)

  # ---- stage 2: fine-tune R
  neg_sources = harden.negatives(cfg, splits.attack, m_attack, nulls)
  weak = harden.weak_copies(cfg, neg_sources, wm_attack, m_attack)
  extractor = harden.train(r, bar.extractor, wm.w, wm.blank, sur_attack, len(surrogates),
                           wm_attack, np.concatenate(list(neg_sources.values())), weak)

  # ---- independent evaluation models, trained after stage 2 and never seen by R
  unseen, independent_null = evaluate.independent_models(r, splits.attack.a, wm_attack,
                                                         splits.attack.b)

  # ---- calibration on images the evaluation never uses (attack split)
  cal = calibrate.run(r, extractor, wm, neg_sources, np.concatenate([wm_attack, sur_attack]),
                      splits.protect, nulls)

  # ---- evaluation on held-out validation images
  t = time.time()
  ev = evaluate.judge(r, extractor, wm, cal.calibration, splits, m_val, wm_val, surrogates,
                      nulls, unseen, independent_null)
  r.timing["evaluate"] = round(time.time() - t, 2)
  d = cfg.data
  rep = {**evaluate.report_dict(cfg, ev, splits, m_val, wm_val, surrogates, nulls, unseen,
                                independent_null, cal.calibration, cal.max_negative_by_source),
         "timing": {**r.timing, "total": round(time.time() - t0, 2)},
         "n_val": int(d.n_val), "image_size": int(d.image_size), "channels": int(d.channels)}
  t = time.time()
  after = evaluate.after_serving(cfg, extractor, wm, cal.calibration, ev)
  if after is not None:  # the same groups after JPEG, resizes, crops, blur and noise, in sets
    rep["served"] = after
    rep["timing"]["served"] = round(time.time() - t, 2)
    rep["timing"]["total"] = round(time.time() - t0, 2)
  specific = _protect(cfg).strategy == "specific"
  warns = list(cal.warnings)
  for msg in [] if specific else evaluate.kit_warnings(cfg, rep):  # M' is checked once it exists
    warns.append(msg)
    log(f"warning: {msg}")
  rep["warnings"] = warns
  pay = wm.payload
  if pay is not None:  # the bit payload's verdict and decoded message per group
    rep["payload"] = {
        "message": pay.message, "bits": pay.bits, "ecc_bytes": pay.ecc_bytes,
        "n_coded": pay.n_coded, "cell": pay.cell, "calibration": cal.bit_calibration.to_dict(),
        "groups": {k: payload.group_summary(pay, pay.soft_bits(ev.extractions[k]),
                                            cal.bit_calibration, cfg.evaluate.alpha,
                                            cfg.evaluate.min_success_rate)
                   for k in ev.groups}}

  # ---- the verification kit and the report
  kit_lib.write_kit(os.path.join(workdir, "kit"), cfg, bar.embedder, extractor, wm.w, wm.blank,
                    cal.calibration, owner=wm.owner, payload=None if pay is None else
                    {**pay.record(), "calibration": cal.bit_calibration.to_dict()},
                    model_null_how=cal.model_null_how)
  full = _full_size(cfg, workdir, rep, log)
  _write_report(cfg, workdir, rep, ev, splits, m_val, wm_val, cal.calibration.threshold, full)
  log(f"wrote {os.path.join(workdir, 'report.md')} and the kit {os.path.join(workdir, 'kit')}")

  # ---- the model-specific strategy: H absorbed into M'
  if specific:
    rep = absorb.run(r, rep, cal.calibration, splits, m_protect, m_val, wm_val, bar, extractor,
                     wm)
    for msg in rep["specific"]["warnings"]:  # M's self-check, appended to rep["warnings"]
      log(f"warning: {msg}")
    if parallel.is_primary():
      report.write_specific(workdir, rep)
    log(f"model-specific strategy: M' and its surrogates added to {workdir}/report.md")
  return rep


def _full_size(cfg, workdir, rep, log, suspects: dict | None = None,
               references: np.ndarray | None = None) -> dict:
  """The written kit on whole held-out photos (stages/full_size.py): rep["full_size"], and
  the figure's panels; `suspects`' whole photos judged too (full_size.judge_suspects), against
  `references` where the kit reads them."""
  if not parallel.is_primary():  # process 0 writes the report, and reads its kit here
    return {}
  photos = full_size.photos_for(pairs_lib.whole_images(cfg, "val"))
  photos = [p for p in photos if min(p.shape[:2]) >= cfg.data.image_size]
  if not photos:
    return {}
  t0 = time.time()
  rep["full_size"], panels = full_size.study(kit_lib.load_kit(os.path.join(workdir, "kit")),
                                             photos, suspects, references)
  rep["timing"]["full_size"] = round(time.time() - t0, 2)
  first = rep["full_size"]["photos"][0]
  log(f"full size: {first['width']}x{first['height']} photo at {first['psnr']:.1f} dB, "
      f"protected detected alone: {first['protected']['detected']} "
      f"(p {first['protected']['p_value']:.2g}), clean: {first['clean']['detected']}")
  for name, g in rep["full_size"].get("suspects", {}).items():
    log(f"whole photos served by {name} ({g['role']}): {g['detected_alone']} of "
        f"{g['n_images']} detected alone, as a set p {g['set']['p_value']:.2g}")
  return panels


def _write_report(cfg, workdir, rep, ev, splits, m_val, wm_val, threshold, full=None) -> None:
  """report.json, report.md and its figures (one writer: process 0)."""
  n = min(6, cfg.data.n_val)
  show = lambda x: np.clip(x, 0, 1)
  ex = ev.extractions
  grid = {"A": splits.val.a[:n], "B": m_val[:n], "B'": wm_val[:n],
          "|B'-B| x10": np.clip(10 * np.abs(wm_val[:n] - m_val[:n]), 0, 1),
          "R(B')": show(ex["watermarked"][:n]), "R(B)": show(ex["clean M(A)"][:n]),
          "R(surrogate)": show(ex["surrogate (unseen)"][:n]),
          "R(null)": show(ex["null (independent)"][:n])}
  curves = {name: loop.read_log(os.path.join(workdir, "logs", f"{name}.jsonl"))
            for name in ("task", "stage1", "surrogate", "stage2", "eval_surrogate")}
  stats = {k: v["_stats"] for k, v in ev.summary.items()}
  stats.update({f"nc:{k}": v["_nc"] for k, v in ev.summary.items()})
  if parallel.is_primary():  # one writer; every process computed the same report
    report.write_report(workdir, rep, grid=grid, curves={k: v for k, v in curves.items() if v},
                        stats=stats, threshold=threshold, full_size=full)


def _run_traditional(cfg, workdir: str, log) -> dict:
  """protect.method='traditional': a spread-spectrum key instead of H and R."""
  r = common.Runner(cfg, workdir, log)
  kit_path = os.path.join(workdir, "kit")
  rep, grid, stats, threshold = traditional.run(
      r, lambda ss, calibration: kit_lib.traditional.write_kit(kit_path, cfg, ss, calibration))
  full = _full_size(cfg, workdir, rep, log)
  report.write_report(workdir, rep, grid=grid, stats=stats, threshold=threshold, full_size=full)
  log(f"wrote {os.path.join(workdir, 'report.md')} and the kit {kit_path}")
  return rep


def _run_keyed(cfg, workdir: str, log, mesh) -> dict:
  """protect.method='keyed': H and R over random keys, the owner's secret key, the exact test."""
  return _run_exact(cfg, workdir, log, mesh, lambda r, path, owner: (*keyed.run(
      r, lambda emb, ext, key: kit_lib.keyed.write_kit(path, cfg, emb, ext, key, owner)), None))


def _run_filter(cfg, workdir: str, log, mesh) -> dict:
  """protect.method='filter': the keyed filter, the owner's secret key, the exact test."""
  return _run_exact(cfg, workdir, log, mesh, lambda r, path, owner: keyed_filter.run(
      r, lambda key: kit_lib.keyed_filter.write_kit(path, cfg, key, owner)))


def _run_exact(cfg, workdir: str, log, mesh, stage) -> dict:
  """A method judged by the exact key test: `stage(runner, kit path, owner)` writes the kit and
  returns (report, grid, innocent p-values, whole-photo suspects, their references or None);
  then the full-size study and the report."""
  r = common.Runner(cfg, workdir, log, mesh)
  t0 = time.time()
  kit_path = os.path.join(workdir, "kit")
  rep, grid, innocent_p, whole, whole_ref = stage(r, kit_path, payload.owner_of(cfg))
  full = _full_size(cfg, workdir, rep, log, whole, whole_ref)
  rep["timing"]["total"] = round(time.time() - t0, 2)
  if parallel.is_primary():
    report.write_keyed(workdir, rep, grid, innocent_p, full)
  log(f"wrote {os.path.join(workdir, 'report.md')} and the kit {kit_path}")
  return rep


def _start(cfg, workdir: str, log):
  """Validates the config, joins the other processes (if any), builds the mesh and checks the
  workdir's config; returns (mesh, log) with log silenced outside process 0."""
  config_lib.validate(cfg)
  parallel.initialize(cfg)  # a no-op unless this is one process of several
  mesh = parallel.make_mesh(cfg)
  parallel.check_config_batches(cfg, mesh)
  if not parallel.is_primary():
    log = lambda *_: None
  if parallel.data_shards(mesh) > 1 or jax.process_count() > 1:
    log(f"training on {parallel.describe(mesh)}")
  if parallel.is_primary():  # process 0 writes config.json, the others then check against it
    check_workdir_config(cfg, workdir)
  parallel.barrier("workdir-config")
  if not parallel.is_primary():
    check_workdir_config(cfg, workdir)
  return mesh, log


def _protect(cfg):
  """cfg.protect, or the default (deep, agnostic) for configs written before it existed."""
  return cfg.protect if "protect" in cfg else config_lib.base_config().protect


def check_workdir_config(cfg, workdir: str) -> None:
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
    for path in ("data.tfds_dir", "data.tfds_max_images", "attack.extra_surrogate_archs",
                 "embedder.arch", "embedder.depth", "evaluate.per_image_fpr",
                 "stage2.weak_copies", "stage1.fidelity_band", "stage1.fidelity_band.ramp",
                 "protect.keyed", "protect.filter",
                 "stage1.context", "stage1.distortions", "stage1.distortion_ramp",
                 "stage2.distortions",
                 "protect.absorb.distortions", "protect.keyed.reading_loss",
                 "protect.keyed.margin", "protect.keyed.symmetry", "evaluate.served",
                 "evaluate.set_size"):
      _default_if_missing(saved, current, defaults, path.split("."))
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


def _default_if_missing(saved: dict, current: dict, defaults: dict, keys: list[str]) -> None:
  """A key added after `saved` was written: older runs had its default. Only where `current`
  has it and `saved` has the section that holds it."""
  for k in keys[:-1]:
    if not (isinstance(saved.get(k), dict) and isinstance(current.get(k), dict)
            and isinstance(defaults.get(k), dict)):
      return
    saved, current, defaults = saved[k], current[k], defaults[k]
  if keys[-1] in current and keys[-1] in defaults:
    saved.setdefault(keys[-1], defaults[keys[-1]])


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix.rstrip(".")
