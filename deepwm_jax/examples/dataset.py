"""Protect a data set: watermark it with a kit, train a model on it, show the model carries it.

  python -m deepwm_jax.examples.dataset --kit runs/qs/kit --workdir runs/dataset_demo

1. The data set: clean photo crops B (the builtin photos' attack split, never seen by the kit).
2. The owner watermarks every image with the kit's embedder H and publishes PNGs (what
   `deepwm embed --kit KIT --input B_DIR --output PUBLISHED_DIR` does; 8-bit PNG included).
3. A third party reads the published PNGs, makes deraining pairs (rain(B'), B') and trains a
   model on them (the kit config's stage-2 surrogate spec); a control model is trained the
   same way on the unwatermarked images.
4. `kit.verify` on each model's outputs for held-out rainy inputs: the model trained on the
   published data set should be detected, the control must not be.

configs/protect_dataset.py is the other route: `deepwm run` with task.source='dataset' trains
a barrier for the data set and attacks it with the usual surrogates. Both are measured in
docs/strategies.md.
"""
import argparse
import json
import os
import sys

import ml_collections


def run(kit_path: str, workdir: str, n_train: int = 2048, n_test: int = 64,
        steps: int | None = None, log=print) -> dict:
  import deepwm_jax
  from deepwm_jax.data import pairs as pairs_lib
  from deepwm_jax.stages import common
  from deepwm_jax.data import degrade, imageio
  from deepwm_jax.train import imitation

  kit = deepwm_jax.load_kit(kit_path)
  cfg = ml_collections.ConfigDict(kit.config.to_dict())
  cfg.data.n_attack, cfg.data.n_val = n_train, n_test
  spec = ml_collections.ConfigDict(cfg.attack.surrogate.to_dict())
  if steps is not None:
    spec.steps = int(steps)
  os.makedirs(workdir, exist_ok=True)

  # 1-2: the data set and its published, watermarked copy (PNG files, as `deepwm embed`).
  clean = pairs_lib.make_pairs(cfg, "attack", n_train, 2).b
  names = [f"img{i:05d}.png" for i in range(len(clean))]
  published_dir = os.path.join(workdir, "published")
  if not os.path.isdir(published_dir):
    imageio.write_images(published_dir, kit.embed(clean), names)
  published, _ = imageio.read_image_dir(published_dir, kit.image_size, kit.channels)
  # 3: a third party's deraining model on the published set, and a control on the clean set.
  r = common.Runner(cfg, workdir, log)
  rain = lambda b, seed: degrade.degrade(b, "rain", seed=seed, strength=cfg.data.strength)
  models = {"trained on the watermarked data set": ("dataset_model", published),
            "control: trained on the clean data set": ("control_model", clean)}
  test = pairs_lib.make_pairs(cfg, "val", n_test, 3)
  predict_fn = imitation.make_predict_fn(spec, cfg)
  out = {"kit": os.path.abspath(kit_path), "n_train": int(n_train), "n_test": int(n_test),
         "arch": spec.arch, "loss": spec.loss, "steps": int(spec.steps),
         "fidelity_psnr_published_vs_clean": common.mean_psnr(published, clean), "models": {}}
  for label, (name, targets) in models.items():
    variables = r.imitate(name, spec, rain(targets, cfg.seed + 17), targets)
    y = common.predict(predict_fn, variables, test.a)
    v = kit.verify(y)
    out["models"][label] = {"detected": v.detected, "success_rate": v.success_rate,
                            "p_value": v.p_value, "stat_mean": v.stat_mean,
                            "task_psnr_vs_B": common.mean_psnr(y, test.b)}
    log(f"{label}: detected={v.detected} success rate {v.success_rate:.2f} "
        f"p-value {v.p_value:.3g}")
  with open(os.path.join(workdir, "dataset_report.json"), "w") as f:
    json.dump(out, f, indent=1)
  return out


def main(argv=None) -> int:
  from deepwm_jax.errors import DeepwmError
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--kit", required=True, help="kit/ written by `deepwm run`")
  p.add_argument("--workdir", required=True, help="where the published set and models go")
  p.add_argument("--n-train", type=int, default=2048)
  p.add_argument("--n-test", type=int, default=64)
  p.add_argument("--steps", type=int, help="training steps (default: the kit's surrogate spec)")
  args = p.parse_args(argv)
  try:
    out = run(args.kit, args.workdir, args.n_train, args.n_test, args.steps,
              log=lambda m: print(m, file=sys.stderr, flush=True))
  except DeepwmError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
