"""The zoo's report: report.json, report.md, a success-rate heatmap over architecture x loss,
histograms of NC and of the watermark statistic per attack family, and a summary paragraph
written from the numbers."""
import json
import os

import numpy as np
from matplotlib.figure import Figure

from deepwm_jax import report as report_lib

TABLE = ["name", "family", "loss", "augmentation", "removal", "overwrite", "null", "task_psnr",
         "success_rate", "paper_success_rate", "nc_mean", "centered_nc_mean", "residual_corr",
         "detected", "whole_photos", "whole_set_p", "whole_set_detected"]
# The zoo's target: members with no augmentation or removal attack reach this success rate.
PLAIN_TARGET = 0.9


def family_of_attack(row: dict) -> str:
  """Which histogram a row belongs to."""
  if row["null"]:
    return "null" if row["removal"] == "none" else "null + removal"
  if row["removal"] != "none":
    return "removal"
  if row["augmentation"] != "none":
    return "augmentation"
  if row["overwrite"]:
    return "overwrite"
  return "plain"


def _is_plain(row):
  return family_of_attack(row) == "plain"


def summary(rows: list[dict], skipped: list, reference: dict | None = None) -> str:
  """One paragraph: what is detected, and what (if anything) defeats the watermark."""
  s = []
  plain = [r for r in rows if _is_plain(r)]
  if reference is not None and reference["watermarked"]["success_rate"] < PLAIN_TARGET:
    s.append(f"The kit itself counts only {reference['watermarked']['success_rate']:.0%} of the "
             f"protected model's own outputs as watermarked, so no surrogate can be expected "
             f"to be detected.")
  if plain:
    hit = [r for r in plain if r["success_rate"] >= PLAIN_TARGET]
    det = [r for r in plain if r["detected"]]
    s.append(f"Of {len(plain)} surrogates trained plainly on (A, B'), {len(det)} are detected "
             f"and {len(hit)} reach a success rate of {PLAIN_TARGET:.0%}.")
    missed = sorted((r for r in plain if not r["detected"]), key=lambda r: r["success_rate"])
    if missed:
      s.append("Not detected: " + ", ".join(
          f"{r['name']} ({r['success_rate']:.0%}, task PSNR {r['task_psnr']:.1f} dB)"
          for r in missed[:8]) + (" and more" if len(missed) > 8 else "") + ".")
      fam = {}
      for r in plain:
        fam.setdefault(r["family"], []).append(r)
      worst = [f for f, v in fam.items() if not any(r["detected"] for r in v)]
      # The architecture is to blame only where a plain pixel loss (L1/L2, with or without an
      # adversarial term) failed too; a family tried with SSIM alone says nothing about it.
      arch = [f for f in worst if any(_pixel_loss(r) for r in fam[f])]
      if arch:
        s.append(f"No {'/'.join(arch)} surrogate copied the watermark detectably, so the "
                 f"architecture alone defeats it at this scale.")
      for f in (f for f in worst if f not in arch):
        losses = sorted({r["loss"] for r in fam[f]})
        s.append(f"No {f} surrogate was detected, but the zoo tried that family only with "
                 f"{'/'.join(losses)}, so the loss and the architecture cannot be told apart.")
  for kind, label in (("augmentation", "Augmentation attacks"),
                      ("overwrite", "Overwriting attacks"),
                      ("removal", "Post-processing removal attacks")):
    rs = [r for r in rows if family_of_attack(r) == kind]
    if not rs:
      continue
    # An attack defeats the watermark only where the same surrogate without it is detected.
    informative = [r for r in rs if _baseline_detected(r, rows)]
    beaten = [r for r in informative if not r["detected"]]
    if not informative:
      s.append(f"{label} ({len(rs)} cases) cannot be judged: the same surrogate without them "
               f"is not detected either.")
    elif beaten:
      s.append(f"{label} defeat detection in {len(beaten)} of {len(informative)} cases whose "
               f"unattacked surrogate is detected: " + ", ".join(
                   f"{_what(r)} ({r['success_rate']:.0%}, task PSNR {r['task_psnr']:.1f} dB)"
                   for r in beaten[:8]) + ".")
    else:
      s.append(f"{label} did not defeat detection in any of {len(informative)} cases whose "
               f"unattacked surrogate is detected.")
  whole = [r for r in plain if "whole_set_p" in r]
  if whole:  # the same members serving whole photos (run._evaluate)
    read = [r for r in whole if r["whole_set_detected"]]
    s.append(f"Serving whole photos, {len(read)} of {len(whole)} plain surrogates are detected"
             + (f" ({', '.join(r['name'] for r in read[:8])})" if read else "") + ".")
  nulls = [r for r in rows if r["null"]]
  if nulls:
    fp = [r for r in nulls if r["detected"] or r["success_rate"] > 0
          or r.get("whole_set_detected")]
    s.append(f"Null members (clean data, {len(nulls)} rows): " + (
        "none was detected and no image counted as watermarked"
        + (", whole photos included." if any("whole_set_p" in r for r in nulls) else ".")
        if not fp else
        "FALSE POSITIVES: " + ", ".join(f"{r['name']} ({r['success_rate']:.0%})" for r in fp)
        + "."))
  if skipped:
    s.append(f"{len(skipped)} perceptual-loss member(s) were skipped: no VGG16 weights given.")
  return " ".join(s)


