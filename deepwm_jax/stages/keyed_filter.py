"""protect.method='filter': the keyed filter of filter_key.py, no networks to train.

  the owner's key, drawn at random -> B' = M(A) + the keyed filter of M(A) (each image capped
  at protect.filter.psnr_floor) -> evaluation imitators trained on (A, B') and innocent ones
  on clean (A, M(A)) -> every group read against the owner's outputs for the same inputs (the
  suspect queried with the owner's inputs) and on its own, judged by the exact test
  (secret_key.py), as it is and after the distortions of serving in sets (served.py)
  -> kit + report

The filter has no position: an imitator copies it wherever it applies what it learned, so the
imitators also serve whole held-out photos and are judged on them.
"""
import time

import numpy as np

from deepwm_jax import budget, filter_key, metrics, secret_key
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.stages import attack, common, full_size, keyed, served, task

OWNER_KEY_FILE = "owner_filter_key.npy"


def embed_all(cfg, key, images: np.ndarray) -> np.ndarray:
  """B' of a batch [N, H, W, C], each image capped at protect.filter.psnr_floor."""
  f = cfg.protect.filter
  marked = [filter_key.embed(x, key, float(f.eps), int(f.radius)) for x in images]
  return np.stack(budget.cap(list(images), marked, float(f.psnr_floor)))


def judge(cfg, key, alpha: float, images: np.ndarray, references: np.ndarray | None):
  """The kit's verdict on a set (filter_key.read and decide)."""
  return filter_key.decide(*filter_key.read(list(images), int(cfg.protect.filter.radius),
                                            None if references is None else list(references)),
                           key, alpha)


def owner_outputs(r: common.Runner, a: np.ndarray, protect: pairs_lib.Pairs):
  """M(a) for inputs outside the splits, or None where M is a data set's stored targets."""
  src = r.cfg.task.source
  if src == "dataset":
    return None
  return task.outputs(r, [pairs_lib.Pairs(a, a)], train=protect)[0]


def run(r: common.Runner, write_kit) -> tuple[dict, dict, np.ndarray, dict, np.ndarray | None]:
  """The filter method end to end; `write_kit(key)` writes the kit. Returns (report, example
  grid, the innocent groups' set p-values, the imitators' and null models' outputs on whole
  held-out photos, the owner's outputs for the same photos or None)."""
  cfg = r.cfg
  f = cfg.protect.filter
  alpha = float(cfg.evaluate.alpha)
  splits = task.load_splits(cfg)
  m_attack, m_val = task.outputs(r, [splits.attack, splits.val], train=splits.protect)
  n_off, channels = len(filter_key.offsets(int(f.radius))), int(cfg.data.channels)
  key = common.owner_key(r, n_off * channels, int(f.get("key_seed", -1)),
                         OWNER_KEY_FILE).reshape(n_off, channels)
  write_kit(key)

  wm_attack, wm_val = embed_all(cfg, key, m_attack), embed_all(cfg, key, m_val)
  other_key = secret_key.new_key(key.size, seed=cfg.seed + 7).reshape(key.shape)
  wm_other = embed_all(cfg, other_key, m_val)

  t = time.time()
  models = {}  # name -> (role, model)
  for i, arch in enumerate(f.surrogate_archs):
    models[f"surrogate {arch}"] = ("imitates B'", attack.imitator(
        r, f"filter_surrogate_{arch}", keyed.imitator_spec(cfg, arch, 100 + i),
        splits.attack.a, wm_attack))
  for i, arch in enumerate(f.null_archs):
    models[f"null {arch}"] = ("innocent", attack.imitator(
        r, f"filter_null_{arch}", keyed.imitator_spec(cfg, arch, 200 + i), splits.attack.a,
        m_attack))
  suspects = keyed.suspect_groups(models, splits.val.a, wm_val, m_val, wm_other)
  whole_a = full_size.suspect_inputs(cfg)
  whole = {} if whole_a is None else {n: (role, m(whole_a)) for n, (role, m) in models.items()}
  whole_ref = None if whole_a is None else owner_outputs(r, whole_a, splits.protect)
  r.timing["imitators"] = round(time.time() - t, 2)

  groups, alone = {}, {}
  for name, (role, x) in suspects.items():
    groups[name] = {"role": role, **judge(cfg, key, alpha, x, m_val).to_dict()}
    alone[name] = {"role": role, **judge(cfg, key, alpha, x, None).to_dict()}
  specs = tuple(cfg.evaluate.get("served", ()))
  if specs:  # read against the owner's outputs after JPEG, resizes, crops, blur and noise
    t = time.time()
    def judge_set(x, ref):
      v = judge(cfg, key, alpha, x, ref)
      return v.p_value, v.detected, v.image_rate
    served_rep = served.study(judge_set, suspects, specs, int(cfg.evaluate.get("set_size", 16)),
                              cfg.seed, references=m_val)
    r.timing["served"] = round(time.time() - t, 2)
  innocent = {n: g for n, g in groups.items() if g["role"] == "innocent"}
  innocent_p = np.array([g["p_value"] for g in innocent.values()]
                        + [g["p_value"] for g in alone.values() if g["role"] == "innocent"])
  claimed = ([n for n, g in innocent.items() if g["detected"]]
             + [f"{n} (alone)" for n, g in alone.items()
                if g["role"] == "innocent" and g["detected"]])
  rep = {
      "method": "filter",
      "key": {"bits": int(key.size), "radius": int(f.radius), "eps": float(f.eps),
              "psnr_floor": float(f.psnr_floor),
              "score_needed": secret_key.score_needed(key.size, alpha),
              "min_bits_needed": secret_key.bits_needed(key.size, alpha)},
      "alpha": alpha,
      "fidelity": {"psnr": float(np.mean(metrics.psnr(wm_val, m_val))),
                   "ssim": float(np.mean(metrics.ssim(wm_val, m_val)))},
      "groups": groups,
      "groups_alone": alone,
      "innocent": {"n_sets": len(innocent_p), "sets_detected": claimed,
                   "smallest_set_p_value": float(innocent_p.min()),
                   "n_images": int(sum(g["n_images"] for g in innocent.values())),
                   "images_detected_alone": int(round(sum(
                       g["image_rate"] * g["n_images"] for g in innocent.values())))},
      "n_val": int(cfg.data.n_val), "image_size": int(cfg.data.image_size),
      "channels": channels, "timing": dict(r.timing)}
  if specs:
    rep["served"] = served_rep
  rep["warnings"] = keyed.warnings(rep, "the filter is too weak for these images; run again "
                                     "(new workdir) with a larger --config.protect.filter.eps")
  for msg in rep["warnings"]:
    r.log(f"warning: {msg}")
  n = min(6, len(m_val))
  grid = {"A": splits.val.a[:n], "B": m_val[:n], "B'": wm_val[:n],
          "|B'-B| x20": np.clip(20 * np.abs(wm_val[:n] - m_val[:n]), 0, 1)}
  return rep, grid, innocent_p, whole, whole_ref
