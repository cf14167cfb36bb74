"""The evaluation: independent models R never saw, every group of held-out images judged by the
kit's decision, and the report's numbers (report.json keys) with the kit's self-check.

Groups (validation split): the watermarked outputs B', clean A, B and M(A), each stage-2
surrogate, the unseen surrogate (evaluate.surrogate, trained after stage 2), each protector
null model, and the independent null (evaluate.null, trained on clean (A, B)).
"""
import dataclasses

import numpy as np

from deepwm_jax import metrics, verdict
from deepwm_jax.stages import attack, common, served
from deepwm_jax.stages.task import Splits
from deepwm_jax.train import stage1


def independent_models(r: common.Runner, a: np.ndarray, b_wm: np.ndarray,
                       b: np.ndarray) -> tuple[attack.Imitator, attack.Imitator]:
  """The unseen surrogate on (A, B') and the independent null on clean (A, B), trained after
  stage 2 and never seen by R or by the calibration."""
  ev = r.cfg.evaluate
  return (attack.imitator(r, "eval_surrogate", ev.surrogate, a, b_wm),
          attack.imitator(r, "eval_null", ev.null, a, b))


def stage2_group(name: str) -> str:
  """'surrogate' -> 'surrogate (stage 2)', 'surrogate_resnet' -> 'surrogate (stage 2 resnet)'."""
  return "surrogate (stage 2" + name[len("surrogate"):].replace("_", " ") + ")"


@dataclasses.dataclass
class Evaluation:
  groups: dict[str, np.ndarray]        # group name -> the images judged
  extractions: dict[str, np.ndarray]   # group name -> R's extractions of them
  summary: dict[str, dict]             # group name -> common.summarize


def judge(r: common.Runner, extractor: dict, wm, calibration, splits: Splits,
          m_val: np.ndarray, wm_val: np.ndarray, surrogates: dict, nulls: dict,
          unseen: attack.Imitator, independent_null: attack.Imitator) -> Evaluation:
  """Every group of validation images, extracted by R and summarized under the kit's decision."""
  cfg = r.cfg
  val = splits.val
  groups = {
      "watermarked": wm_val,
      "clean A": val.a, "clean B": val.b, "clean M(A)": m_val,
      **{stage2_group(n): s(val.a) for n, s in surrogates.items()},
      "surrogate (unseen)": unseen(val.a),
      **{f"null (protector {a})": null(val.a) for a, null in nulls.items()},
      "null (independent)": independent_null(val.a),
  }
  extract = stage1.make_extract_fn(cfg)
  extractions = {k: common.predict(extract, extractor, x) for k, x in groups.items()}
  summary = {k: common.summarize(extractions[k], wm.w, wm.blank, calibration, cfg.evaluate)
             for k in groups}
  return Evaluation(groups, extractions, summary)


def role(group: str) -> str:
  """What a group of the evaluation is: 'carries the watermark', "imitates B'" or 'innocent'."""
  if group == "watermarked":
    return "carries the watermark"
  return "imitates B'" if group.startswith("surrogate") else "innocent"


def after_serving(cfg, extractor: dict, wm, calibration, ev_: Evaluation) -> dict | None:
  """Every group again after each post-processing of evaluate.served, judged in sets of
  evaluate.set_size by the kit's decision (stages/served.py); None when the list is empty."""
  specs = tuple(cfg.evaluate.get("served", ()))
  if not specs:
    return None
  extract = stage1.make_extract_fn(cfg)

  def judge(x):
    s = common.summarize(common.predict(extract, extractor, x), wm.w, wm.blank, calibration,
                         cfg.evaluate)
    return s["p_value"], s["detected"], s["success_rate"]

  groups = {name: (role(name), x) for name, x in ev_.groups.items()}
  return served.study(judge, groups, specs, int(cfg.evaluate.get("set_size", 16)), cfg.seed)


