"""`deepwm classify run` and `deepwm classify verify`: thin wrappers over the library.

verify's exit status follows `deepwm verify`: 0 watermark detected (with --user: that user's
copy confirmed), 1 not detected, 2 bad input.
"""
import json
import os

from deepwm_jax import cli_options as opts
from deepwm_jax import config as config_lib
from deepwm_jax.errors import DeepwmError


def add_parser(sub) -> None:
  """The `classify` command group, added to the `deepwm` parser's subcommands."""
  cls = sub.add_parser("classify", help="classifier watermark: an additional class and "
                                        "fingerprinted key images per user (Sun et al.)")
  csub = cls.add_subparsers(dest="classify_command", metavar="COMMAND", required=True,
                            parser_class=opts.Parser)
  run = csub.add_parser("run", help="train every user's copy, the nulls, baselines and attacks; "
                                    "writes report and kit", epilog=opts.OVERRIDES_HELP)
  opts.add_config(run, what="classify config, e.g. classify_digits")
  run.add_argument("--workdir", required=True, metavar="DIR",
                   help="where checkpoints, models, report, kit go")
  ver = csub.add_parser("verify", help="query a model with every user's key images: is it "
                                       "watermarked, and whose copy is it (exit 0 detected, 1 not)")
  opts.add_kit(ver, what="the kit/ folder written by `deepwm classify run`")
  ver.add_argument("--model", required=True, metavar="DIR",
                   help="classifier checkpoint, e.g. WORKDIR/models/user0")
  ver.add_argument("--user", metavar="NAME",
                   help="check the claim that the model is this user's copy")
  opts.add_json(ver, "the verdict")


def main(args, overrides, log) -> int:
  if args.classify_command == "run":
    return run(args, overrides, log)
  return verify(args, overrides, log)


def run(args, overrides, log) -> int:
  from deepwm_jax.classify import config as classify_config
  from deepwm_jax.classify import pipeline
  cfg = config_lib.load(args.config)
  config_lib.apply_overrides(cfg, overrides)
  if "key_samples" not in cfg:
    raise DeepwmError(f"config '{args.config}' is not a classify config (no key_samples); use "
                      f"configs/classify_digits.py or build on deepwm_jax.classify.config")
  classify_config.validate(cfg)
  rep = pipeline.run(cfg, args.workdir, log=log)
  print(json.dumps({k: rep[k] for k in (
      "clean_accuracy", "unwatermarked_accuracy", "watermark_accuracy", "fingerprint_auth_rate",
      "leak_identified_rate", "false_claims", "n_clean_models")}))
  return 0


def verify(args, overrides, log) -> int:
  from deepwm_jax.classify import kit as kit_lib
  if overrides:
    raise DeepwmError(f"classify verify takes no --config.* overrides (got --config."
                      f"{overrides[0]}); the kit holds its own config")
  kit = kit_lib.load_kit(args.kit)
  v = kit.verify_checkpoint(args.model, args.user)
  for row in v["users"]:
    log(f"  {row['user']}: {row['hits']}/{row['n_keys']} key images in the watermark class, "
        f"p-value {row['p_value']:.3g}, fingerprint authenticated on "
        f"{row['fingerprint_auth_rate']:.0%} of the keys"
        f"{' -> detected' if row['detected'] else ''}")
  if args.user is not None:
    word = "CONFIRMED" if v["claim_confirmed"] else "not confirmed"
    print(f"copy of {args.user}: {word} (identified: {v['identified_user'] or 'nobody'})")
    ok = v["claim_confirmed"]
  else:
    who = v["identified_user"] or ("several users: " + ", ".join(v["detected_users"])
                                   if v["detected_users"] else "nobody")
    print(f"watermark {'DETECTED' if v['detected'] else 'not detected'}; copy of {who}")
    ok = v["detected"]
  opts.write_json(args.json, {**v, "kit": kit.path, "model": os.path.abspath(args.model)})
  return 0 if ok else 1
