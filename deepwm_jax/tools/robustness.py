"""`deepwm robustness`: what survives after an image is served: JPEG, resizing, cropping, blur,
noise and shifts, applied to protected images and to their clean originals, each image judged
alone and all of them as one set. Draws the detection rate against each distortion's strength.

  deepwm robustness --kit KIT --workdir DIR [--input DIR] [--size 256] [--only FAMILIES]
                    [--search shift|scale] [--psnr-floor DB]
  deepwm robustness --compare DIR DIR [...] --workdir OUT

Images: the folder given (images of any size at least the kit's crop), or the builtin held-out
photos at their own resolution; each is centre-cropped to at most `--size` px a side (time
grows with the area). Protected images are kit.embed(image) (with `--psnr-floor`, each
scaled down to that PSNR where stronger, as `deepwm embed --psnr-floor` does). Same-size
distortions are zoo/removal.py's (the real JPEG codec, bicubic resizes, Gaussian blur and
noise); the ones that change the size (a crop kept as it is, a kept rescale, a shift) are
here. A kit reads whatever size results, down to its crop; a smaller result counts as not
detected.

The second form draws the trade-off between fidelity and robustness from earlier sweeps (one
per kit, on the same images): for each distortion, the share of protected images detected
against the kit's PSNR on those images at their own size.
"""
import argparse
import json
import os
import time

import numpy as np

from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError

# Imported when a sweep runs, not when `deepwm` builds its parser: report.py loads matplotlib.


def _apply(spec: str, img: np.ndarray) -> np.ndarray:
  from deepwm_jax.zoo import removal
  return removal.apply(spec, img[None])[0]


def _removal(kind):
  return lambda img, v: _apply(f"{kind}:{v}", img)


def crop_kept(img: np.ndarray, fraction: float) -> np.ndarray:
  """`fraction` of each side at a fixed off-centre offset (a third of the way in), not
  resized: the kept part's pixels are where they were, shifted."""
  h, w = img.shape[:2]
  ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
  y, x = (h - ch) // 3, (w - cw) // 3
  return img[y:y + ch, x:x + cw].copy()


def rescale_kept(img: np.ndarray, scale: float) -> np.ndarray:
  """Resized by `scale` (bicubic) and kept at that size."""
  h, w = img.shape[:2]
  return imageio.resize_image(img, max(1, round(h * scale)), max(1, round(w * scale)))


def shift(img: np.ndarray, pixels: float) -> np.ndarray:
  """Translated by `pixels` rows and columns: the first ones cut off."""
  p = int(pixels)
  return img[p:, p:].copy()


def resize_jpeg(img: np.ndarray, quality: float) -> np.ndarray:
  """A down-and-up resize to 0.75, then JPEG at `quality`: a typical re-publication."""
  return _apply(f"rescale:0.75+jpeg:{int(quality)}", img)


# family -> (what the strength is, strengths from the mildest, distortion(image, strength))
SWEEPS = {
    "none": ("no distortion", (0,), lambda img, s: img.copy()),
    "shift": ("pixels", (1, 3, 8, 16), shift),
    "jpeg": ("quality", (95, 75, 50, 30), _removal("jpeg")),
    "resize_jpeg": ("JPEG quality after a 0.75 resize", (90, 75, 50), resize_jpeg),
    "resize_back": ("down-and-up scale", (0.75, 0.5, 0.25), _removal("rescale")),
    "rescale_kept": ("scale, kept", (2.0, 1.5, 0.75, 0.5), rescale_kept),
    "crop_kept": ("fraction of each side, kept", (0.9, 0.6, 0.3), crop_kept),
    "crop_resize": ("fraction of each side, resized back", (0.9, 0.75, 0.5), _removal("crop")),
    "blur": ("Gaussian sigma (px)", (0.5, 1.0, 2.0), _removal("blur")),
    "noise": ("Gaussian sigma", (0.01, 0.03, 0.05), _removal("noise")),
}


