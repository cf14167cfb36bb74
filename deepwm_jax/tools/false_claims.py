"""False-claim study: does `verify` stay silent on innocent images and models, and speak up on
the protected ones? (results in docs/verdicts.md)

  python -m deepwm_jax.tools.false_claims --kit runs/qs_payload/kit --workdir runs/fc

Given a kit, with the kit's own data source and task:
  - clean images: >= 1000 fresh crops of the validation photos, inputs A and targets B,
    verified in sets of `set_size` images;
  - null models: `n_nulls` image-to-image models trained on clean pairs (A, B) only, with other
    seeds and architectures (unet / resnet / cnn in turn), each trained on crops of its own and
    verified on its outputs for validation crops of its own;
  - clean crops of the photos the kit's null came from (`n_calibration_photos`, attack split):
    against their own source of the null these are exchangeable with it, so uniform;
  - protected outputs: the kit's embedder applied to clean targets, and `n_surrogates` surrogates
    trained on (A, H(B)), as an attacker would;
  - post-processing attacks (deepwm_jax/removal.py) on the protected outputs: bit accuracy and
    the statistic against attack strength.
It writes study.json, study.md and figures: a QQ plot of p-values against the uniform, and the
per-image statistic histogram with the calibrated threshold.

Which p-values should be uniform: with a kit that stores its calibration null (kit.py; older
kits get one with deepwm_jax/recalibrate.py), the image statistic's set p-value
(verdict.set_pvalue) and each image's rank p-value among the null must be valid on innocent
images (P(p <= x) <= x) and are uniform for innocents exchangeable with the least favourable
source of the per-source null (verdict.rank_pvalues), conservative for the others: the study
reports their KS statistics against the uniform, P(p <= x), and the QQ plot.
Without a null the set p-value is the conservative binomial bound, exactly 1 whenever no image
is over the threshold. A payload kit's decision p-value takes the larger of the image and bit
p-values (both must detect), so it is conservative by construction. For payload kits the study
also tests the assumption behind the fair-bit binomial (per image, the randomized binomial
p-value of the raw bit matches must be uniform if innocent bits are independent and fair), and
counts innocent sets whose soft vote decodes the kit's message, with and without the
leave-one-out rule of payload.combine.

Null models are trained with checkpoints in `workdir`, so an interrupted study resumes.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import ml_collections
import numpy as np
from scipy import stats as scipy_stats

from deepwm_jax import kit as kit_lib
from deepwm_jax import payload as payload_lib
from deepwm_jax import report, verdict
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import common
from deepwm_jax.stages.model_null import null_spec
from deepwm_jax.train import imitation

NULL_ARCHS = ("unet", "resnet", "cnn")
ATTACKS = {"jpeg": (90, 70, 50, 30), "blur": (0.5, 1.0, 1.5), "noise": (0.01, 0.02, 0.05),
           "rescale": (0.75, 0.5), "crop": (0.9, 0.8)}


OWN_KIND = {  # study group kind -> what its sets are compared with in Verdict.p_by_kind
    "clean": "clean sets against clean_A / clean_B",
    "clean-calibration": "clean sets of the null's own photos against clean_A / clean_B",
    "null": "null-model sets against the null models"}


def _networks_tag(kit_path: str) -> str:
  """8 hex digits naming the kit's networks (the manifest's digests of its state files): the
  same for copies of one kit that differ only in their calibration."""
  with open(os.path.join(kit_path, "manifest.json")) as f:
    state = {k: v for k, v in json.load(f).items() if k.startswith("state")}
  return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:8]


def _sets(x: np.ndarray, size: int) -> list[np.ndarray]:
  """Disjoint sets of `size` images (a shorter remainder is dropped)."""
  return [x[i:i + size] for i in range(0, len(x) - size + 1, size)]


def fair_bit_pvalues(kit, images, rng) -> np.ndarray | None:
  """Per image: randomized P-value of its raw bit matches under independent fair bits (exactly
  uniform when that null holds); None for kits without a payload."""
  if "payload" not in kit.info:
    return None
  pay, _ = payload_lib.from_kit_info(kit.info)
  soft = pay.soft_bits(kit.extract(images))
  k = np.sum(soft * (2.0 * pay.channel_bits - 1.0) > 0, axis=1)
  n = pay.n_coded
  return scipy_stats.binom.sf(k, n, 0.5) + rng.uniform(size=k.shape) * scipy_stats.binom.pmf(k, n, 0.5)


def _verdicts(kit, images, set_size, alpha):
  out = []
  for s in _sets(images, set_size):
    v = kit.verify(s, alpha=alpha)
    row = {"detected": v.detected, "p_value": v.p_value, "n_hits": v.n_hits,
           "stat_mean": v.stat_mean, "p_method": v.p_method, "p_by_kind": v.p_by_kind or {},
           "image_p_value": v.p_value if v.image_p_value is None else v.image_p_value}
    if v.payload is not None:
      b = v.payload
      with_message = payload_lib.combine(row["image_p_value"], v.success_rate, b, alpha,
                                         kit.info["min_success_rate"], message_evidence=True)
      row.update(bit_accuracy=b["bit_accuracy_mean"], bit_p_value=b["p_value"],
                 decoded=b["decode_decoded"], matches=b["decode_matches"],
                 message_p_value=b["decode_p_value"], single_image=b["decode_single_image"],
                 detected_with_message=with_message[0])
    out.append(row)
  return out


def _group(name, kit, images, set_size, alpha, rng) -> dict:
  rows = _verdicts(kit, images, set_size, alpha)
  stats = kit.statistic(images)
  g = {"name": name, "n_images": int(len(images)), "n_sets": len(rows),
       "false_or_true_detections": int(sum(r["detected"] for r in rows)),
       "detected_fraction": float(np.mean([r["detected"] for r in rows])) if rows else None,
       "p_values": [r["p_value"] for r in rows],
       "image_p_values": [r["image_p_value"] for r in rows],
       "p_method": rows[0]["p_method"] if rows else None,
       "p_by_kind": [r["p_by_kind"] for r in rows],
       "image_hits": int(np.sum(stats >= kit.calibration.threshold)),
       "stat_max": float(np.max(stats)), "_stats": stats}
  if kit.calibration.null is not None:
    g["_rank"] = verdict.rank_pvalues(np.asarray(verdict.watermark_score(
        kit.extract(images), kit.watermark, kit.blank)), kit.calibration.null)
  if rows and "bit_accuracy" in rows[0]:
    g.update(bit_accuracy_mean=float(np.mean([r["bit_accuracy"] for r in rows])),
             messages_matched=int(sum(r["matches"] for r in rows)),
             messages_matched_by_one_image=int(sum(bool(r["matches"] and r["single_image"])
                                                   for r in rows)),
             messages_decoded=int(sum(r["decoded"] for r in rows)),
             detected_with_message=int(sum(r["detected_with_message"] for r in rows)),
             message_p_value_min=float(min(r["message_p_value"] for r in rows)))
  fair = fair_bit_pvalues(kit, images, rng)
  if fair is not None:
    g["_fair"] = fair
  return g


def run_study(kit_path: str, workdir: str, n_clean: int = 1000, n_nulls: int = 10,
              n_surrogates: int = 2, null_steps: int = 300, null_ngf: int = 8,
              null_images: int = 64, set_size: int = 16, n_protected: int = 64,
              n_calibration_photos: int = 512,
              alpha: float | None = None, attacks: dict | None = None,
              archs: tuple[str, ...] = NULL_ARCHS, log=print) -> dict:
  """Runs the study; returns the summary dict (also written to workdir/study.json)."""
  if n_clean < set_size or null_images < set_size or n_protected < set_size:
    raise DeepwmError(f"every group needs at least set_size={set_size} images")
  kit = kit_lib.load_kit(kit_path)
  kit_lib.require_calibrated(kit, "python -m deepwm_jax.tools.false_claims")
  cfg = ml_collections.ConfigDict(kit.config.to_dict())
  cfg.log_every = max(25, null_steps // 4)
  cfg.ckpt_every = max(50, null_steps // 2)
  alpha = kit.info["alpha"] if alpha is None else alpha
  os.makedirs(workdir, exist_ok=True)
  rng = np.random.default_rng(0)
  t0 = time.time()

  # Photos loaded once: each null model crops them anew. Fresh crops of the validation photos
  # (other offsets than the run's).
  attack_photos, val = pairs_lib.load_split(cfg, "attack"), pairs_lib.load_split(cfg, "val")
  clean = pairs_lib.pairs_from(cfg, val, (n_clean + 1) // 2, seed_offset=101)
  clean_images = np.concatenate([clean.a, clean.b])[:n_clean]
  train = pairs_lib.pairs_from(cfg, attack_photos, max(256, 4 * null_images), seed_offset=102)
  held = pairs_lib.pairs_from(cfg, val, max(null_images, n_protected), seed_offset=103)
  groups = [_group("clean images", kit, clean_images, set_size, alpha, rng)]
  log(f"clean: {groups[0]['false_or_true_detections']} detections in {groups[0]['n_sets']} sets")

  runner = common.Runner(cfg, workdir, log=lambda *_: None)
  for i in range(n_nulls):
    spec = null_spec(cfg, archs[i % len(archs)], 1000 + i, null_steps, null_ngf)
    # Training crops of its own (as model_null's population): innocent models are fitted to
    # their owners' data, not to one shared crop set. The name says what was trained, so a
    # workdir is only reused for the same model.
    offset = 40_000 + i
    own_train = pairs_lib.pairs_from(cfg, attack_photos, len(train.a), seed_offset=offset)
    variables = runner.imitate(f"study_null_{i}_crops{offset}_w{null_ngf}_s{null_steps}", spec,
                               own_train.a, own_train.b)
    # Inputs of its own per null model: with one shared input set, the models' sets are
    # correlated through their inputs and a KS test over them overstates non-uniformity.
    own = pairs_lib.pairs_from(cfg, val, null_images, seed_offset=10_000 + i)
    out = common.predict(imitation.make_predict_fn(spec, cfg), variables, own.a)
    g = _group(f"null {i} ({spec.arch}, {spec.loss})", kit, out, set_size, alpha, rng)
    g["kind"] = "null"
    groups.append(g)
    log(f"null {i} ({spec.arch}): {g['false_or_true_detections']}/{g['n_sets']} sets detected, "
        f"{g['image_hits']}/{g['n_images']} images over the threshold")

  protected = kit.embed(held.b[:n_protected])
  g = _group("protected outputs H(B)", kit, protected, set_size, alpha, rng)
  g["kind"] = "protected"
  groups.append(g)
  wm_train = kit.embed(train.b)
  for i in range(n_surrogates):
    spec = null_spec(cfg, archs[i % len(archs)], 2000 + i, null_steps, null_ngf)
    # Trained on this kit's watermarked outputs: named by its networks, so a workdir shared
    # between kits (the nulls are the same for kits of the same data) never mixes them up.
    variables = runner.imitate(f"study_surrogate_{i}_{_networks_tag(kit_path)}_w{null_ngf}"
                               f"_s{null_steps}", spec, train.a, wm_train)
    out = common.predict(imitation.make_predict_fn(spec, cfg), variables, held.a[:null_images])
    g = _group(f"surrogate {i} ({spec.arch}, {spec.loss})", kit, out, set_size, alpha, rng)
    g["kind"] = "surrogate"
    groups.append(g)
    log(f"surrogate {i} ({spec.arch}): {g['false_or_true_detections']}/{g['n_sets']} sets "
        f"detected")
  groups[0]["kind"] = "clean"
  # Each innocent set against the null of its own kind (Verdict.p_by_kind): the clean sets
  # of inputs A against the kit's clean_A source, of targets B against clean_B (a set of both
  # is skipped), the null models' sets against the model-level null.
  n_a = len(clean.a)
  groups[0]["_own"] = [
      by.get("clean_A" if (j + 1) * set_size <= n_a else "clean_B" if j * set_size >= n_a
             else "")
      for j, by in enumerate(groups[0]["p_by_kind"])]
  for g in groups[1:]:
    if g["kind"] == "null":
      g["_own"] = [by.get("null models") for by in g["p_by_kind"]]
  if n_calibration_photos >= 2 * set_size:
    # Clean crops of the photos the kit's clean null came from (the attack split, new crops):
    # the one place where innocents are exchangeable with a source of the null by design, so
    # their p-values against it must be uniform. The validation photos above are other scenes:
    # a null from a few photos cannot know how much a new scene moves the score.
    extra = pairs_lib.pairs_from(cfg, attack_photos, n_calibration_photos // 2, seed_offset=104)
    for part, images in (("A", extra.a), ("B", extra.b)):
      g = _group(f"clean {part}, the null's own photos", kit, images, set_size, alpha, rng)
      g["kind"] = "clean-calibration"
      g["_own"] = [by.get(f"clean_{part}") for by in g["p_by_kind"]]
      groups.append(g)

  curves = attack_curves(kit, protected, ATTACKS if attacks is None else attacks, alpha,
                         set_size)
  summary = _summarize(groups, alpha, set_size, curves, time.time() - t0, kit_path)
  _write(workdir, summary, groups, kit, curves)
  log(f"wrote {os.path.join(workdir, 'study.md')}")
  return summary


def attack_curves(kit, protected, attacks: dict, alpha: float, set_size: int) -> list[dict]:
  """Bit accuracy / statistic / detection of the protected outputs after each removal attack."""
  from deepwm_jax.zoo import removal
  rows = []
  for kind, values in attacks.items():
    for value in values:
      attacked = removal.apply(removal.spec(kind, value), protected, seed=0)
      v = kit.verify(attacked[:set_size], alpha=alpha)
      row = {"attack": kind, "value": value, "stat_mean": float(np.mean(kit.statistic(attacked))),
             "detected_16": v.detected, "p_value_16": v.p_value}
      if v.payload is not None:
        pay, _ = payload_lib.from_kit_info(kit.info)
        pi = payload_lib.per_image(pay, pay.soft_bits(kit.extract(attacked)))
        row.update(bit_accuracy=float(np.mean(pi["bit_accuracy"])),
                   matches_16=v.payload["decode_matches"])
      rows.append(row)
  return rows


def _summarize(groups, alpha, set_size, curves, seconds, kit_path) -> dict:
  negatives = [g for g in groups if g["kind"] in ("clean", "null")]
  set_p = np.concatenate([g["p_values"] for g in negatives])
  out = {"kit": os.path.abspath(kit_path), "alpha": alpha, "set_size": set_size,
         "seconds": round(seconds, 1),
         "groups": [{k: v for k, v in g.items() if not k.startswith("_")} for g in groups],
         "false_detections": {
             "clean_sets": int(groups[0]["false_or_true_detections"]),
             "clean_images": int(groups[0]["n_images"]),
             "null_models_detected": int(sum(g["false_or_true_detections"] > 0
                                             for g in negatives if g["kind"] == "null")),
             "null_models": int(sum(g["kind"] == "null" for g in negatives)),
             "null_images_over_threshold": int(sum(g["image_hits"] for g in negatives
                                                   if g["kind"] == "null"))},
         # A valid (conservative) p-value has P(p <= x) <= x under the null.
         "set_p_value_cdf": {str(x): float(np.mean(set_p <= x)) for x in (1e-3, 0.01, 0.05, 0.5)},
         "set_p_value_min": float(np.min(set_p)), "n_negative_sets": int(set_p.size),
         "attacks": curves}
  image_p = np.concatenate([g["image_p_values"] for g in negatives])
  out["image_p_values"] = _uniformity(image_p) | {
      "method": negatives[0]["p_method"],
      # Uniform is only possible within one kind of innocent (verdict.model_pvalue): per kind.
      "by_kind": {kind: _uniformity(np.concatenate([g["image_p_values"] for g in negatives
                                                    if g["kind"] == kind]))
                  for kind in ("clean", "null") if any(g["kind"] == kind for g in negatives)},
      "ks_by_group": {g["name"]: float(scipy_stats.kstest(g["image_p_values"], "uniform").statistic)
                      for g in negatives}}
  own = {what: np.array([p for g in groups if g["kind"] == kind for p in g.get("_own", [])
                         if p is not None], np.float64) for kind, what in OWN_KIND.items()}
  if any(v.size for v in own.values()):
    # Valid for its own kind only, so it may be uniform: how well each part of the null fits.
    out["image_p_values"]["own_kind"] = {what: _uniformity(v) for what, v in own.items()
                                         if v.size}
  calibration_photos = [g for g in groups if g["kind"] == "clean-calibration"]
  if calibration_photos:
    out["false_detections"]["clean_calibration_photo_sets"] = int(
        sum(g["false_or_true_detections"] for g in calibration_photos))
  if all("_rank" in g for g in negatives):
    out["rank_p_values"] = _uniformity(np.concatenate([g["_rank"] for g in negatives])) | {
        "ks_by_group": {g["name"]: float(scipy_stats.kstest(g["_rank"], "uniform").statistic)
                        for g in negatives}}
  if "messages_matched" in negatives[0]:
    out["innocent_messages"] = {
        k: int(sum(g[k] for g in negatives)) for k in (
            "messages_matched", "messages_matched_by_one_image", "detected_with_message")}
  fair = [g["_fair"] for g in negatives if "_fair" in g]
  if fair:
    per_group = {g["name"]: float(scipy_stats.kstest(g["_fair"], "uniform").statistic)
                 for g in negatives if "_fair" in g}
    allp = np.concatenate(fair)
    ks = scipy_stats.kstest(allp, "uniform")
    out["fair_bits"] = {"ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
                        "n_images": int(allp.size), "ks_by_group": per_group,
                        "fraction_below_0.01": float(np.mean(allp <= 0.01))}
  protected = [g for g in groups if g["kind"] in ("protected", "surrogate")]
  out["protected"] = [{k: g.get(k) for k in ("name", "detected_fraction", "bit_accuracy_mean",
                                             "messages_matched", "n_sets")}
                      | {"p_value_max": float(np.max(g["p_values"])),
                         "image_p_value_max": float(np.max(g["image_p_values"]))}
                      for g in protected]
  return out


def _uniformity(p: np.ndarray) -> dict:
  """How close innocent p-values are to uniform: KS against U(0, 1) and P(p <= x)."""
  ks = scipy_stats.kstest(p, "uniform")
  return {"n": int(p.size), "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
          "cdf": {str(x): float(np.mean(p <= x)) for x in (1e-3, 0.01, 0.05, 0.1, 0.5)},
          "min": float(np.min(p))}


def _write(workdir, summary, groups, kit, curves) -> None:
  report.write_text_atomic(os.path.join(workdir, "study.json"),
                           json.dumps(report.to_jsonable(summary), indent=1) + "\n")
  fig_dir = os.path.join(workdir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  innocent = [g for g in groups if g["kind"] in ("clean", "null")]
  qq = {"image p-value, clean sets": np.asarray(groups[0]["image_p_values"]),
        "image p-value, null-model sets": np.concatenate(
            [g["image_p_values"] for g in innocent if g["kind"] == "null"] or [np.zeros(0)])}
  if all("_rank" in g for g in innocent):
    qq["rank p-value per image, clean"] = groups[0]["_rank"]
    qq["rank p-value per image, null models"] = np.concatenate(
        [g["_rank"] for g in innocent if g["kind"] == "null"] or [np.zeros(0)])
  report.save_figure(report.qq_figure({k: v for k, v in qq.items() if len(v)},
                                      "p-values of innocent images against the uniform"),
                     os.path.join(fig_dir, "qq.png"))
  own = {what: np.array([p for g in groups if g["kind"] == kind for p in g.get("_own", [])
                         if p is not None]) for kind, what in OWN_KIND.items()}
  if any(v.size for v in own.values()):
    report.save_figure(report.qq_figure(
        {k: v for k, v in own.items() if v.size},
        "innocent sets against the null of their own kind"),
        os.path.join(fig_dir, "qq_own_kind.png"))
  if any("_fair" in g for g in innocent):
    report.save_figure(report.qq_figure(
        {g["name"]: g["_fair"] for g in innocent if "_fair" in g},
        "fair-bit p-values of innocent images (the fair-bit assumption)"),
        os.path.join(fig_dir, "qq_fair_bits.png"))
  hist = {g["name"] if g["kind"] != "null" else "null models": g["_stats"] for g in groups}
  hist["null models"] = np.concatenate([g["_stats"] for g in groups if g["kind"] == "null"]
                                       or [np.zeros(0)])
  report.save_figure(report.histogram_figure(hist, kit.calibration.threshold, "threshold",
                                             "watermark statistic"),
                     os.path.join(fig_dir, "stats_hist.png"))
  if curves:
    report.save_figure(report.attack_figure(curves), os.path.join(fig_dir, "attacks.png"))
  fd = summary["false_detections"]
  lines = ["# False-claim study\n", f"Kit `{summary['kit']}`, alpha {summary['alpha']:g}, sets of "
           f"{summary['set_size']} images, {summary['seconds']:.0f} s.\n",
           f"- clean: {fd['clean_sets']} detections in {groups[0]['n_sets']} sets of "
           f"{fd['clean_images']} images",
           f"- null models: {fd['null_models_detected']} of {fd['null_models']} detected; "
           f"{fd['null_images_over_threshold']} of their images over the threshold"
           + (f"\n- clean crops of the null's own photos: {fd['clean_calibration_photo_sets']} "
              f"detections" if "clean_calibration_photo_sets" in fd else ""),
           f"- negative sets' p-values: P(p <= x) = {summary['set_p_value_cdf']} (min "
           f"{summary['set_p_value_min']:.3g})"]
  ip = summary["image_p_values"]
  lines.append(f"- image p-values of {ip['n']} innocent sets ({ip['method']}): KS statistic "
               f"{ip['ks_statistic']:.3f} against the uniform, P(p <= x) = {ip['cdf']}")
  for kind, u in ip["by_kind"].items():
    lines.append(f"  - {kind} sets ({u['n']}): KS {u['ks_statistic']:.3f} "
                 f"(p {u['ks_pvalue']:.2g}), P(p <= x) = {u['cdf']}")
  for what, u in ip.get("own_kind", {}).items():
    lines.append(f"- {what} alone ({u['n']}): KS {u['ks_statistic']:.3f} "
                 f"(p {u['ks_pvalue']:.2g}), P(p <= x) = {u['cdf']}")
  if "rank_p_values" in summary:
    rp = summary["rank_p_values"]
    lines.append(f"- rank p-values of {rp['n']} innocent images: KS statistic "
                 f"{rp['ks_statistic']:.3f}, P(p <= x) = {rp['cdf']}")
  if "innocent_messages" in summary:
    im = summary["innocent_messages"]
    lines.append(f"- innocent sets decoding the kit's message: {im['messages_matched']} "
                 f"({im['messages_matched_by_one_image']} carried by one image); detected "
                 f"with --message-evidence: {im['detected_with_message']}")
  if "fair_bits" in summary:
    fb = summary["fair_bits"]
    lines.append(f"- fair-bit p-values of {fb['n_images']} innocent images: KS statistic "
                 f"{fb['ks_statistic']:.3f} (p {fb['ks_pvalue']:.3g})")
  rows = [{"group": g["name"], "images": g["n_images"], "sets": g["n_sets"],
           "detected sets": g["false_or_true_detections"], "images over threshold": g["image_hits"],
           "max p-value": float(np.max(g["p_values"])), "min p-value": float(np.min(g["p_values"])),
           "min image p-value": float(np.min(g["image_p_values"])),
           "bit accuracy": g.get("bit_accuracy_mean"), "messages matched": g.get("messages_matched")}
          for g in groups]
  cols = list(rows[0])
  lines += ["", report.markdown_table(rows, cols)]
  if curves:
    lines += ["## Post-processing attacks on the protected outputs\n",
              report.markdown_table(curves, list(dict.fromkeys(k for r in curves for k in r)))]
  lines += ["![QQ](figures/qq.png)\n", "![statistic](figures/stats_hist.png)\n"]
  if "own_kind" in ip:
    lines.append("![QQ, own kind](figures/qq_own_kind.png)\n")
  if curves:
    lines.append("![attacks](figures/attacks.png)\n")
  report.write_text_atomic(os.path.join(workdir, "study.md"), "\n".join(lines))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="false_claims", description=__doc__.splitlines()[0])
  p.add_argument("--kit", required=True)
  p.add_argument("--workdir", required=True)
  p.add_argument("--n-clean", type=int, default=1000)
  p.add_argument("--n-nulls", type=int, default=10)
  p.add_argument("--n-surrogates", type=int, default=2)
  p.add_argument("--null-steps", type=int, default=300)
  p.add_argument("--null-ngf", type=int, default=8)
  p.add_argument("--set-size", type=int, default=16)
  p.add_argument("--alpha", type=float)
  p.add_argument("--n-calibration-photos", type=int, default=512,
                 help="clean crops of the photos the kit's null came from (0: none)")
  args = p.parse_args(argv)
  try:
    s = run_study(args.kit, args.workdir, n_clean=args.n_clean, n_nulls=args.n_nulls,
                  n_surrogates=args.n_surrogates, null_steps=args.null_steps,
                  null_ngf=args.null_ngf, set_size=args.set_size, alpha=args.alpha,
                  n_calibration_photos=args.n_calibration_photos,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
  except DeepwmError as e:
    print(f"false_claims: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(report.to_jsonable({k: s[k] for k in ("false_detections", "set_p_value_cdf",
                                                          "protected")}), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
