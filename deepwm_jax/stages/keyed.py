"""protect.method='keyed': a barrier whose extractor never sees the owner's key.

  stage 1 over random keys (a new key per example) [-> stage 2 on surrogates of training
  keys] -> the owner's key, drawn once at random
  -> B' = H(B, pattern(owner's key)) -> evaluation imitators trained on (A, B') and innocent
  ones on clean (A, M(A)) -> every group read by R and judged by the exact test
  (secret_key.py), as it is and after the distortions of serving in sets (served.py)
  -> kit + report

Because H and R are trained over random keys and the owner's key is drawn after training, what
R reads from an image that does not carry the owner's key is independent of that key, so the
p-value of the exact test holds for images from any model (docs/verdicts.md). Nothing is
calibrated. The optional stage 2 (`harden`) fine-tunes R on surrogates of training keys, never
of the owner's: a stage 2 on the owner's key would make R depend on it and void the bound.
"""
import time

import jax
import ml_collections
import numpy as np

from deepwm_jax import metrics, secret_key
from deepwm_jax.data import watermarks
from deepwm_jax.stages import attack, common, full_size, served, task
from deepwm_jax.train import stage1, stage2

OWNER_KEY_FILE = "owner_key.npy"


def symmetry(cfg) -> str:
  """Which cells share a bit (data/watermarks.SYMMETRIES; 'none' in kits from before it)."""
  return cfg.protect.keyed.get("symmetry", "none")


def n_bits(cfg) -> int:
  return watermarks.key_bits(cfg.data.image_size, cfg.protect.keyed.cell, symmetry(cfg))


def pattern(cfg, key) -> np.ndarray:
  """The owner's watermark image: the key's cells, [S, S, C]."""
  d = cfg.data
  return np.asarray(watermarks.key_pattern(key, d.image_size, cfg.protect.keyed.cell, d.channels,
                                           symmetry(cfg)))


def train_barrier(r: common.Runner, a: np.ndarray, b: np.ndarray) -> dict:
  """Stage 'stage1' over random keys; returns H's and R's variables."""
  cfg = r.cfg
  d = cfg.data
  shape_w = watermarks.key_blank(d.image_size, d.channels)  # the shape H is built for
  state = stage1.init_state(cfg, jax.random.fold_in(r.key, 1), shape_w)
  step = stage1.make_step(cfg, shape_w, shape_w, key_cell=cfg.protect.keyed.cell,
                          key_symmetry=symmetry(cfg))
  batches = common.sampler({"a": a, "b": b}, cfg.stage1.batch, (cfg.seed, 21), r.mesh)
  state = r.train("stage1", step, state, batches, cfg.stage1.steps,
                  guard=common.stage1_guard(cfg))
  return {"embedder": state["embedder"], "extractor": {"params": state["extractor"]["params"]}}


def harden(r: common.Runner, nets: dict, a: np.ndarray, m_a: np.ndarray) -> dict:
  """Stage 'stage2' for keyed kits: R fine-tuned to read surrogates of training keys.

  One surrogate per entry of protect.keyed.stage2_archs, each trained on (A, H(M(A), k_i))
  with a training key k_i of its own, drawn from the config's seed: R learns to read a key
  through imitation, from several keys, and never the owner's (drawn after this stage), so the
  exact test keeps its bound. Negatives as in the deep method: clean M(A), the inputs A, and
  the protector's null models' outputs -> mid-grey. Returns R's new variables (`nets`'s own
  when there are no stage-2 archs).
  """
  cfg = r.cfg
  archs = tuple(cfg.protect.keyed.get("stage2_archs", ()))
  if not archs or cfg.stage2.steps == 0:
    return nets["extractor"]
  d = cfg.data
  bits = n_bits(cfg)
  keys = [secret_key.new_key(bits, seed=cfg.seed * 1000 + 31 + i) for i in range(len(archs))]
  sur, wm = [], []
  for i, (arch, k_i) in enumerate(zip(archs, keys)):
    wm_i = common.predict(stage1.make_embed_fn(cfg, pattern(cfg, k_i)), nets["embedder"], m_a)
    sm = attack.imitator(r, f"keyed_stage2_{i}_{arch}", imitator_spec(cfg, arch, 300 + i), a,
                         wm_i)
    sur.append(sm(a))
    wm.append(wm_i)
  nulls = attack.protector_nulls(r, a, m_a)
  negatives = np.concatenate([m_a, a] + [nm(a) for nm in nulls.values()])
  blank = watermarks.key_blank(d.image_size, d.channels)
  step = stage2.make_step(cfg, blank, blank, np.stack([pattern(cfg, k) for k in keys]),
                          key_cell=cfg.protect.keyed.cell, key_symmetry=symmetry(cfg))
  b2 = cfg.stage2.batch
  key_index = np.repeat(np.arange(len(keys), dtype=np.int32), len(a))
  batches = common.sampler({"surrogate": np.concatenate(sur), "watermarked": np.concatenate(wm),
                            "key_index": key_index}, b2, (cfg.seed, 31), r.mesh)
  neg_batches = common.sampler({"negative": negatives}, 2 * b2, (cfg.seed, 32), r.mesh)
  state = r.train("stage2", step, stage2.init_state(cfg, nets["extractor"]),
                  lambda s: {**batches(s), **neg_batches(s)}, cfg.stage2.steps)
  return state["extractor"]