def _pixel_loss(r) -> bool:
  return r["loss"].split("+")[0] in ("l1", "l2")


# What makes a plain member the same surrogate as an attacked one, but for the attack.
_SAME_SURROGATE = ("arch", "loss", "n_attack", "lr", "steps", "seed")


def _baseline_detected(r, rows) -> bool:
  """Whether the row's surrogate without its attack is detected: the member itself for a
  removal attack, otherwise the plain member with the same architecture, loss and attacker
  settings (data, learning rate, steps, seed), so that a plain member trained on less data
  is not taken for the baseline of an augmentation."""
  if r["removal"] != "none":
    base = [b for b in rows if b["name"] == r["member"]]
  else:
    base = [b for b in rows if _is_plain(b)
            and all(b.get(k) == r.get(k) for k in _SAME_SURROGATE)]
  return bool(base) and all(b["detected"] for b in base)


def _what(r):
  if r["removal"] != "none":
    return f"{r['removal']} on {r['member']}"
  if r["augmentation"] != "none":
    return f"{r['augmentation']} ({r['arch']})"
  return r["name"]


def build(rows, reference, skipped, group_info, timing, kit, zcfg, mesh) -> dict:
  def ref(x):
    stats = np.asarray(x["stats"])
    return {"success_rate": float(np.mean(stats >= kit.threshold)),
            "nc_mean": float(np.mean(x["nc"])), "n_images": int(len(stats))}
  plain = [r for r in rows if _is_plain(r)]
  nulls = [r for r in rows if r["null"]]
  refs = {k: ref(v) for k, v in reference.items()}
  return {
      "kit": kit.path,
      "threshold": kit.threshold,
      "n_members": len(rows),
      "n_trained": sum(len(g["members"]) for g in group_info.values()),
      "members": rows,
      "skipped": [{"name": m.name, "reason": "no perceptual.weights (VGG16) given"}
                  for m in skipped],
      "reference": refs,
      "targets": {
          "plain_min_success_rate": min((r["success_rate"] for r in plain), default=None),
          "plain_reaching_target": sum(r["success_rate"] >= PLAIN_TARGET for r in plain),
          "plain_total": len(plain),
          "null_max_success_rate": max((r["success_rate"] for r in nulls), default=None),
          "null_detected": sum(bool(r["detected"]) for r in nulls),
      },
      "groups": group_info,
      "devices": int(mesh.devices.size),
      "timing": timing,
      "summary": summary(rows, skipped, refs),
  }


