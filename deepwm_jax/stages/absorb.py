"""The model-specific strategy: the barrier H absorbed into the task network M'.

After stages 1 and 2, M is fine-tuned into M' (the step: deepwm_jax/train/absorb.py), so that
one network emits the watermarked outputs and no separate embedder is deployed; the kit's R and
calibration verify it unchanged. Then the pipeline's stage-2 and unseen surrogate specs are
trained on M' outputs, and everything is judged on held-out images: `run` returns the
report's 'specific' section.
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from deepwm_jax import models, verdict
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import common, evaluate, task
from deepwm_jax.train import absorb as absorb_step
from deepwm_jax.train import imitation, loop, stage1

STAGE = absorb_step.STAGE


def train(r: common.Runner, task_variables, extractor_variables, w, a, target, b):
  """Fine-tunes M into M' (resumable stage 'absorb'); returns M' variables."""
  cfg = r.cfg
  a_cfg = cfg.protect.absorb
  state = absorb_step.init_state(cfg, task_variables)
  step = absorb_step.make_step(cfg, extractor_variables, w)
  data = common.sampler({"a": a, "target": target, "b": b}, a_cfg.batch, (cfg.seed, 61))
  batches = lambda i: {**data(i), "extractor": extractor_variables}
  state = r.train(STAGE, step, state, batches, a_cfg.steps,
                  guard=loop.Guard(metric="psnr", drop=10.0, warmup=max(a_cfg.steps // 10, 1)))
  return state["model"]


def deployed_model(cfg, workdir: str):
  """(predict_fn, variables) of the finished M' in `workdir`: the one network to deploy."""
  model = imitation.model_for(cfg.task, cfg)
  s, c = cfg.data.image_size, cfg.data.channels
  like = absorb_step.init_state(cfg, models.init_variables(model, jax.random.PRNGKey(0),
                                                           jnp.zeros((2, s, s, c), jnp.float32)))
  state = loop.finished_state(os.path.join(workdir, "checkpoints", STAGE),
                              cfg.protect.absorb.steps, like)
  if state is None:
    raise DeepwmError(f"no finished M' in '{workdir}'; run `deepwm run` with "
                      f"protect.strategy=specific there first")
  return imitation.make_predict_fn(cfg.task, cfg), state["model"]


def _summarize(extractions, wm, calibration, ev) -> dict:
  s = common.summarize(extractions, wm.w, wm.blank, calibration, ev)
  return {**common.public(s), "stat_min": float(np.min(s["_stats"]))}


def run(r: common.Runner, rep: dict, calibration, splits, m_protect, m_val, wm_val,
        barrier, extractor, wm) -> dict:
  """Trains M' and its surrogates, judges them; returns `rep` with rep['specific'] and M's
  self-check warnings appended to rep['warnings']."""
  cfg, ev = r.cfg, r.cfg.evaluate
  protect, attack, val = splits.protect, splits.attack, splits.val
  t0 = time.time()
  task_vars = task.train_model(r, protect)  # finished: restored
  targets = barrier.embed(m_protect)
  mp_vars = train(r, task_vars, extractor, wm.w, protect.a, targets, protect.b)
  task_fn = imitation.make_predict_fn(cfg.task, cfg)
  mp_attack = common.predict(task_fn, mp_vars, attack.a)   # what the attacker gets from M'
  mp_val = common.predict(task_fn, mp_vars, val.a)

  # Surrogates trained on M' outputs: the pipeline's stage-2 spec and its unseen spec.
  specs = {"surrogate-stage2-spec": cfg.attack.surrogate, "surrogate-unseen-spec": ev.surrogate}
  outputs = {}
  for name, spec in specs.items():
    v = r.imitate(f"specific_{name}", spec, attack.a, mp_attack)
    outputs[name] = common.predict(imitation.make_predict_fn(spec, cfg), v, val.a)

  extract = stage1.make_extract_fn(cfg)
  ex = lambda x: common.predict(extract, extractor, x)
  # The kit's calibration is reused unchanged; check that M' outputs on the calibration
  # (attack) split clear it, so `deepwm verify` needs nothing new for M'.
  attack_stats = np.asarray(verdict.watermark_statistic(
      jnp.asarray(ex(mp_attack)), jnp.asarray(wm.w), jnp.asarray(wm.blank)))
  surrogates = []
  for name, spec in specs.items():
    y = outputs[name]
    s = _summarize(ex(y), wm, calibration, ev)
    s.update(name=name, arch=spec.arch, loss=spec.loss, trained_on="M' outputs",
             task_psnr=common.mean_psnr(y, mp_val),
             residual_corr=common.residual_corr(y, m_val, mp_val))
    surrogates.append(s)
  psnr, ssim = common.mean_psnr, common.mean_ssim
  specific = {
      "task": {"psnr_M_vs_B": psnr(m_val, val.b), "psnr_Mprime_vs_B": psnr(mp_val, val.b),
               "psnr_HM_vs_B": psnr(wm_val, val.b)},
      "fidelity": {"psnr_Mprime_vs_HM": psnr(mp_val, wm_val),
                   "ssim_Mprime_vs_HM": ssim(mp_val, wm_val),
                   "psnr_Mprime_vs_M": psnr(mp_val, m_val), "ssim_Mprime_vs_M": ssim(mp_val, m_val)},
      "watermarked": _summarize(ex(mp_val), wm, calibration, ev),
      "calibration_check": {"threshold": calibration.threshold,
                            "min_stat_Mprime_attack_split": float(np.min(attack_stats)),
                            "fraction_below": float(np.mean(attack_stats < calibration.threshold))},
      "surrogates": surrogates,
      "seconds": round(time.time() - t0, 2),
  }
  rep = {**rep, "specific": specific}
  # The self-check of what this strategy deploys (M'), also listed with the run's warnings.
  specific["warnings"] = evaluate.kit_warnings(cfg, rep)
  rep["warnings"] = list(rep.get("warnings", [])) + specific["warnings"]
  rep["timing"] = {**rep["timing"], "absorb": r.timing.get(STAGE),
                   "specific_total": specific["seconds"]}
  return rep