def owner_key(r: common.Runner) -> np.ndarray:
  """The owner's key: drawn once, after training, and kept in the workdir so a resumed run
  writes the same kit. From the OS's entropy unless protect.keyed.key_seed >= 0 (studies)."""
  return common.owner_key(r, n_bits(r.cfg), int(r.cfg.protect.keyed.get("key_seed", -1)),
                          OWNER_KEY_FILE)


def make_reader(cfg):
  """Jitted (R's variables, images) -> readings [N, bits]."""
  extract = stage1.make_extract_fn(cfg)
  cell, sym = cfg.protect.keyed.cell, symmetry(cfg)
  return jax.jit(lambda v, x: watermarks.key_readings(extract(v, x), cell, sym))


def imitator_spec(cfg, arch: str, seed: int) -> ml_collections.ConfigDict:
  """The evaluation imitators: the attack's surrogate spec with another architecture."""
  spec = ml_collections.ConfigDict(cfg.attack.surrogate.to_dict())
  spec.update(arch=arch, seed=seed)
  return spec


def surrogate_spec(cfg, arch: str) -> ml_collections.ConfigDict:
  """The report's imitator of B' of architecture `arch`: seed 100 + its place in
  protect.keyed.surrogate_archs (100 for an architecture not listed there)."""
  archs = tuple(cfg.protect.keyed.surrogate_archs)
  return imitator_spec(cfg, arch, 100 + (archs.index(arch) if arch in archs else 0))


def suspect_groups(models: dict, val_a, wm_val, m_val, wm_other) -> dict:
  """The report's groups, name -> (role, images): B', the imitators' outputs on the held-out
  inputs, then the innocent ones (clean outputs, the inputs themselves, B' under another key,
  the null models' outputs). `models`: name -> (role, model)."""
  return {"watermarked": ("carries the key", wm_val),
          **{n: (role, m(val_a)) for n, (role, m) in models.items() if role != "innocent"},
          "clean M(A)": ("innocent", m_val), "inputs A": ("innocent", val_a),
          "another key": ("innocent", wm_other),
          **{n: (role, m(val_a)) for n, (role, m) in models.items() if role == "innocent"}}