def judge(kit, images: list[np.ndarray], search: str = "none") -> dict:
  """Each image judged alone, and all of them as one set: {'alone': [(detected, p)], 'set_p',
  'set_detected'}. An image smaller than the kit's crop cannot be read: not detected, p 1."""
  ok = [i for i, img in enumerate(images) if min(img.shape[:2]) >= kit.image_size]
  alone = [(False, 1.0)] * len(images)
  if not ok:
    return {"alone": alone, "set_p": 1.0, "set_detected": False}
  readable = [images[i] for i in ok]
  kw = {"search": search} if search != "none" else {}
  v = kit.verify(readable, **kw)
  if hasattr(v, "p_per_image"):  # keyed: each image's exact p-value is in the set's verdict
    for i, p in zip(ok, v.p_per_image):
      alone[i] = (bool(p <= v.alpha), float(p))
  else:
    for i, img in zip(ok, readable):
      vi = kit.verify([img], **kw)
      alone[i] = (bool(vi.detected), float(vi.p_value))
  return {"alone": alone, "set_p": float(v.p_value), "set_detected": bool(v.detected)}


def sweep(kit, images: list[np.ndarray], families=None, log=print,
          search: str = "none", marked=None) -> list[dict]:
  """One record per (family, strength): for the protected images and for their clean
  originals, the share detected alone, their median p-value, and the p-value of all of them
  judged as one set (a keyed kit with `search`: over every alignment, alignment.py).
  `marked`: kit.embed(images) if already computed."""
  marked = kit.embed(list(images)) if marked is None else marked
  rows = []
  for fam in families or SWEEPS:
    what, strengths, fn = SWEEPS[fam]
    for s in strengths:
      row = {"family": fam, "strength": s, "what": what}
      for role, imgs in (("protected", marked), ("clean", images)):
        j = judge(kit, [fn(np.asarray(i, np.float32), s) for i in imgs], search)
        row[f"{role}_detected"] = float(np.mean([d for d, _ in j["alone"]]))
        row[f"{role}_median_p"] = float(np.median([p for _, p in j["alone"]]))
        row[f"{role}_set_p"] = j["set_p"]
        row[f"{role}_set_detected"] = j["set_detected"]
      rows.append(row)
      log(f"{fam:<13} {s!s:>5}: protected {100 * row['protected_detected']:3.0f}% detected "
          f"(median p {row['protected_median_p']:.2g}, set p {row['protected_set_p']:.2g}), "
          f"clean {100 * row['clean_detected']:3.0f}% (set p {row['clean_set_p']:.2g})")
  return rows


