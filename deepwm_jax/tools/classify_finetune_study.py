"""The fine-tuning study of docs/classify.md: does a fine-tuning term at embedding time keep the
mark through the attacker's high-rate fine-tuning?

A reduced digits run (2 users, 2 clean models, no baselines) is trained with the given
`train.key_margin` and `train.weight_noise`. Each user's copy is then fine-tuned on the
attacker's clean data with Adam at each rate, and evaluated after 100 and 300 steps, as in
the full run's attack table.

  python -m deepwm_jax.tools.classify_finetune_study --workdir runs/ft_study --margin 30 --noise 0.15

With --from-run RUN it trains nothing: every user's copy saved by a full run is fine-tuned at
the given rates and lengths, which may go beyond the run's own attack grid (give the run's
config overrides again):

  python -m deepwm_jax.tools.classify_finetune_study --workdir runs/ft_beyond --from-run runs/classify \
      --lrs 1e-2,3e-2 --lengths 100,300,1000

It prints one JSON line and appends it to WORKDIR/results.jsonl.
"""
import argparse
import json
import os
import re
import time

import numpy as np

from deepwm_jax import config as config_lib
from deepwm_jax.classify import attacks, data, keys, models, pipeline, train
from deepwm_jax.classify import kit as kit_lib

CONFIG = "classify_digits"  # the shipped config (deepwm_jax/configs/classify_digits.py)


def study(margin: float, noise: float, workdir: str, lrs=(3e-3, 1e-2), lengths=(100, 300),
          overrides=()) -> dict:
  cfg = config_lib.load(CONFIG)
  config_lib.apply_overrides(cfg, ["users=('user0','user1')", "null.n_calibration=1",
                                   "null.n_evaluation=1", "baselines.names=()",
                                   f"train.key_margin={margin}", f"train.weight_noise={noise}",
                                   *overrides])
  t0 = time.time()
  run = pipeline.Run(cfg, workdir, log=lambda *a: None)
  td = data.load(cfg)
  user_keys = {u: keys.user_keys(cfg, u) for u in cfg.users}
  trained = run.owner_models(td, user_keys, {})
  kx = {u: keys.to_float(k) for u, k in user_keys.items()}
  wm_class = cfg.data.num_classes
  pred = run.predictor

  def wm(params, user):
    return float(np.mean(pred.classes(params, kx[user]) == wm_class))

  def margin_median(params, user):
    z = pred.logits(params, kx[user])
    return float(np.median(z[:, wm_class] - z[:, :wm_class].max(1)))

  users = list(cfg.users)
  result = {"key_margin": margin, "weight_noise": noise, "overrides": list(overrides),
            "task_accuracy": {n: pred.accuracy(p, td.test.x, td.test.y)
                              for n, p in trained.items()},
            "watermark_accuracy": {u: wm(trained[f"user:{u}"], u) for u in users},
            "cross_accuracy": wm(trained[f"user:{users[0]}"], users[1]),
            "clean_model_watermark_accuracy": max(wm(trained["null_eval:0"], u) for u in users),
            "key_logit_margin_median": {u: margin_median(trained[f"user:{u}"], u)
                                        for u in users},
            "finetune": finetune_grid(run, td, {u: trained[f"user:{u}"] for u in users}, kx,
                                      lrs, lengths)}
  result["owner_seconds"] = run.timing.get("owner")
  result["seconds"] = round(time.time() - t0, 1)
  return result


def finetune_grid(run, td, copies: dict, kx: dict, lrs, lengths, batch: int = 0) -> list[dict]:
  """Fine-tunes every user's copy with Adam at every rate on the attacker's clean data, and
  measures task and watermark accuracy after each length (one stacked run)."""
  cfg, pred, wm_class = run.cfg, run.predictor, run.cfg.data.num_classes
  names = [(u, lr) for u in copies for lr in lrs]
  opt = attacks.finetune_optimizer()
  step = train.make_step(run.net, opt)
  sampler = train.Sampler(td.attack.x, td.attack.y, batch or cfg.attacks.finetune.batch,
                          len(names), 0, run.num_outputs, (cfg.seed, 3))
  state = train.init_state(models.stack([copies[u] for u, _ in names]), opt,
                           [lr for _, lr in names])
  rows = []
  for s in range(max(lengths)):
    state, _ = step(state, sampler(s), None)
    if s + 1 in lengths:
      for i, (u, lr) in enumerate(names):
        p = models.member(state["params"], i)
        rows.append({"user": u, "lr": lr, "steps": s + 1,
                     "task_accuracy": pred.accuracy(p, td.test.x, td.test.y),
                     "watermark_accuracy": float(np.mean(pred.classes(p, kx[u]) == wm_class))})
  return rows


def from_run(run_dir: str, lrs, lengths, overrides=()) -> dict:
  """Every user's copy saved by a full `deepwm classify run` in run_dir (its config given again
  by `overrides` on configs/classify_digits.py), fine-tuned beyond the run's attack grid."""
  cfg = config_lib.load(CONFIG)
  config_lib.apply_overrides(cfg, list(overrides))
  t0 = time.time()
  run = pipeline.Run(cfg, os.path.join(run_dir, "beyond"), log=lambda *a: None)
  td = data.load(cfg)
  copies = {u: kit_lib.load_model(os.path.join(run_dir, "models", u), cfg) for u in cfg.users}
  kx = {u: keys.to_float(keys.user_keys(cfg, u)) for u in cfg.users}
  return {"run": os.path.abspath(run_dir), "overrides": list(overrides),
          "finetune": finetune_grid(run, td, copies, kx, lrs, lengths),
          "seconds": round(time.time() - t0, 1)}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--margin", type=float, default=0.0, help="train.key_margin")
  ap.add_argument("--noise", type=float, default=0.0, help="train.weight_noise")
  ap.add_argument("--lrs", default="3e-3,1e-2", help="the attacker's Adam rates, comma-separated")
  ap.add_argument("--lengths", default="100,300", help="steps after which to measure")
  ap.add_argument("--from-run", default="",
                  help="attack every user's saved copy of this full run instead of training "
                       "a reduced one (give the run's config overrides)")
  ap.add_argument("overrides", nargs="*", help="further config overrides a.b=value")
  args = ap.parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  lrs = tuple(float(v) for v in args.lrs.split(","))
  lengths = tuple(int(v) for v in args.lengths.split(","))
  if args.from_run:
    res = from_run(args.from_run, lrs, lengths, args.overrides)
  else:
    tag = f"m{args.margin:g}_n{args.noise:g}"
    if args.overrides:   # a workdir per variant: the owner's checkpoints would be resumed
      tag += "_" + "_".join(re.sub(r"[^A-Za-z0-9.=-]+", "", o.replace("train.", ""))
                            for o in args.overrides)
    res = study(args.margin, args.noise, os.path.join(args.workdir, tag), lrs=lrs,
                lengths=lengths, overrides=args.overrides)
  line = json.dumps(res)
  print(line)
  with open(os.path.join(args.workdir, "results.jsonl"), "a") as f:
    f.write(line + "\n")


if __name__ == "__main__":
  main()
