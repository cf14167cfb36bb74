"""The model-specific strategy: the barrier H absorbed into the task model (METHOD.md section 3).

After stages 1 and 2 (H and R trained as usual), the task network M is fine-tuned into M' so
that one network emits watermarked outputs directly and no separate embedder is deployed:

  L = s * [fidelity * MSE(M'(A), H(M(A))) + watermark * MSE(R(M'(A)), w) + task * MSE(M'(A), B)]

H, R and M are frozen; R is the kit's extractor (after stage 2), so the same kit verifies M'
and its surrogates. M' starts at M: M(A) is already ~40 dB from H(M(A)), so fidelity starts
high and the watermark term teaches M' the residual H adds. The fidelity term keeps that
residual H's (a pattern R was hardened to read through imitation) instead of any adversarial
perturbation that happens to excite R; the small task term keeps M' anchored to B.

`run` is the pipeline's extra stage: it trains M', trains the pipeline's stage-2 and unseen
surrogate specs on M' outputs, and adds `report["specific"]` (side by side in report.md).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from deepwm_jax import losses, metrics, models, report, verdict
from deepwm_jax.train import common, imitation, loop, stage1
from deepwm_jax.train.optim import make_optimizer

STAGE = "absorb"


def init_state(cfg, task_variables):
  opt = make_optimizer(cfg.protect.absorb.optimizer, cfg.protect.absorb.steps)
  return {"model": task_variables, "opt": opt.init(task_variables["params"]),
          "step": jnp.zeros((), jnp.int32), "lr_scale": jnp.ones((), jnp.float32)}


def make_step(cfg, extractor_variables, w_HxWxC):
  """One step on a batch {a: inputs A, target: H(M(A)), b: clean B}."""
  a_cfg = cfg.protect.absorb
  model = imitation.model_for(cfg.task, cfg)
  R = models.extractor(cfg)
  opt = make_optimizer(a_cfg.optimizer, a_cfg.steps)
  wt, s = a_cfg.weights, a_cfg.loss_scale
  w = jnp.asarray(w_HxWxC)

  def loss_fn(params, variables, ext_vars, batch):
    out, variables = common.apply(model, common.with_params(variables, params), batch["a"],
                                  train=True)
    r = R.apply(ext_vars, out)
    fid = losses.mse(out, batch["target"])
    wm = losses.mse(r, w)
    task = losses.mse(out, batch["b"])
    loss = s * (wt.fidelity * fid + wt.watermark * wm + wt.task * task)
    per_image = jnp.mean(jnp.square(out - batch["target"]), axis=(1, 2, 3))
    return loss, (variables, {"loss": loss, "fid_mse": fid, "wm_mse": wm, "task_mse": task,
                              "psnr": jnp.mean(losses.psnr_from_mse(per_image))})

  @common.jit_step
  def step(state, batch, key):
    del key
    variables = state["model"]
    # R's variables travel with the batch rather than as baked-in constants of the program.
    ext_vars = jax.lax.stop_gradient(batch["extractor"])
    grads, (variables, m) = jax.grad(loss_fn, has_aux=True)(
        variables["params"], variables, ext_vars, batch)
    params, opt_state = common.update(opt, grads, state["opt"], variables["params"],
                                      state["lr_scale"])
    return {**state, "model": common.with_params(variables, params), "opt": opt_state,
            "step": state["step"] + 1}, m

  return step


def train(r, task_variables, extractor_variables, w, a, target, b):
  """Fine-tunes M into M' (resumable stage 'absorb'); returns M' variables."""
  from deepwm_jax import pipeline  # the pipeline imports this module lazily: no cycle
  cfg = r.cfg
  a_cfg = cfg.protect.absorb
  state = init_state(cfg, task_variables)
  step = make_step(cfg, extractor_variables, w)
  data = pipeline.sampler({"a": a, "target": target, "b": b}, a_cfg.batch, (cfg.seed, 61))
  batches = lambda i: {**data(i), "extractor": extractor_variables}
  state = r._train(STAGE, step, state, batches, a_cfg.steps,
                   guard=loop.Guard(metric="psnr", drop=10.0, warmup=max(a_cfg.steps // 10, 1)))
  return state["model"]


def deployed_model(cfg, workdir: str):
  """(predict_fn, variables) of the finished M' in `workdir`: the one network to deploy."""
  from deepwm_jax.errors import DeepwmError
  model = imitation.model_for(cfg.task, cfg)
  s, c = cfg.data.image_size, cfg.data.channels
  like = init_state(cfg, models.init_variables(model, jax.random.PRNGKey(0),
                                               jnp.zeros((2, s, s, c), jnp.float32)))
  state = loop.finished_state(os.path.join(workdir, "checkpoints", STAGE),
                              cfg.protect.absorb.steps, like)
  if state is None:
    raise DeepwmError(f"no finished M' in '{workdir}'; run `deepwm run` with "
                      f"protect.strategy=specific there first")
  return imitation.make_predict_fn(cfg.task, cfg), state["model"]


