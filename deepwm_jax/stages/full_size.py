"""The kit on whole held-out photos at their own size, as a protected API would serve them.

For each photo (cropped to at most `MAX_SIDE` px a side, to keep the run short): fidelity of
B' = kit.embed(B) against B at full size, where the residual lies (its share within 2 px of a
window's edge, against that frame's share of the pixels: a kit that hid its watermark in the
frame of its crops would score far above it), and three verdicts on the single image: the
protected photo, its clean original, and the protected photo translated by one pixel (cropped
by one row and column, so its windows no longer fall where the embedding's did). A kit that
can search its alignment (a keyed kit) also judges the shifted photo, and the clean one, with
`verify --search shift`, whose bound counts every alignment tried, and so both photos cut to a
CROP of each side at an offset drawn per photo and kept at that size (what a page that shows
part of a served image does). And the same photo protected under an embed-time PSNR floor of
FLOOR_DB (budget.py): its fidelity and verdict.

A thief serves whole images too: `suspect_inputs` gives the task inputs A of the same photos
(degraded as the config's task degrades, or the owner's collected inputs), cut to one square
of SUSPECT_SIDE px, and `judge_suspects` judges what the report's imitators and null models,
trained on crops, make of them, one photo at a time and all of them as one set.
"""
import numpy as np

from deepwm_jax import budget, windows
from deepwm_jax.data import pairs as pairs_lib, sources
from deepwm_jax.stages import common

MAX_SIDE = 512
N_PHOTOS = 4  # the builtin held-out photos are four, from smooth (moon) to all texture (gravel)
AMPLIFY = 20  # |B' - B| is drawn this many times brighter in the figure
FLOOR_DB = 40.0  # the embed-time floor shown beside each photo (`deepwm embed --psnr-floor`)
CROP = 0.6  # the kept crop judged with the search: this fraction of each side
# The suspects' whole photos: one square side for all of them, so that each model compiles
# once; a multiple of the crop, which every imitator trained on crops can take.
SUSPECT_SIDE = 256
SUSPECT_SEED = 909  # the degradation's draw for the whole photos (pairs.py's offsets are 1-4)


def photos_for(images: list[np.ndarray], n: int = N_PHOTOS, max_side: int = MAX_SIDE) -> list:
  """The first `n` photos, centre-cropped to at most max_side x max_side."""
  out = []
  for img in images[:n]:
    h, w = img.shape[:2]
    y, x = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    out.append(np.ascontiguousarray(img[y:y + max_side, x:x + max_side]))
  return out


def suspect_inputs(cfg, n: int = N_PHOTOS, side: int = SUSPECT_SIDE) -> np.ndarray | None:
  """[n, s, s, C]: the task inputs A of the first `n` held-out photos, each cut to its centre
  square of s px, s the largest multiple of the crop up to `side` that every photo holds (None
  when a photo is smaller than the crop). A is the config's degradation of the photo, drawn
  from the config's seed, or a paired source's collected input."""
  d = cfg.data
  images = pairs_lib.load_split(cfg, "val")[:n]
  if not images:
    return None
  s = min([side] + [min(img.shape[:2]) for img in images]) // d.image_size * d.image_size
  if s < d.image_size:
    return None
  squares = np.stack([photos_for([img], 1, s)[0] for img in images]).astype(np.float32)
  if sources.is_paired(d.source):
    return squares[..., :d.channels]
  return pairs_lib.degraded(cfg, squares, SUSPECT_SEED)


