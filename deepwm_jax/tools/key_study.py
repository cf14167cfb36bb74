"""How much a keyed kit's imitators copy depends on the owner's key: for several keys drawn at
random, the run's networks embed the attack split's outputs with that key, one imitator of the
given architecture is trained on them (the same spec and seed as the report's imitator of that
architecture, so only the key changes), and its outputs on the held-out inputs are judged by
the exact test against that key.

  python -m deepwm_jax.tools.key_study --workdir RUN [--keys 8] [--arch resnet] [--steps N]

RUN is a finished keyed run (`deepwm run --config configs/keyed.py --workdir RUN`): its task
model and stage 1 are restored from their checkpoints, and each key's imitator is
checkpointed there too (stage `key_study_<arch>_<steps>_<i>`), so an interrupted study
resumes. `--steps` trains the imitators longer or shorter than the report's (attackers trained
longer copy more). Writes RUN/key_study_<arch>_<steps>.json: per key, the matching bits of the
imitator's set, its p-value and the share of its outputs read alone.
"""
import argparse
import json
import os
import sys
import time

import ml_collections

from deepwm_jax import report, secret_key
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import attack, common, keyed, task
from deepwm_jax.train import stage1

KEY_SEED = 2_000_003  # keys of the study: secret_key.new_key(bits, KEY_SEED + i)


def study(cfg, workdir: str, n_keys: int, arch: str, steps: int = 0, log=print) -> dict:
  """The study's record (also written to workdir/key_study_<arch>_<steps>.json); steps 0: the
  report's imitator steps (attack.surrogate.steps)."""
  method = cfg.get("protect", {}).get("method", "deep")
  if method != "keyed":
    raise DeepwmError(f"run '{workdir}' is not a keyed run (protect.method={method!r}); give "
                      "the workdir of a keyed run")
  if arch not in ("unet", "resnet", "cnn"):
    raise DeepwmError(f"--arch {arch!r}; use unet, resnet or cnn")
  r = common.Runner(cfg, workdir, log)
  splits = task.load_splits(cfg)
  m_protect, m_attack = task.outputs(r, [splits.protect, splits.attack])
  nets = keyed.train_barrier(r, splits.protect.a, m_protect)  # restored: the run finished it
  spec = keyed.surrogate_spec(cfg, arch)
  spec.steps = int(steps or spec.steps)
  reader = keyed.make_reader(cfg)
  rows = []
  for i in range(n_keys):
    key = secret_key.new_key(keyed.n_bits(cfg), seed=KEY_SEED + i)
    embed = stage1.make_embed_fn(cfg, keyed.pattern(cfg, key))
    sm = attack.imitator(r, f"key_study_{arch}_{spec.steps}_{i}", spec, splits.attack.a,
                         common.predict(embed, nets["embedder"], m_attack))
    v = secret_key.decide(common.predict(reader, nets["extractor"], sm(splits.val.a)), key,
                          float(cfg.evaluate.alpha))
    rows.append({"key": i, "matches": int(v.matches), "p_value": float(v.p_value),
                 "detected": bool(v.detected), "image_rate": float(v.image_rate)})
    log(f"key {i}: {arch} imitator {v.matches} of {key.size} bits, p {v.p_value:.2g}, "
        f"{100 * v.image_rate:.0f}% of its outputs alone")
  out = {"arch": arch, "steps": spec.steps, "n_keys": n_keys, "bits": int(keyed.n_bits(cfg)),
         "alpha": float(cfg.evaluate.alpha), "keys": rows,
         "sets_detected": int(sum(row["detected"] for row in rows))}
  report.write_text_atomic(os.path.join(workdir, f"key_study_{arch}_{spec.steps}.json"),
                           json.dumps(out, indent=1) + "\n")
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a finished keyed run")
  p.add_argument("--keys", type=int, default=8, help="how many random keys (default 8)")
  p.add_argument("--arch", default="resnet", help="imitator architecture: unet, resnet or cnn")
  p.add_argument("--steps", type=int, default=0,
                 help="imitator training steps (default: the report's, attack.surrogate.steps)")
  args = p.parse_args(argv)
  try:
    if args.keys < 1 or args.steps < 0:
      raise DeepwmError(f"--keys {args.keys} --steps {args.steps}; use 1 or more keys and 0 "
                        "(the report's) or more steps")
    path = os.path.join(args.workdir, "config.json")
    if not os.path.exists(path):
      raise DeepwmError(f"'{path}' not found; give the workdir of a finished `deepwm run`")
    with open(path) as f:
      cfg = ml_collections.ConfigDict(json.load(f))
    t = time.time()
    out = study(cfg, args.workdir, args.keys, args.arch, args.steps)
  except DeepwmError as e:
    print(f"key_study: error: {e}", file=sys.stderr)
    return 2
  print(f"{out['sets_detected']} of {args.keys} keys: the {args.arch} imitator "
        f"({out['steps']} steps) detected as a set ({time.time() - t:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