def heatmap_figure(rows: list[dict]) -> Figure | None:
  """Success rate of plain members over architecture x loss (mean over seeds etc.)."""
  plain = [r for r in rows if _is_plain(r)]
  if not plain:
    return None
  arch = list(dict.fromkeys(r["arch"] for r in plain))
  loss = list(dict.fromkeys(r["loss"] for r in plain))
  grid = np.full((len(arch), len(loss)), np.nan)
  for i, a in enumerate(arch):
    for j, l in enumerate(loss):
      v = [r["success_rate"] for r in plain if r["arch"] == a and r["loss"] == l]
      if v:
        grid[i, j] = np.mean(v)
  fig = Figure(figsize=(1.2 + 1.0 * len(loss), 0.8 + 0.45 * len(arch)))
  ax = fig.subplots()
  im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(loss)), loss, rotation=30, ha="right")
  ax.set_yticks(range(len(arch)), arch)
  for i in range(len(arch)):
    for j in range(len(loss)):
      if np.isfinite(grid[i, j]):
        ax.text(j, i, f"{grid[i, j]:.0%}", ha="center", va="center", fontsize=8,
                color="w" if grid[i, j] < 0.6 else "k")
  ax.set_title("success rate (plain members)")
  fig.colorbar(im, ax=ax)
  fig.tight_layout()
  return fig


def null_by_arch(members: list[dict], per_image: dict) -> list[dict]:
  """The false-claim view of the null members, one row per architecture setting: how many,
  how many detected, the smallest set p-value and the largest per-image statistic."""
  rows = {}
  for r in members:
    if not r["null"] or r["removal"] != "none":
      continue
    e = rows.setdefault(r["arch"], {"arch": r["arch"], "family": r["family"], "members": 0,
                                    "detected": 0, "smallest p-value": 1.0,
                                    "largest statistic": -np.inf})
    e["members"] += 1
    e["detected"] += int(bool(r["detected"]))
    e["smallest p-value"] = min(e["smallest p-value"], float(r["p_value"]))
    e["largest statistic"] = max(e["largest statistic"],
                                 float(np.max(per_image[r["name"]]["stats"])))
    if "whole_set_p" in r:  # the same models serving whole photos
      e["whole-photo sets detected"] = (e.get("whole-photo sets detected", 0)
                                        + int(bool(r["whole_set_detected"])))
      e["smallest whole-photo p"] = min(e.get("smallest whole-photo p", 1.0),
                                        float(r["whole_set_p"]))
  return list(rows.values())


def write(workdir: str, rep: dict, per_image: dict, reference: dict, threshold: float) -> None:
  os.makedirs(os.path.join(workdir, report_lib.FIGURES_DIR), exist_ok=True)
  rep = report_lib.to_jsonable({**rep, "null_by_arch": null_by_arch(rep["members"], per_image)})
  report_lib.write_text_atomic(os.path.join(workdir, "report.json"),
                               json.dumps(rep, indent=2, allow_nan=False) + "\n")
  figures = {}

  def emit(caption, name, fig):
    if fig is None:
      return
    rel = f"{report_lib.FIGURES_DIR}/{name}"
    report_lib.save_figure(fig, os.path.join(workdir, rel))
    figures[caption] = rel

  emit("Success rate over architecture x loss (plain members)", "zoo_heatmap.png",
       heatmap_figure(rep["members"]))
  null_p = [r["p_value"] for r in rep["members"] if r["null"] and r["removal"] == "none"]
  if len(null_p) >= 2:  # innocent imitators: their set p-values should be uniform or above
    emit("Null members' set p-values against uniform (on or above the diagonal: valid)",
         "zoo_null_qq.png", report_lib.qq_figure({"null members": np.asarray(null_p)},
                                                 "null members' set p-values"))
  nc_groups = {k: np.asarray(v["nc"]) for k, v in reference.items()}
  stat_groups = {k: np.asarray(v["stats"]) for k, v in reference.items()}
  for r in rep["members"]:
    fam = family_of_attack(r)
    nc_groups.setdefault(fam, [])
    stat_groups.setdefault(fam, [])
    nc_groups[fam] = np.concatenate([np.asarray(nc_groups[fam]), per_image[r["name"]]["nc"]])
    stat_groups[fam] = np.concatenate([np.asarray(stat_groups[fam]),
                                       per_image[r["name"]]["stats"]])
  keyed = rep.get("method") in ("keyed", "filter")
  if keyed:  # the NC columns hold the fraction of key bits read right
    emit("Fraction of key bits read right per image by attack family (0.5: chance)",
         "zoo_nc_hist.png", report_lib.histogram_figure(
             nc_groups, 0.5, "chance", "fraction of key bits read right"))
  else:
    emit("Paper's NC per image by attack family, with the paper's 0.95 threshold",
         "zoo_nc_hist.png", report_lib.histogram_figure(
             nc_groups, report_lib.PAPER_NC_THRESHOLD, "paper threshold", "NC"))
  stat = "signed-rank score" if keyed else "watermark statistic"
  emit(f"{stat.capitalize()} per image by attack family, with the kit's threshold",
       "zoo_stats_hist.png", report_lib.histogram_figure(stat_groups, threshold, "threshold", stat))
  report_lib.write_text_atomic(os.path.join(workdir, "report.md"), markdown(rep, figures))