def _psnr(x, y) -> float:
  return float(np.mean(metrics.psnr(jnp.asarray(x), jnp.asarray(y))))


def _ssim(x, y) -> float:
  return float(np.mean(metrics.ssim(jnp.asarray(x), jnp.asarray(y))))


def summarize(extractions, w, blank, calibration, ev) -> dict:
  """Success rate, NC, statistic and verdict of one group of extractions (report keys)."""
  rj = jnp.asarray(extractions)
  stats = np.asarray(verdict.watermark_statistic(rj, jnp.asarray(w), jnp.asarray(blank)))
  nc = np.asarray(metrics.nc(rj, jnp.asarray(w)))
  v = verdict.decide(stats, calibration, ev.alpha, min_success_rate=ev.min_success_rate)
  return {"success_rate": v.success_rate,
          "paper_success_rate": float(metrics.paper_success_rate(nc, ev.nc_threshold)),
          "nc_mean": float(np.mean(nc)), "stat_mean": float(np.mean(stats)),
          "stat_min": float(np.min(stats)), "p_value": v.p_value, "detected": v.detected,
          "n_images": int(len(stats))}


def run(r, rep: dict, calibration, *, protect, attack, val, m_protect, m_val, wm_val,
        emb_vars, ext_vars, w, blank) -> dict:
  """The specific strategy's extra stage and evaluation; returns `rep` with rep['specific']."""
  import time
  from deepwm_jax import pipeline
  cfg, ev = r.cfg, r.cfg.evaluate
  t0 = time.time()
  task_vars = r.imitate("task", cfg.task, protect.a, protect.b)  # finished: restored
  embed = stage1.make_embed_fn(cfg, w)
  targets = pipeline.predict(embed, emb_vars, m_protect)
  mp_vars = train(r, task_vars, ext_vars, w, protect.a, targets, protect.b)
  task_fn = imitation.make_predict_fn(cfg.task, cfg)
  mp_attack = pipeline.predict(task_fn, mp_vars, attack.a)   # what the attacker gets from M'
  mp_val = pipeline.predict(task_fn, mp_vars, val.a)

  # Surrogates trained on M' outputs: the pipeline's stage-2 spec and its unseen spec.
  specs = {"surrogate-stage2-spec": cfg.attack.surrogate, "surrogate-unseen-spec": ev.surrogate}
  outputs = {}
  for name, spec in specs.items():
    v = r.imitate(f"specific_{name}", spec, attack.a, mp_attack)
    outputs[name] = pipeline.predict(imitation.make_predict_fn(spec, cfg), v, val.a)

  extract = stage1.make_extract_fn(cfg)
  ex = lambda x: pipeline.predict(extract, ext_vars, x)
  # The kit's calibration is reused unchanged; check that M' outputs on the calibration
  # (attack) split clear it, so `deepwm verify` needs nothing new for M'.
  attack_stats = np.asarray(verdict.watermark_statistic(
      jnp.asarray(ex(mp_attack)), jnp.asarray(w), jnp.asarray(blank)))
  h_of_m_val = wm_val
  surrogates = []
  for name, spec in specs.items():
    y = outputs[name]
    s = summarize(ex(y), w, blank, calibration, ev)
    s.update(name=name, arch=spec.arch, loss=spec.loss, trained_on="M' outputs",
             task_psnr=_psnr(y, mp_val),
             residual_corr=pipeline.residual_corr(y, m_val, mp_val))
    surrogates.append(s)
  specific = {
      "task": {"psnr_M_vs_B": _psnr(m_val, val.b), "psnr_Mprime_vs_B": _psnr(mp_val, val.b),
               "psnr_HM_vs_B": _psnr(h_of_m_val, val.b)},
      "fidelity": {"psnr_Mprime_vs_HM": _psnr(mp_val, h_of_m_val),
                   "ssim_Mprime_vs_HM": _ssim(mp_val, h_of_m_val),
                   "psnr_Mprime_vs_M": _psnr(mp_val, m_val), "ssim_Mprime_vs_M": _ssim(mp_val, m_val)},
      "watermarked": summarize(ex(mp_val), w, blank, calibration, ev),
      "calibration_check": {"threshold": calibration.threshold,
                            "min_stat_Mprime_attack_split": float(np.min(attack_stats)),
                            "fraction_below": float(np.mean(attack_stats < calibration.threshold))},
      "surrogates": surrogates,
      "seconds": round(time.time() - t0, 2),
  }
  rep = {**rep, "specific": specific}
  # The self-check of what this strategy deploys (M'), also listed with the run's warnings.
  specific["warnings"] = pipeline.kit_warnings(cfg, rep)
  rep["warnings"] = list(rep.get("warnings", [])) + specific["warnings"]
  rep["timing"] = {**rep["timing"], "absorb": r.timing.get(STAGE),
                   "specific_total": specific["seconds"]}
  _write(r.workdir, rep)
  return rep