def run(r: common.Runner, write_kit) -> tuple[dict, dict, np.ndarray, dict]:
  """The keyed method end to end; `write_kit(embedder, extractor, key)` writes the kit.
  Returns (report, example grid, the innocent groups' set p-values, the imitators' and null
  models' outputs on whole held-out photos for full_size.judge_suspects)."""
  cfg = r.cfg
  k = cfg.protect.keyed
  alpha = float(cfg.evaluate.alpha)
  splits = task.load_splits(cfg)
  m_protect, m_attack, m_val = task.outputs(r, [splits.protect, splits.attack, splits.val])

  nets = train_barrier(r, splits.protect.a, m_protect)
  nets["extractor"] = harden(r, nets, splits.attack.a, m_attack)
  key = owner_key(r)  # drawn after every stage that trains R
  embed = stage1.make_embed_fn(cfg, pattern(cfg, key))
  write_kit(nets["embedder"], nets["extractor"], key)

  wm_attack = common.predict(embed, nets["embedder"], m_attack)
  wm_val = common.predict(embed, nets["embedder"], m_val)
  other_key = secret_key.new_key(key.size, seed=cfg.seed + 7)  # someone else's key
  wm_other = common.predict(stage1.make_embed_fn(cfg, pattern(cfg, other_key)),
                            nets["embedder"], m_val)

  t = time.time()
  models = {}  # name -> (role, model): the imitators of B' and the innocent null models
  for arch in k.surrogate_archs:
    models[f"surrogate {arch}"] = ("imitates B'", attack.imitator(
        r, f"keyed_surrogate_{arch}", surrogate_spec(cfg, arch), splits.attack.a, wm_attack))
  for i, arch in enumerate(k.null_archs):
    models[f"null {arch}"] = ("innocent", attack.imitator(
        r, f"keyed_null_{arch}", imitator_spec(cfg, arch, 200 + i), splits.attack.a, m_attack))
  suspects = suspect_groups(models, splits.val.a, wm_val, m_val, wm_other)
  # The same models serving whole held-out photos, as a thief serves them (full_size.py).
  whole_a = full_size.suspect_inputs(cfg)
  whole = {} if whole_a is None else {n: (role, m(whole_a)) for n, (role, m) in models.items()}
  r.timing["imitators"] = round(time.time() - t, 2)

  reader = make_reader(cfg)
  groups = {}
  for name, (role, x) in suspects.items():
    v = secret_key.decide(common.predict(reader, nets["extractor"], x), key, alpha)
    groups[name] = {"role": role, **v.to_dict()}
  specs = tuple(cfg.evaluate.get("served", ()))
  if specs:  # every group again after JPEG, resizes, crops, blur and noise, in sets
    t = time.time()
    judge = served.keyed_judge(lambda x: common.predict(reader, nets["extractor"], x), key,
                               alpha)
    served_rep = served.study(judge, suspects, specs, int(cfg.evaluate.get("set_size", 16)),
                              cfg.seed)
    r.timing["served"] = round(time.time() - t, 2)
  psnr = float(np.mean(metrics.psnr(wm_val, m_val)))
  ssim = float(np.mean(metrics.ssim(wm_val, m_val)))
  innocent = {n: g for n, g in groups.items() if g["role"] == "innocent"}
  innocent_p = np.array([g["p_value"] for g in innocent.values()])
  rep = {
      "method": "keyed",
      "key": {"bits": int(key.size), "cell": int(k.cell), "symmetry": symmetry(cfg),
              "score_needed": secret_key.score_needed(key.size, alpha),
              "min_bits_needed": secret_key.bits_needed(key.size, alpha)},
      "alpha": alpha,
      "fidelity": {"psnr": psnr, "ssim": ssim},
      "groups": groups,
      # One kit is one draw of the key: the groups' p-values share it, so they are not
      # independent samples of the null (the bound holds over keys, for each group).
      "innocent": {"n_sets": len(innocent),
                   "sets_detected": [n for n, g in innocent.items() if g["detected"]],
                   "smallest_set_p_value": float(innocent_p.min()),
                   "n_images": int(sum(g["n_images"] for g in innocent.values())),
                   "images_detected_alone": int(round(sum(g["image_rate"] * g["n_images"]
                                                          for g in innocent.values())))},
      "n_val": int(cfg.data.n_val), "image_size": int(cfg.data.image_size),
      "channels": int(cfg.data.channels),
      "timing": dict(r.timing),
  }
  if specs:
    rep["served"] = served_rep
  rep["warnings"] = warnings(rep)
  for msg in rep["warnings"]:
    r.log(f"warning: {msg}")
  n = min(6, len(m_val))
  extract = stage1.make_extract_fn(cfg)
  grid = {"A": splits.val.a[:n], "B": m_val[:n], "B'": wm_val[:n],
          "|B'-B| x10": np.clip(10 * np.abs(wm_val[:n] - m_val[:n]), 0, 1),
          "key": np.repeat(pattern(cfg, key)[None], n, 0),
          "R(B')": np.clip(common.predict(extract, nets["extractor"], wm_val[:n]), 0, 1),
          "R(B)": np.clip(common.predict(extract, nets["extractor"], m_val[:n]), 0, 1)}
  return rep, grid, innocent_p, whole


STAGE1_REMEDY = ("stage 1 did not learn to embed; do not deploy it, and run again (new "
                 "workdir) with more --config.stage1.steps or another --config.seed")


def warnings(rep: dict, remedy: str = STAGE1_REMEDY) -> list[str]:
  """What makes this keyed kit unfit to deploy, read off its own report (empty when nothing
  does): protected outputs it cannot read (`remedy` says what to do), or an innocent set it
  claims."""
  out = []
  wm = rep["groups"]["watermarked"]
  if not wm["detected"]:
    out.append(f"this kit does not read its own protected outputs ({wm['matches']} of "
               f"{wm['n_bits']} bits of their set): {remedy}")
  claimed = rep["innocent"]["sets_detected"]
  if claimed:
    out.append(
        f"this kit claims innocent sets ({', '.join(claimed)}); the exact test allows this with "
        f"probability at most alpha = {rep['alpha']:g} per set, so it is most likely a bug or "
        "a group that saw the key's outputs: report it, and do not use this kit's verdicts")
  return out
