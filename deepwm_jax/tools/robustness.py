"""`deepwm robustness`: what survives after an image is served: JPEG, resizing, cropping, blur,
noise and shifts, applied to protected images and to their clean originals, each image judged
alone and all of them as one set. Draws the detection rate against each distortion's strength.

  deepwm robustness --kit KIT --workdir DIR [--input DIR] [--size 256] [--only FAMILIES]

Images: the folder given (images of any size at least the kit's crop), or the builtin held-out
photos at their own resolution; each is centre-cropped to at most `--size` px a side (time
grows with the area). Protected images are kit.embed(image). Same-size distortions are
zoo/removal.py's (the real JPEG codec, bicubic resizes, Gaussian blur and noise); the ones
that change the size (a crop kept as it is, a kept rescale, a shift) are here. A kit reads
whatever size results, down to its crop; a smaller result counts as not detected.
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
          search: str = "none") -> list[dict]:
  """One record per (family, strength): for the protected images and for their clean
  originals, the share detected alone, their median p-value, and the p-value of all of them
  judged as one set (a keyed kit with `search`: over every alignment, alignment.py)."""
  marked = kit.embed(list(images))
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


def run(kit_path: str, workdir: str, input_dir: str | None = None, size: int = 256,
        families=None, log=print, search: str = "none") -> dict:
  """Loads the kit and the images, sweeps, writes workdir/robustness.{json,md,png}."""
  import deepwm_jax
  from deepwm_jax import report
  from deepwm_jax.stages import full_size
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
  rows = sweep(kit, images, families, log, search)
  result = {"kit": os.path.abspath(kit_path), "n_images": len(images), "max_side": size,
            "search": search,
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
                           + f".\n\n{table}\n"
                           f"![robustness](robustness.png)\n")
  return result


def add_arguments(p):
  p.add_argument("--kit", required=True, metavar="KIT", help="the kit whose images to test")
  p.add_argument("--workdir", required=True, metavar="DIR",
                 help="where robustness.json, .md and .png go")
  p.add_argument("--input", default=None, metavar="DIR",
                 help="images to protect and distort (default: the builtin held-out photos)")
  p.add_argument("--size", type=int, default=256,
                 help="centre-crop images to at most this many px a side (default 256)")
  p.add_argument("--only", default=None, metavar="FAMILIES",
                 help=f"comma-separated subset of: {', '.join(SWEEPS)}")
  p.add_argument("--search", default="none", choices=("none", "shift", "scale"),
                 help="keyed kits: verify over every alignment, as `deepwm verify --search`")
  return p


def main(args, log=print) -> int:
  fams = [f.strip() for f in args.only.split(",")] if args.only else None
  run(args.kit, args.workdir, args.input, args.size, fams, log, args.search)
  return 0