def judge_suspects(kit, suspects: dict[str, tuple[str, np.ndarray]],
                   references: np.ndarray | None = None) -> dict:
  """{name: record}: each suspect's whole images (`suspects`: name -> (role, [N, s, s, C]))
  judged one at a time and as one set by the kit's own verdict; read against `references`
  (the owner's outputs for the same inputs) by a kit that reads them (a filter kit)."""
  def bits(v):  # a keyed verdict's matching key bits; other kits' verdicts have none
    return None if getattr(v, "matches", None) is None else int(v.matches)

  use_refs = references is not None and getattr(kit, "reads_reference", False)
  ref = (lambda i: {"references": [references[i]]}) if use_refs else (lambda i: {})
  out = {}
  for name, (role, images) in suspects.items():
    alone = [kit.verify([x], **ref(i)) for i, x in enumerate(images)]
    whole = kit.verify(list(images), **({"references": list(references)} if use_refs else {}))
    out[name] = {"role": role, "against_owner_outputs": use_refs,
                 "height": int(images.shape[1]), "width": int(images.shape[2]),
                 "n_images": len(alone), "detected_alone": int(sum(v.detected for v in alone)),
                 "p_values": [float(v.p_value) for v in alone],
                 "matches": [bits(v) for v in alone],
                 "set": {"matches": bits(whole), "p_value": float(whole.p_value),
                         "detected": bool(whole.detected)}}
  return out


def _crop(img: np.ndarray, frac: float, seed: int) -> np.ndarray:
  """`frac` of each side of img at an offset drawn from `seed` (the same for a photo and its
  clean original, so both are cut alike)."""
  h, w = img.shape[:2]
  ch, cw = int(h * frac), int(w * frac)
  rng = np.random.default_rng(seed)
  y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
  return img[y:y + ch, x:x + cw]


def _verdict(kit, img, **search) -> dict:
  v = kit.verify([img], **search)
  return {"p_value": float(v.p_value), "detected": bool(v.detected)}


def study(kit, photos: list[np.ndarray], suspects: dict | None = None,
          references: np.ndarray | None = None) -> tuple[dict, dict]:
  """(report record, figure panels) for the photos (any sizes at least the kit's crop), and
  for `suspects` (judge_suspects, with `references`) when given."""
  marked = kit.embed(list(photos))
  floored = budget.cap(list(photos), marked, FLOOR_DB)
  rows = []
  for i, (b, bm, bf) in enumerate(zip(photos, marked, floored)):
    resid = bm - b
    rows.append({
        "height": int(b.shape[0]), "width": int(b.shape[1]),
        "windows": int(kit.window_counts([b])[0]),
        "psnr": common.mean_psnr(bm[None], b[None]), "ssim": common.mean_ssim(bm[None], b[None]),
        "frame_share": windows.frame_share(resid, kit.image_size, kit.overlap),
        "frame_area": windows.frame_area(b.shape, kit.image_size, kit.overlap),
        "protected": _verdict(kit, bm), "clean": _verdict(kit, b),
        "protected shifted 1 px": _verdict(kit, bm[1:, 1:]),
        "floor": {"psnr_floor": FLOOR_DB, "psnr": common.mean_psnr(bf[None], b[None]),
                  "ssim": common.mean_ssim(bf[None], b[None]), "protected": _verdict(kit, bf)}})
    if getattr(kit, "searchable", False):
      rows[-1]["searched"] = {"protected shifted 1 px": _verdict(kit, bm[1:, 1:], search="shift"),
                              "clean": _verdict(kit, b, search="shift")}
      if min(b.shape[:2]) * CROP >= kit.image_size:  # the crop still holds a whole window
        rows[-1]["searched"].update({
            "crop": CROP, "protected cropped": _verdict(kit, _crop(bm, CROP, i), search="shift"),
            "clean cropped": _verdict(kit, _crop(b, CROP, i), search="shift")})
  b, bm = photos[0], marked[0]
  panels = {"B (held-out photo)": b, "B' (protected)": bm,
            f"|B'-B| x{AMPLIFY}": np.clip(AMPLIFY * np.abs(bm - b), 0, 1)}
  record = {"photos": rows, "window": int(kit.image_size), "overlap": int(kit.overlap),
            "method": getattr(kit, "method", "deep")}
  if suspects:
    record["suspects"] = judge_suspects(kit, suspects, references)
  return record, panels