def report_dict(cfg, ev_: Evaluation, splits: Splits, m_val, wm_val, surrogates: dict,
                nulls: dict, unseen: attack.Imitator, independent_null: attack.Imitator,
                calibration, max_negative_by_source: dict) -> dict:
  """The report's numbers (the keys of report.json), without timing and warnings."""
  ev, val = cfg.evaluate, splits.val
  summary, groups = ev_.summary, ev_.groups
  clean_keys = ("clean A", "clean B", "clean M(A)")
  clean_stats = np.concatenate([summary[k]["_stats"] for k in clean_keys])
  clean_nc = np.concatenate([summary[k]["_nc"] for k in clean_keys])

  def entry(name, spec, key, seen):
    s = common.public(summary[key])
    s.update(name=name, arch=spec.arch, loss=spec.loss, seen_in_stage2=seen,
             task_psnr=common.mean_psnr(groups[key], wm_val),
             residual_corr=common.residual_corr(groups[key], m_val, wm_val))
    return s

  return {
      "fidelity": {"psnr": common.mean_psnr(wm_val, m_val),
                   "ssim": common.mean_ssim(wm_val, m_val)},
      "task": {"psnr_M_vs_B": common.mean_psnr(m_val, val.b),
               "psnr_A_vs_B": common.mean_psnr(val.a, val.b)},
      "watermarked": common.public(summary["watermarked"]),
      "clean": {**common.public(summary["clean A"]),
                "success_rate": float(np.mean(verdict.per_image_decisions(clean_stats,
                                                                          calibration))),
                "paper_success_rate": float(metrics.paper_success_rate(clean_nc,
                                                                       ev.nc_threshold)),
                "nc_mean": float(np.mean(clean_nc)), "n_images": int(len(clean_stats)),
                "by_kind": {k: common.public(summary[k]) for k in clean_keys}},
      "surrogates": [entry("surrogate-stage2" + n[len("surrogate"):].replace("_", "-"), s.spec,
                           stage2_group(n), True) for n, s in surrogates.items()]
                    + [entry("surrogate-unseen", ev.surrogate, "surrogate (unseen)",
                             ev.surrogate.arch in {s.spec.arch for s in surrogates.values()})],
      "null": [entry("null-independent", ev.null, "null (independent)", False)]
              + [entry(f"null-protector-{a}", null.spec, f"null (protector {a})", True)
                 for a, null in nulls.items()],
      "calibration": calibration.to_dict(),
      "calibration_max_negative_by_source": max_negative_by_source,
      "alpha": ev.alpha, "min_success_rate": ev.min_success_rate,
  }


def kit_warnings(cfg, rep: dict) -> list[str]:
  """What makes this kit unfit to deploy, read off its own report (empty when nothing does).

  The kit's self-checks are the deployed outputs (H(M(A)), or M'(A) once rep has 'specific')
  and the surrogates of stage 2's specs trained on them, judged on held-out images. When R
  cannot tell the surrogates' outputs from innocent ones, the calibration keeps p-values valid
  by raising the threshold and the kit then catches no imitator. On an H100 this check flagged
  exactly the two of 14 agnostic kits whose probe zoo had no member at 90%: one plain stage 2
  (which weak copies then rescued) and one with stage2.weak_copies=0.25 (which weak copies
  broke). A threshold above 1 has its own warning, logged at calibration.
  """
  cal = rep["calibration"]
  if cal["threshold"] > 1.0:
    return []
  return _innocents_claimed(rep) + _claimed_after_serving(rep) + _misses(cfg, rep, cal)


def _claimed_after_serving(rep: dict) -> list[str]:
  """Innocent sets detected after a post-processing (the calibration saw none of them)."""
  sv = rep.get("served")
  if not sv or not sv["innocent"]["sets_detected"]:
    return []
  where = sorted({f"{name} after {spec}" for name, g in sv["groups"].items()
                  if g["role"] == "innocent"
                  for spec, r in g["rows"].items() if r["sets_detected"]})
  return [f"this kit declares innocent sets watermarked after post-processing "
          f"({', '.join(where[:4])}{', ...' if len(where) > 4 else ''}): its calibration saw "
          "no processed images, so do not trust its verdicts on images that may have been "
          "re-encoded or resized; a keyed kit's verdict (configs/keyed.py) holds under them"]


def _innocents_claimed(rep: dict) -> list[str]:
  """The worst failure: held-out innocent images (clean, null models') detected as a set."""
  groups = [("clean images", rep.get("clean"))] + [(n["name"], n) for n in rep.get("null", [])]
  claimed = [f"{name} {100 * g['success_rate']:.0f}%" for name, g in groups
             if g and g.get("detected")]
  if not claimed:
    return []
  return ["this kit declares innocent held-out images watermarked (" + ", ".join(claimed)
          + " over the threshold): R does not tell the watermark from clean content, so its "
            "verdicts cannot be trusted; do not deploy it, and run again (new workdir) with "
            "another config or seed"]


def _misses(cfg, rep: dict, cal: dict) -> list[str]:
  """The deployed outputs or the stage-2 surrogates not detected."""
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
