"""Deep barrier vs the traditional spread-spectrum baseline, and agnostic vs specific, under
post-processing attacks: the comparison table of docs/strategies.md.

  python benchmarks/compare_traditional.py --deep runs/qs_specific \
      --traditional runs/qs_traditional --out runs/compare.json

Each workdir is a finished `deepwm run` (its kit, config.json and checkpoints). For each
method the script rebuilds the held-out validation images, restores the task model and the
surrogates the run trained, applies every removal attack (deepwm_jax.zoo.removal) to each group of
outputs and verifies them with the run's own kit. A deep workdir run with
protect.strategy='specific' adds the absorbed model M' and its surrogates as a third method.
Nothing is trained here; the numbers are those of the runs' own models.
"""
import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

ATTACKS = ("none", "jpeg:90", "jpeg:50", "blur:0.5", "blur:1.0", "noise:0.02", "rescale:0.5",
           "crop:0.8")


def _restore(cfg, workdir, name, spec):
  """A finished model's predict function, or None (that group is left out, and said so)."""
  from deepwm_jax.train import imitation, loop
  like = imitation.init_state(spec, cfg, jax.random.PRNGKey(0), spec.steps)
  state = loop.finished_state(os.path.join(workdir, "checkpoints", name), spec.steps, like)
  if state is None:
    print(f"{workdir}: stage '{name}' is not finished: left out", file=sys.stderr)
    return None
  fn = imitation.make_predict_fn(spec, cfg)
  return lambda x: np.asarray(jnp.concatenate([fn(state["model"], jnp.asarray(x[i:i + 64]))
                                               for i in range(0, len(x), 64)]))


def method_outputs(workdir: str) -> dict:
  """{method name: {group: images}} for one finished run, plus its kit and fidelity."""
  import deepwm_jax
  from deepwm_jax.data import pairs as pairs_lib
  from deepwm_jax.stages import common, task
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  val = pairs_lib.make_pairs(cfg, "val", cfg.data.n_val, 3)
  m_val = task.outputs(common.Runner(cfg, workdir, log=lambda *_: None), [val])[0]
  trad = cfg.protect.method == "traditional"
  prefix = "traditional_" if trad else ""
  run = lambda name, spec: (lambda f: None if f is None else f(val.a))(
      _restore(cfg, workdir, name, spec))
  common = {"clean M(A)": m_val,
            "null (independent)": run("eval_null", cfg.evaluate.null)}
  out = {}
  name = "traditional (spread spectrum)" if trad else "deep, agnostic (H after M)"
  out[name] = {"protected outputs": kit.embed(m_val),
               "surrogate (stage-2 spec)": run(f"{prefix}surrogate", cfg.attack.surrogate),
               "surrogate (unseen spec)": run(f"{prefix}eval_surrogate", cfg.evaluate.surrogate),
               **common}
  if not trad and cfg.protect.strategy == "specific":
    from deepwm_jax.train import absorb
    fn, variables = absorb.deployed_model(cfg, workdir)
    out["deep, specific (M')"] = {
        "protected outputs": common.predict(fn, variables, val.a),
        "surrogate (stage-2 spec)": run("specific_surrogate-stage2-spec", cfg.attack.surrogate),
        "surrogate (unseen spec)": run("specific_surrogate-unseen-spec", cfg.evaluate.surrogate),
        **common}
  out = {n: {g: x for g, x in groups.items() if x is not None} for n, groups in out.items()}
  return {"kit": kit, "m_val": m_val, "b_val": val.b, "methods": out}


def evaluate(runs: list[str], attacks=ATTACKS, seed: int = 0, log=print) -> dict:
  from deepwm_jax import metrics
  from deepwm_jax.zoo import removal
  result = {"attacks": list(attacks), "methods": {}}
  for workdir in runs:
    m = method_outputs(workdir)
    kit = m["kit"]
    for name, groups in m["methods"].items():
      wm = groups["protected outputs"]
      entry = {
          "workdir": os.path.abspath(workdir),
          "fidelity_psnr_vs_M": float(np.mean(metrics.psnr(jnp.asarray(wm),
                                                           jnp.asarray(m["m_val"])))),
          "fidelity_ssim_vs_M": float(np.mean(metrics.ssim(jnp.asarray(wm),
                                                           jnp.asarray(m["m_val"])))),
          "task_psnr_vs_B": float(np.mean(metrics.psnr(jnp.asarray(wm), jnp.asarray(m["b_val"])))),
          "capacity": ("1 bit (zero-bit: one key's pattern present or not)"
                       if getattr(kit, "method", "deep") == "traditional"
                       else f"a {kit.image_size}x{kit.image_size}x{kit.channels} watermark image "
                            f"(the logo)"),
          "groups": {}}
      if name.startswith("deep, specific"):  # how close M' is to the barrier it absorbed
        hm = kit.embed(m["m_val"])
        entry["fidelity_psnr_vs_HM"] = float(np.mean(metrics.psnr(jnp.asarray(wm),
                                                                  jnp.asarray(hm))))
      for group, images in groups.items():
        rows = {}
        for spec in attacks:
          v = kit.verify(removal.apply(spec, images, seed))
          rows[spec] = {"success_rate": v.success_rate, "detected": v.detected,
                        "p_value": v.p_value}
        entry["groups"][group] = rows
        log(f"{name} / {group}: " + ", ".join(f"{s} {r['success_rate']:.2f}"
                                              for s, r in rows.items()))
      result["methods"][name] = entry
  return result


def markdown(result: dict) -> str:
  names = list(result["methods"])
  lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for key, label in (("fidelity_psnr_vs_M", "fidelity PSNR vs M(A) (dB)"),
                     ("fidelity_ssim_vs_M", "fidelity SSIM vs M(A)"),
                     ("fidelity_psnr_vs_HM", "PSNR of M'(A) vs H(M(A)) (dB)"),
                     ("task_psnr_vs_B", "task PSNR vs B (dB)"), ("capacity", "capacity")):
    cells = [result["methods"][n].get(key, "-") for n in names]
    lines.append(f"| {label} | " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c)
                                              for c in cells) + " |")
  out = ["\n".join(lines) + "\n"]
  groups = list(dict.fromkeys(g for n in names for g in result["methods"][n]["groups"]))
  for group in groups:
    out.append(f"**{group}**: success rate (per-image hits), D = detected by the verdict\n")
    t = ["| attack | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for spec in result["attacks"]:
      cells = []
      for n in names:
        r = result["methods"][n]["groups"].get(group, {}).get(spec)
        if r is None:  # that model was not trained (finished) in this run
          cells.append("not run")
          continue
        cells.append(f"{100 * r['success_rate']:.0f}%" + (" D" if r["detected"] else ""))
      t.append(f"| {spec} | " + " | ".join(cells) + " |")
    out.append("\n".join(t) + "\n")
  return "\n".join(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--deep", required=True, help="workdir of a finished deep run")
  p.add_argument("--traditional", required=True, help="workdir of a finished traditional run")
  p.add_argument("--out", help="write the numbers as JSON here")
  p.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated removal specs")
  args = p.parse_args(argv)
  result = evaluate([args.deep, args.traditional], args.attacks.split(","),
                    log=lambda m: print(m, file=sys.stderr, flush=True))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  print(markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