def comparison_rows(rep: dict) -> list[dict]:
  """Agnostic (H after M) and specific (M') side by side, from one report."""
  sp = rep["specific"]
  ag_sur = {e["name"]: e for e in rep["surrogates"]}
  sp_sur = {e["name"]: e for e in sp["surrogates"]}
  rows = [
      {"metric": "task PSNR vs B (dB)", "agnostic (H(M(A)))": sp["task"]["psnr_HM_vs_B"],
       "specific (M'(A))": sp["task"]["psnr_Mprime_vs_B"]},
      {"metric": "task PSNR of M vs B (dB)", "agnostic (H(M(A)))": sp["task"]["psnr_M_vs_B"],
       "specific (M'(A))": sp["task"]["psnr_M_vs_B"]},
      {"metric": "fidelity PSNR (dB): H(M(A)) vs M(A) | M'(A) vs H(M(A))",
       "agnostic (H(M(A)))": rep["fidelity"]["psnr"],
       "specific (M'(A))": sp["fidelity"]["psnr_Mprime_vs_HM"]},
      {"metric": "success rate on the protected outputs",
       "agnostic (H(M(A)))": rep["watermarked"]["success_rate"],
       "specific (M'(A))": sp["watermarked"]["success_rate"]},
  ]
  for ag_name, sp_name in (("surrogate-stage2", "surrogate-stage2-spec"),
                           ("surrogate-unseen", "surrogate-unseen-spec")):
    if ag_name in ag_sur and sp_name in sp_sur:
      a, s = ag_sur[ag_name], sp_sur[sp_name]
      rows.append({"metric": f"success rate: {ag_name} spec ({s['arch']}, {s['loss']})",
                   "agnostic (H(M(A)))": a["success_rate"],
                   "specific (M'(A))": s["success_rate"]})
      rows.append({"metric": f"residual corr: {ag_name} spec",
                   "agnostic (H(M(A)))": a.get("residual_corr"),
                   "specific (M'(A))": s.get("residual_corr")})
  return rows


def _write(workdir: str, rep: dict) -> None:
  """report.json with rep['specific'], and the side-by-side table appended to report.md."""
  import json
  rep_j = report.to_jsonable(rep)
  report.write_text_atomic(os.path.join(workdir, "report.json"),
                           json.dumps(rep_j, indent=2, allow_nan=False) + "\n")
  md_path = os.path.join(workdir, "report.md")
  md = open(md_path).read() if os.path.exists(md_path) else ""
  cols = ["metric", "agnostic (H(M(A)))", "specific (M'(A))"]
  section = ("\n## Model-specific strategy: H absorbed into M'\n\n"
             "M' is M fine-tuned to emit H(M(A)) itself (train/absorb.py); the same R and "
             "calibration verify it. Surrogates of the same specs as the agnostic ones, trained "
             "on M' outputs instead of H(M(A)).\n\n"
             + "".join(f"**Warning: {w}**\n\n" for w in rep_j["specific"].get("warnings", []))
             + report.markdown_table(comparison_rows(rep_j), cols))
  marker = "\n## Model-specific strategy"
  md = md.split(marker)[0] + section
  report.write_text_atomic(md_path, md)
