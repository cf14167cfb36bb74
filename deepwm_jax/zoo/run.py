"""`deepwm attack`: train the zoo against a kit, judge every member, write the report.

Workdir layout (everything a re-run needs to skip finished work):
  zoo.json                 the kit this zoo attacks (a re-run against another kit is refused)
  checkpoints/<group>/     orbax checkpoints of each group's stacked state (resumable)
  logs/<group>.jsonl       learning curves (mean and worst member)
  rows/<row>.json          one evaluated member (or member + removal attack): metrics and
                           per-image statistics
  outputs/<member>.npy     held-out outputs of removal-attack targets (float16), so new
                           removal attacks are evaluated without retraining
  groups/<group>.json      written last for each group: it is finished
  report.json, report.md, figures/
"""
import hashlib
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from deepwm_jax import config as config_lib
from deepwm_jax import kit as kit_lib
from deepwm_jax import metrics, verdict
from deepwm_jax.stages import common, full_size
from deepwm_jax.zoo import removal
from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import loop
from deepwm_jax.zoo import data as data_lib
from deepwm_jax.zoo import grid, perceptual, report as zoo_report, train


def run(zcfg, kit_path: str, workdir: str, log=print) -> dict:
  t0 = time.time()
  kit = kit_lib.load_kit(kit_path)
  members = grid.expand(zcfg)
  rows_todo = grid.removal_rows(zcfg, members)
  os.makedirs(workdir, exist_ok=True)
  _check_workdir(workdir, kit, data_lib.protected_mode(kit, zcfg))

  vgg, skipped = None, []
  if any(m.pixel_loss == "perceptual" for m in members):
    if zcfg.perceptual.weights:
      vgg = [tuple(jnp.asarray(a) for a in pair)
             for pair in perceptual.load_weights(zcfg.perceptual.weights)]
    else:
      skipped = [m for m in members if m.pixel_loss == "perceptual"]
      log(f"[zoo] perceptual.weights is not set: skipping {len(skipped)} perceptual-loss "
          f"member(s) ({', '.join(m.name for m in skipped)}); see docs/zoo.md to provide VGG16 "
          f"weights")
      members = [m for m in members if m.pixel_loss != "perceptual"]
      rows_todo = [(m, s) for m, s in rows_todo if m.pixel_loss != "perceptual"]
  mesh = train.make_mesh(zcfg.mesh.devices)
  groups = train.groups(members, zcfg, mesh)
  log(f"[zoo] {len(members)} members in {len(groups)} groups, {len(rows_todo)} removal rows, "
      f"on {mesh.devices.size} device(s)")

  t = time.time()
  d = data_lib.load(kit, zcfg, workdir, max(m.n_attack for m in members),
                    any(m.overwrite for m in members), log)
  timing = {"data": round(time.time() - t, 2)}
  removal_targets = {m.name for m, _ in rows_todo}

  bar = tqdm(groups, desc="zoo groups", disable=not sys.stderr.isatty(), dynamic_ncols=True)
  group_info = {}
  for g in bar:
    group_info[g.name] = _train_group(g, zcfg, kit, d, mesh, vgg, workdir, removal_targets, log)
    timing[f"group {g.name}"] = group_info[g.name]["seconds"]
  bar.close()

  t = time.time()
  rows, per_image = [], {}
  for m in members:
    row = _read_row(workdir, m.name)
    rows.append(row["row"])
    per_image[m.name] = row
  for m, spec in rows_todo:
    name = f"{m.name}@{spec}"
    row = _read_row(workdir, name, missing_ok=True)
    if row is None:
      outputs = np.load(_outputs_path(workdir, m.name)).astype(np.float32)
      attacked = removal.apply(spec, outputs, seed=zcfg.seed)
      row = _evaluate(kit, attacked, d, m, zcfg, removal_spec=spec)
      _write_json(_row_path(workdir, name), row)
    rows.append(row["row"])
    per_image[name] = row
  timing["removal_eval"] = round(time.time() - t, 2)

  refs = data_lib.reads_reference(kit)
  reference = {"watermarked": _stats(kit, d.eval_wm, d.eval_clean if refs else None),
               "clean": _stats(kit, np.concatenate([d.eval_a, d.eval_clean]),
                               np.concatenate([d.eval_clean] * 2) if refs else None)}
  timing["total"] = round(time.time() - t0, 2)
  rep = zoo_report.build(rows, reference, skipped, group_info, timing, kit, zcfg, mesh)
  # What was attacked: the kit's method and how the protected outputs were made.
  rep = {**rep, "method": getattr(kit, "method", "deep"), "protected": d.protected}
  zoo_report.write(workdir, rep, per_image, reference, kit.threshold)
  log(f"[zoo] wrote {os.path.join(workdir, 'report.md')}")
  return rep