def _whole_note(members: list[dict]) -> str:
  """What the whole-photo columns mean, when the rows have them."""
  side = next((r["whole_side"] for r in members if "whole_side" in r), None)
  if side is None:
    return ""
  return (f"*whole_photos*: each member as trained also serves the held-out photos whole (their "
          f"inputs cut to {side} x {side} px), as a thief serves images; the photos detected "
          "alone, and *whole_set_p* the p-value of all of them as one set.\n")


def markdown(rep: dict, figures: dict) -> str:
  t = rep["targets"]
  parts = ["# deepwm_jax surrogate zoo\n",
           f"Kit: `{rep['kit']}`; {rep['n_members']} rows ({rep['n_trained']} trained "
           f"members), {rep['devices']} device(s). *success rate* is the fraction of held-out "
           f"outputs the kit's statistic counts as watermarked (threshold "
           f"{rep['threshold']:.4g}" + (": the signed-rank score, the rank sum of the key bits "
           "read right over its largest value, that detects one image alone by the exact "
           "test; the NC columns hold the fraction of key bits read right)"
           if rep.get("method") in ("keyed", "filter")
           else "); the paper's success rate (NC > 0.95) is beside it") + ".\n",
           "## Summary\n", rep["summary"] + "\n",
           "## Targets\n",
           report_lib.markdown_table([{
               "plain members >= 90%": f"{t['plain_reaching_target']} / {t['plain_total']}",
               "lowest plain success rate": t["plain_min_success_rate"],
               "null members detected": t["null_detected"],
               "highest null success rate": t["null_max_success_rate"]}],
               ["plain members >= 90%", "lowest plain success rate", "null members detected",
                "highest null success rate"]),
           "## Reference (no attack)\n",
           report_lib.markdown_table([{"group": k, **v} for k, v in rep["reference"].items()],
                                     ["group", "success_rate", "nc_mean", "n_images"]),
           "## Members\n", _whole_note(rep["members"]),
           report_lib.markdown_table(rep["members"], TABLE)]
  if rep.get("null_by_arch"):
    whole = ["whole-photo sets detected", "smallest whole-photo p"]
    parts += ["## Null members by architecture\n",
              "Models trained on clean pairs only: any detection is a false claim.\n",
              report_lib.markdown_table(rep["null_by_arch"],
                                        ["arch", "family", "members", "detected",
                                         "smallest p-value", "largest statistic"]
                                        + [c for c in whole if c in rep["null_by_arch"][0]])]
  if rep["skipped"]:
    parts += ["## Skipped\n", report_lib.markdown_table(rep["skipped"], ["name", "reason"])]
  parts += ["## Timing (seconds)\n", report_lib.markdown_table(
      [{"stage": k, "seconds": v} for k, v in rep["timing"].items()], ["stage", "seconds"])]
  if figures:
    parts.append("## Figures\n")
    for caption, rel in figures.items():
      parts.append(f"**{caption}**\n\n![{caption}]({rel})\n")
  return "\n".join(parts)