def figure(rows: list[dict], title: str):
  """Detection rate against strength, one panel per family: protected images alone (solid)
  and as one set (crosses: detected or not), clean images alone (dashed)."""
  from deepwm_jax import report
  fams = list(dict.fromkeys(r["family"] for r in rows))
  cols = 3
  fig = report._new_figure(4.0 * cols, 2.8 * (-(-len(fams) // cols)))
  axes = fig.subplots(-(-len(fams) // cols), cols, squeeze=False).ravel()
  for ax, fam in zip(axes, fams):
    rs = [r for r in rows if r["family"] == fam]
    x = np.arange(len(rs))
    ax.plot(x, [r["protected_detected"] for r in rs], "o-", label="protected, alone")
    ax.plot(x, [float(r["protected_set_detected"]) for r in rs], "x:", ms=9,
            label="protected, as one set")
    ax.plot(x, [r["clean_detected"] for r in rs], "s--", label="clean, alone")
    ax.set_xticks(x, [str(r["strength"]) for r in rs])
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{fam}: {rs[0]['what']}", fontsize=9)
    ax.set_ylabel("share detected")
  for ax in axes[len(fams):]:
    ax.axis("off")
  axes[0].legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


def fidelity(marked: list[np.ndarray], images: list[np.ndarray]) -> dict:
  """PSNR and SSIM of each protected image against its original, at its own size."""
  from deepwm_jax.stages import common
  psnr = [common.mean_psnr(m[None], i[None]) for m, i in zip(marked, images)]
  ssim = [common.mean_ssim(m[None], i[None]) for m, i in zip(marked, images)]
  return {"psnr": psnr, "ssim": ssim, "psnr_mean": float(np.mean(psnr)),
          "ssim_mean": float(np.mean(ssim))}


def run(kit_path: str, workdir: str, input_dir: str | None = None, size: int = 256,
        families=None, log=print, search: str = "none", psnr_floor: float = 0.0) -> dict:
  """Loads the kit and the images, sweeps, writes workdir/robustness.{json,md,png}."""
  import deepwm_jax
  from deepwm_jax import report
  from deepwm_jax.stages import full_size
  from deepwm_jax import budget
  budget.check_floor(psnr_floor)
  kit = deepwm_jax.load_kit(kit_path)
  if search != "none" and getattr(kit, "method", None) != "keyed":
    raise DeepwmError("--search is for keyed kits; drop it for this kit")
  if size < kit.image_size:
    raise DeepwmError(f"--size {size} is smaller than the kit's crop ({kit.image_size})")
  bad = [f for f in families or () if f not in SWEEPS]
  if bad:
    raise DeepwmError(f"unknown distortion {bad[0]!r}; use some of {', '.join(SWEEPS)}")
  if input_dir:
    images, _ = imageio.read_image_dir(input_dir, None, kit.channels, stack=False)
  else:
    from deepwm_jax.data import sources
    images = sources.builtin_images("val", kit.channels)
  images = full_size.photos_for(images, n=len(images), max_side=size)
  small = [i for i, img in enumerate(images) if min(img.shape[:2]) < kit.image_size]
  if small:
    raise DeepwmError(f"image {small[0]} is smaller than the kit's crop ({kit.image_size} px); "
                      f"remove it or use larger images")
  t0 = time.time()
  marked = kit.embed(list(images), psnr_floor=psnr_floor)
  fid = fidelity(marked, images)
  rows = sweep(kit, images, families, log, search, marked)
  result = {"kit": os.path.abspath(kit_path), "n_images": len(images), "max_side": size,
            "search": search, "psnr_floor": float(psnr_floor), "fidelity": fid,
            "sizes": [list(i.shape[:2]) for i in images], "rows": rows,
            "seconds": round(time.time() - t0, 1)}
  os.makedirs(workdir, exist_ok=True)
  report.write_text_atomic(os.path.join(workdir, "robustness.json"),
                           json.dumps(result, indent=1) + "\n")
  report.save_figure(figure(rows, f"{os.path.basename(os.path.abspath(kit_path))}: "
                                  f"{len(images)} images, each alone and as one set"),
                     os.path.join(workdir, "robustness.png"))
  table = report.markdown_table(
      [{"distortion": r["family"], "strength": r["strength"],
        "protected detected": f"{100 * r['protected_detected']:.0f}%",
        "median p": f"{r['protected_median_p']:.2g}",
        "protected set p": f"{r['protected_set_p']:.2g}",
        "clean detected": f"{100 * r['clean_detected']:.0f}%",
        "clean set p": f"{r['clean_set_p']:.2g}"} for r in rows],
      ["distortion", "strength", "protected detected", "median p", "protected set p",
       "clean detected", "clean set p"])
  report.write_text_atomic(os.path.join(workdir, "robustness.md"),
                           f"# Robustness of {kit_path}\n\n{len(images)} images of at most "
                           f"{size} px a side, each judged alone and all {len(images)} as "
                           f"one set"
                           + (f", over every alignment ({search})" if search != "none" else "")
                           + (f", protected with a PSNR floor of {psnr_floor:g} dB"
                              if psnr_floor else "")
                           + f". Fidelity of the protected images at that size: PSNR "
                           f"{fid['psnr_mean']:.1f} dB, SSIM {fid['ssim_mean']:.4f} (mean)."
                           f"\n\n{table}\n"
                           f"![robustness](robustness.png)\n")
  return result


def _load_sweep(workdir: str) -> dict:
  path = os.path.join(workdir, "robustness.json")
  if not os.path.isfile(path):
    raise DeepwmError(f"'{workdir}' holds no robustness.json; run `deepwm robustness --kit KIT "
                      f"--workdir {workdir}` first")
  try:
    with open(path) as f:
      rec = json.load(f)
  except (OSError, ValueError) as e:
    raise DeepwmError(f"'{path}' cannot be read ({type(e).__name__}); run `deepwm robustness` "
                      "again into that folder") from None
  if not isinstance(rec, dict) or not {"rows", "n_images"} <= rec.keys():
    raise DeepwmError(f"'{path}' is not a robustness sweep; run `deepwm robustness` again "
                      "into that folder")
  if "fidelity" not in rec:
    raise DeepwmError(f"'{path}' was written without the images' fidelity; run `deepwm "
                      "robustness` again for that kit")
  return rec


def tradeoff_figure(kits: list[dict], rows: list[dict]):
  """For each distortion family, the share of protected images detected alone against each
  kit's PSNR at full size: one line per strength, kits from the least to the most faithful."""
  from deepwm_jax import report
  fams = list(dict.fromkeys(r["family"] for r in rows))
  cols = min(3, len(fams))
  fig = report._new_figure(4.2 * cols, 3.0 * (-(-len(fams) // cols)))
  axes = fig.subplots(-(-len(fams) // cols), cols, squeeze=False).ravel()
  x = [k["psnr_mean"] for k in kits]
  for ax, fam in zip(axes, fams):
    rs = [r for r in rows if r["family"] == fam]
    for i, r in enumerate(rs):  # markers shrink so that lines on top of each other show
      ax.plot(x, r["detected"], "o-", ms=max(3, 9 - 2 * i), label=str(r["strength"]))
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("PSNR at full size (dB)")
    ax.set_ylabel("protected, detected alone")
    ax.set_title(f"{fam}: {rs[0]['what']}", fontsize=9, pad=16)
    ax.legend(fontsize=7, title_fontsize=7, title="strength")
    for i, k in enumerate(kits):  # numbered here, named below: names would collide
      ax.annotate(str(i + 1), (k["psnr_mean"], 1.0), fontsize=8, ha="center",
                  textcoords="offset points", xytext=(0, 8), annotation_clip=False)
  for ax in axes[len(fams):]:
    ax.axis("off")
  names = "   ".join(f"{i + 1}: {k['label']} ({k['psnr_mean']:.1f} dB, SSIM "
                     f"{k['ssim_mean']:.3f})" for i, k in enumerate(kits))
  fig.text(0.5, 0.005, names, ha="center", va="bottom", fontsize=7, wrap=True)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  return fig


def compare(workdirs: list[str], out: str, families=None, log=print) -> dict:
  """The trade-off between fidelity and robustness over several kits' sweeps (their
  workdirs), on the same images: writes out/tradeoff.{json,md,png}. A kit is labelled with
  its workdir's name (its path where two names are the same)."""
  from deepwm_jax import report
  if len(workdirs) < 2:
    raise DeepwmError("--compare needs the workdirs of at least two sweeps")
  recs = [_load_sweep(d) for d in workdirs]
  first = recs[0]
  for d, rec in zip(workdirs[1:], recs[1:]):
    if rec["n_images"] != first["n_images"] or rec.get("sizes") != first.get("sizes"):
      raise DeepwmError(f"'{d}' swept other images than '{workdirs[0]}' (sizes differ); "
                        "compare sweeps run with the same --input and --size")
  bad = [f for f in families or () if f not in SWEEPS]
  if bad:
    raise DeepwmError(f"unknown distortion {bad[0]!r}; use some of {', '.join(SWEEPS)}")
  labels = [os.path.basename(os.path.abspath(d)) for d in workdirs]
  if len(set(labels)) < len(labels):  # folders of the same name: their paths tell them apart
    labels = list(workdirs)
  kits = sorted(({"label": label, "workdir": os.path.abspath(d), "kit": rec.get("kit"),
                  "psnr_mean": rec["fidelity"]["psnr_mean"],
                  "ssim_mean": rec["fidelity"]["ssim_mean"], "_rows": rec["rows"]}
                 for label, d, rec in zip(labels, workdirs, recs)),
                key=lambda k: k["psnr_mean"])
  keys = [(r["family"], r["strength"]) for r in kits[0]["_rows"]
          if families is None or r["family"] in families]
  by_kit = [{(r["family"], r["strength"]): r for r in k.pop("_rows")} for k in kits]
  keys = [key for key in keys if all(key in b for b in by_kit)]
  if not keys:
    raise DeepwmError("the sweeps share no distortion; run them with the same --only")
  rows = [{"family": f, "strength": s, "what": by_kit[0][(f, s)]["what"],
           "detected": [b[(f, s)]["protected_detected"] for b in by_kit],
           "set_detected": [bool(b[(f, s)]["protected_set_detected"]) for b in by_kit],
           "clean_detected": [b[(f, s)]["clean_detected"] for b in by_kit]}
          for f, s in keys]
  result = {"kits": kits, "n_images": first["n_images"], "sizes": first.get("sizes"),
            "rows": rows}
  os.makedirs(out, exist_ok=True)
  report.write_text_atomic(os.path.join(out, "tradeoff.json"),
                           json.dumps(result, indent=1) + "\n")
  report.save_figure(tradeoff_figure(kits, rows), os.path.join(out, "tradeoff.png"))
  cols = ["kit", "PSNR (dB)", "SSIM"] + [f"{f} {s}" for f, s in keys]
  table = report.markdown_table(
      [{"kit": k["label"], "PSNR (dB)": f"{k['psnr_mean']:.1f}",
        "SSIM": f"{k['ssim_mean']:.4f}",
        **{f"{r['family']} {r['strength']}":
           f"{100 * r['detected'][i]:.0f}%" + (" (set)" if r["set_detected"][i] else "")
           for r in rows}} for i, k in enumerate(kits)], cols)
  clean = max(max(r["clean_detected"]) for r in rows)
  report.write_text_atomic(os.path.join(out, "tradeoff.md"),
                           f"# Fidelity against robustness\n\n{first['n_images']} images, "
                           f"each judged alone; '(set)': all of them detected as one set. "
                           f"Clean originals detected: at most {100 * clean:.0f}% in any "
                           f"cell.\n\n{table}\n![trade-off](tradeoff.png)\n")
  log(f"wrote {os.path.join(out, 'tradeoff.md')} ({len(kits)} kits, {len(rows)} distortions)")
  return result


def add_arguments(p):
  p.add_argument("--kit", default=None, metavar="KIT", help="the kit whose images to test")
  p.add_argument("--compare", nargs="+", default=None, metavar="DIR",
                 help="instead of --kit: the workdirs of earlier sweeps of several kits on the "
                      "same images; draws detection against fidelity (tradeoff.png)")
  p.add_argument("--workdir", required=True, metavar="DIR",
                 help="where robustness.json, .md and .png go (tradeoff.* with --compare)")
  p.add_argument("--input", default=None, metavar="DIR",
                 help="images to protect and distort (default: the builtin held-out photos)")
  p.add_argument("--size", type=int, default=256,
                 help="centre-crop images to at most this many px a side (default 256)")
  p.add_argument("--only", default=None, metavar="FAMILIES",
                 help=f"comma-separated subset of: {', '.join(SWEEPS)}")
  p.add_argument("--search", default="none", choices=("none", "shift", "scale"),
                 help="keyed kits: verify over every alignment, as `deepwm verify --search`")
  p.add_argument("--psnr-floor", type=float, default=0.0, metavar="DB",
                 help="protect with each image's watermark scaled down to this PSNR where "
                      "stronger, as `deepwm embed --psnr-floor` (default 0: off)")
  return p


def main(args, log=print) -> int:
  fams = [f.strip() for f in args.only.split(",")] if args.only else None
  if args.compare and args.kit:
    raise DeepwmError("give --kit (run a sweep) or --compare (compare sweeps), not both")
  if args.compare:
    compare(args.compare, args.workdir, fams, log)
  elif not args.kit:
    raise DeepwmError("--kit KIT is required (or --compare DIR DIR ... to compare sweeps)")
  else:
    run(args.kit, args.workdir, args.input, args.size, fams, log, args.search, args.psnr_floor)
  return 0
