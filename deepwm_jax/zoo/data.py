"""What the attacker sees: (A, B') pairs from the protected API, on data the protector's
stage 1 never trained on, and the held-out inputs the zoo is judged on.

The kit holds H and R but not the task model M. M is taken, in this order, from
  1. the protector's run folder (`protector_workdir`, by default the folder that holds the
     kit: `deepwm run` writes W/kit next to W/checkpoints/task), read only;
  2. otherwise it is retrained from the kit's config into the zoo's own workdir. Its seeds
     and data are in the config, so this gives the protector's M up to floating-point
     reduction order (a stand-in for "query the owner's API", which a real attacker does).
A task model that is not trained (task.source 'identity' or 'python:...') is rebuilt from
the config directly.

What the protected API returns (`protected_mode`): the kit's embedding of M(A) (H(M(A)) for a
deep kit, the DCT spread-spectrum watermark for a traditional kit), or, for the model-specific
strategy, M'(A) from the absorbed model in the protector's run folder.
"""
import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from deepwm_jax.data import degrade, pairs as pairs_lib, synthetic
from deepwm_jax.data import watermarks
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import absorb, common, full_size, task
from deepwm_jax.train import imitation, loop, stage1


@dataclasses.dataclass
class AttackData:
  a: np.ndarray          # attacker's inputs A
  wm: np.ndarray         # B' = H(M(A)): what the protected API returns
  clean: np.ndarray      # M(A): outputs without the watermark (null members train on these)
  eval_a: np.ndarray     # held-out inputs the members are judged on
  eval_clean: np.ndarray # M on them
  eval_wm: np.ndarray    # the protected model's outputs on them (task_psnr reference)
  overwrite: np.ndarray | None = None   # B' re-watermarked by the attacker's own embedder
  protected: str = "kit" # how wm/eval_wm were made (protected_mode)
  # Held-out photos' inputs whole (one square each, full_size.suspect_inputs): what the members
  # serve when a thief serves whole images; None when a photo is smaller than the crop.
  whole_a: np.ndarray | None = None
  truth: np.ndarray | None = None  # the attack crops' clean targets B (truth members train on)
  # M on whole_a: what a filter kit reads the members' whole photos against (else None).
  whole_clean: np.ndarray | None = None


def task_model_variables(kit_cfg, protector_workdir: str, workdir: str, log=print):
  """M's variables (task.source 'train'): the protector's checkpoint, else retrained."""
  spec = kit_cfg.task
  like = imitation.init_state(spec, kit_cfg, jax.random.PRNGKey(0), spec.steps)
  for d in (protector_workdir, workdir):
    if not d:
      continue
    ckpt = os.path.join(d, "checkpoints", "task")
    state = loop.finished_state(ckpt, spec.steps, like)
    if state is not None:
      log(f"[zoo] task model M from {ckpt}")
      return state["model"]
  log("[zoo] no finished task model next to the kit: retraining M from the kit's config")
  d = kit_cfg.data
  protect = pairs_lib.make_pairs(kit_cfg, "protect", d.n_protect, 1)
  return common.Runner(kit_cfg, workdir, log).imitate("task", spec, protect.a, protect.b)


def task_outputs(kit_cfg, protector_workdir, workdir, inputs: list[np.ndarray], log=print):
  if kit_cfg.task.source != "train":
    pairs = [pairs_lib.Pairs(x, x) for x in inputs]
    return task.outputs(common.Runner(kit_cfg, workdir, log), pairs)
  variables = task_model_variables(kit_cfg, protector_workdir, workdir, log)
  fn = imitation.make_predict_fn(kit_cfg.task, kit_cfg)
  return [common.predict(fn, variables, x) for x in inputs]


MODES = ("auto", "kit", "specific")


def protected_mode(kit, zcfg) -> str:
  """'kit' or 'specific': how the protected API makes its outputs (zoo config `protected`)."""
  mode = zcfg.get("protected", "auto")
  if mode not in MODES:
    raise DeepwmError(f"zoo config protected='{mode}' is not one of {', '.join(MODES)}")
  strategy = kit.config.get("protect", {}).get("strategy", "agnostic")
  if mode == "auto":
    mode = "specific" if strategy == "specific" else "kit"
  if mode == "specific" and getattr(kit, "method", "deep") == "traditional":
    raise DeepwmError(f"kit '{kit.path}' is a traditional kit: there is no absorbed model M' "
                      f"behind it; use protected='kit'")
  return mode