# ----------------------------------------------------------------------------- one group

def _train_group(g, zcfg, kit, d, mesh, vgg, workdir, removal_targets, log) -> dict:
  marker = os.path.join(workdir, "groups", f"{g.name}.json")
  if os.path.exists(marker) and all(os.path.exists(_row_path(workdir, m.name))
                                    for m in g.members):
    with open(marker) as f:
      info = json.load(f)
    log(f"[zoo] group {g.name} finished earlier: skipped")
    return info
  t = time.time()
  setup = train.setup_for(g, zcfg, kit.image_size, kit.channels, vgg)
  members = train.padded(list(g.members), mesh)
  state = train.init_group(setup, members, zcfg.seed, mesh)
  step = train.make_group_step(setup, mesh)
  batches = train.batch_fn(members, {m.name: _member_data(m, d) for m in members}, zcfg.seed,
                           mesh)
  log(f"[zoo] group {g.name}: {len(g.members)} member(s) x {g.steps} steps")
  t_train = time.time()
  state = loop.run(g.name, step, state, batches, g.steps, workdir, jax.random.PRNGKey(0),
                   log_every=zcfg.log_every, ckpt_every=zcfg.ckpt_every, log=log)
  train_s = time.time() - t_train
  predict_fn = train.make_predict(setup, mesh)
  outputs = train.predict(predict_fn, state["members"]["model"], d.eval_a)
  # Every member serving whole held-out photos too, one photo per call to bound memory.
  whole = (None if d.whole_a is None else
           train.predict(predict_fn, state["members"]["model"], d.whole_a, batch=1))
  for k, m in enumerate(g.members):
    row = _evaluate(kit, outputs[k], d, m, zcfg, whole=None if whole is None else whole[k])
    _write_json(_row_path(workdir, m.name), row)
    if m.name in removal_targets:
      path = _outputs_path(workdir, m.name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      np.save(path, outputs[k].astype(np.float16))
  info = {"members": [m.name for m in g.members], "padded_to": len(members),
          "steps": g.steps, "seconds": round(time.time() - t, 2),
          "train_seconds": round(train_s, 2),
          # Includes compilation and checkpoints; zoo.bench measures the step alone.
          "member_steps_per_s": round(len(g.members) * g.steps / max(train_s, 1e-9), 3)}
  _write_json(marker, info)
  return info


def _member_data(m, d):
  if m.null:
    y = d.truth if m.truth else d.clean
  elif m.overwrite:
    y = d.overwrite
  else:
    y = d.wm
  if m.n_attack > len(d.a):
    raise DeepwmError(f"member {m.name} wants n_attack={m.n_attack} but only {len(d.a)} pairs "
                      f"were made")
  return d.a[:m.n_attack], y[:m.n_attack]


# ----------------------------------------------------------------------------- judging

def _judge(kit, images, references=None):
  """Per image: the kit's statistic, the paper's NC and a centred correlation; and the kit's own
  calibrated decision on the set, as `deepwm verify` makes it (one pass of the extractor).

  A deep kit extracts R(x) and compares it with its watermark image; a keyed or filter kit
  reads its key and decides by the exact test (secret_key.py). A traditional
  (spread-spectrum) kit has no extractor: its statistic is the z-score and its NC the
  normalised correlation with the key's pattern, which is already centred (mean 0 on images
  that never saw the pattern), so it is also the centred number.
  """
  if getattr(kit, "method", "deep") == "traditional":
    z, nc = kit.watermark.correlations(images)
    return np.asarray(z), np.asarray(nc), np.asarray(nc), kit.verify(images)
  if getattr(kit, "method", "deep") in ("keyed", "filter"):
    # The statistic is the exact test's signed-rank score (0.5 on average without the key),
    # which the threshold cuts; there is no NC, so its columns hold the fraction of key bits
    # read right, as it is and centred: 2 * fraction - 1. A filter kit reads the images
    # against the owner's outputs for the same inputs (`references`).
    v = kit.verify(images, **({} if references is None else {"references": references}))
    frac = v.matches_per_image / v.n_bits
    return v.scores_per_image, frac, 2 * frac - 1, v
  extracted = kit.extract(images)
  r = jnp.asarray(extracted)
  w, blank = jnp.asarray(kit.watermark), jnp.asarray(kit.blank)
  return (np.asarray(verdict.watermark_statistic(r, w, blank)), np.asarray(metrics.nc(r, w)),
          np.asarray(metrics.centered_nc(r, w)), kit.verify_extracted(extracted))


def _stage2_families(kit) -> set[str]:
  """The surrogate architectures the kit's extractor was fine-tuned against in stage 2."""
  if getattr(kit, "method", "deep") == "keyed":
    return set(kit.config.protect.keyed.get("stage2_archs", ()))
  if getattr(kit, "method", "deep") == "filter":  # no extractor, nothing fine-tuned
    return set()
  return {s.arch for s in config_lib.stage2_surrogates(kit.config).values()}


def _stats(kit, images, references=None):
  stats, nc, _, _ = _judge(kit, images, references)
  return {"stats": stats.tolist(), "nc": nc.tolist()}


def _evaluate(kit, outputs, d, m, zcfg, removal_spec: str = "none", whole=None) -> dict:
  """The kit's calibrated verdict on a member's held-out outputs, plus the paper's numbers;
  with `whole` (the member's outputs on whole held-out photos), the kit's verdict on each
  photo alone and on all of them as one set."""
  refs = d.eval_clean if data_lib.reads_reference(kit) else None
  stats, nc, centered, v = _judge(kit, outputs, refs)
  family = zcfg.archs[m.arch]["arch"]
  row = {
      "name": m.name if removal_spec == "none" else f"{m.name}@{removal_spec}",
      "member": m.name, "arch": m.arch, "family": family, "loss": m.loss,
      "augmentation": m.augmentation, "removal": removal_spec, "null": m.null,
      "overwrite": m.overwrite, "truth": m.truth, "n_attack": m.n_attack, "lr": m.lr,
      "steps": m.steps,
      "seed": m.seed,
      "seen_in_stage2": family in _stage2_families(kit),
      "success_rate": v.success_rate, "detected": v.detected, "p_value": v.p_value,
      "stat_mean": v.stat_mean,
      "paper_success_rate": v.paper_success_rate,   # NC > the kit's nc_threshold (0.95)
      "nc_mean": float(np.mean(nc)),
      "centered_nc_mean": float(np.mean(centered)),
      "task_psnr": common.mean_psnr(outputs, d.eval_wm),
      "residual_corr": common.residual_corr(outputs, d.eval_clean, d.eval_wm),
      "n_images": int(len(stats)),
  }
  if whole is not None:
    w = full_size.judge_suspects(kit, {m.name: ("", whole)}, d.whole_clean)[m.name]
    row.update(whole_photos=f"{w['detected_alone']}/{w['n_images']}",
               whole_set_p=w["set"]["p_value"], whole_set_detected=w["set"]["detected"],
               whole_side=w["height"])
  return {"row": row, "stats": stats.tolist(), "nc": nc.tolist()}


# ----------------------------------------------------------------------------- files

def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_.=@" else "_" for c in name)


def _row_path(workdir, name):
  return os.path.join(workdir, "rows", _safe(name) + ".json")


def _outputs_path(workdir, name):
  return os.path.join(workdir, "outputs", _safe(name) + ".npy")


def _read_row(workdir, name, missing_ok=False):
  path = _row_path(workdir, name)
  if not os.path.exists(path):
    if missing_ok:
      return None
    raise DeepwmError(f"zoo result {path} is missing; re-run the same command to compute it")
  with open(path) as f:
    return json.load(f)


def _write_json(path, obj):
  from deepwm_jax import report
  report.write_text_atomic(path, json.dumps(report.to_jsonable(obj), indent=1))


def _check_workdir(workdir: str, kit, protected: str) -> None:
  """A zoo's results hold only for the kit and the protected outputs they were measured
  against (zoo.json written before `protected` existed: the kit's embedding)."""
  with open(os.path.join(kit.path, "manifest.json"), "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  path = os.path.join(workdir, "zoo.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("kit_manifest_sha256") != digest:
      raise DeepwmError(f"workdir '{workdir}' holds a zoo against another kit "
                        f"({saved.get('kit')}); use a new --workdir for this kit")
    if saved.get("protected", "kit") != protected:
      raise DeepwmError(f"workdir '{workdir}' holds a zoo against protected='"
                        f"{saved.get('protected', 'kit')}' outputs, not '{protected}'; use a new "
                        f"--workdir")
    return
  _write_json(path, {"kit": kit.path, "kit_manifest_sha256": digest, "protected": protected})