def absorbed_model(kit_cfg, protector_workdir: str):
  """(predict_fn, variables) of M' in the protector's run folder.

  The step count M' was trained for is the run's own (its config.json): a kit written by the
  agnostic stages of the same run may carry an earlier absorb.steps.
  """
  cfg = ml_collections.ConfigDict(kit_cfg.to_dict())
  path = os.path.join(protector_workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      steps = json.load(f).get("protect", {}).get("absorb", {}).get("steps")
    if steps:
      cfg.protect.absorb.steps = int(steps)
  return absorb.deployed_model(cfg, protector_workdir)


QUERIES = ("attack", "deadleaves")


def queries(kit_cfg, zcfg, n: int) -> pairs_lib.Pairs:
  """The attacker's inputs A (and their clean B, which `truth` members learn): crops of the
  attack split, or synthetic dead-leaves images degraded as the task degrades its photos."""
  z = zcfg.data
  kind = z.get("queries", "attack")
  if kind not in QUERIES:
    raise DeepwmError(f"zoo config data.queries={kind!r} is not one of {', '.join(QUERIES)}")
  if kind == "attack":
    return pairs_lib.make_pairs(kit_cfg, "attack", n, z.seed_offset)
  d = kit_cfg.data
  b = synthetic.dead_leaves(n, d.image_size, d.channels, seed=zcfg.seed * 1000 + z.seed_offset)
  a = degrade.degrade(b, d.task, seed=zcfg.seed * 1000 + z.seed_offset + 1, strength=d.strength)
  return pairs_lib.Pairs(a, b)


def load(kit, zcfg, workdir: str, n_attack: int, need_overwrite: bool, log=print) -> AttackData:
  kit_cfg = kit.config
  z = zcfg.data
  attack = queries(kit_cfg, zcfg, n_attack)
  held = pairs_lib.make_pairs(kit_cfg, "val", z.n_eval, z.eval_seed_offset)
  protector = zcfg.protector_workdir or os.path.dirname(os.path.abspath(kit.path))
  whole_a = full_size.suspect_inputs(kit_cfg)
  # A filter kit reads the members' whole photos against M's: one pass of M for all three.
  with_whole = whole_a is not None and reads_reference(kit)
  m_attack, m_eval, *m_whole = task_outputs(
      kit_cfg, protector, workdir, [attack.a, held.a] + ([whole_a] if with_whole else []), log)
  mode = protected_mode(kit, zcfg)
  if mode == "specific":
    fn, variables = absorbed_model(kit_cfg, protector)
    log(f"[zoo] protected outputs: M'(A) from {os.path.join(protector, 'checkpoints', 'absorb')}")
    wm, eval_wm = common.predict(fn, variables, attack.a), common.predict(fn, variables,
                                                                              held.a)
  else:
    wm, eval_wm = kit.embed(m_attack), kit.embed(m_eval)
  out = AttackData(a=attack.a, wm=wm, clean=m_attack, eval_a=held.a, eval_clean=m_eval,
                   eval_wm=eval_wm, protected=mode, whole_a=whole_a, truth=attack.b,
                   whole_clean=m_whole[0] if m_whole else None)
  if need_overwrite:
    out.overwrite = overwrite(kit_cfg, zcfg, workdir, out.a, out.wm, log)
  return out


def reads_reference(kit) -> bool:
  """Whether the kit reads a suspect's outputs against the owner's (a filter kit)."""
  return bool(getattr(kit, "reads_reference", False))


def overwrite(kit_cfg, zcfg, workdir, a, wm, log=print) -> np.ndarray:
  """The overwriting attack: the attacker trains its own barrier (stage 1 of the same method,
  its own watermark) on its (A, B') pairs and returns H_attacker(B')."""
  o = zcfg.overwrite
  cfg = ml_collections.ConfigDict(kit_cfg.to_dict())
  cfg.watermark.spec = o.watermark
  cfg.embedder.ngf = o.embedder_ngf
  cfg.extractor.channels = o.extractor_channels
  cfg.stage1.steps = o.steps
  s, c = cfg.data.image_size, cfg.data.channels
  w, blank = watermarks.watermark_image(o.watermark, s, c), watermarks.blank_image(s, c)
  key = jax.random.PRNGKey(zcfg.seed * 104729 + 17)
  state = stage1.init_state(cfg, key, w)
  batches = common.sampler({"a": a, "b": wm}, cfg.stage1.batch, (zcfg.seed, 77))
  state = loop.run("overwrite_stage1", stage1.make_step(cfg, w, blank), state, batches, o.steps,
                   workdir, key, log_every=zcfg.log_every, ckpt_every=zcfg.ckpt_every, log=log)
  return common.predict(stage1.make_embed_fn(cfg, w), state["embedder"], wm)
