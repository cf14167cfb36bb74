"""`deepwm attack`: the CLI face of the zoo (deepwm_jax/cli.py only registers it)."""
import json

from deepwm_jax import cli_options as opts


def add_parser(sub):
  p = sub.add_parser("attack", help="train a zoo of surrogate attackers against a kit and "
                                    "report which ones the watermark survives",
                     epilog=opts.OVERRIDES_HELP)
  opts.add_kit(p, required=False, what="the kit/ folder written by `deepwm run` (needed to "
                                       "train the zoo)")
  opts.add_config(p, what="zoo config, e.g. zoo_quick or configs/zoo_quick.py")
  p.add_argument("--workdir", metavar="DIR", help="where checkpoints, results and the report go")
  p.add_argument("--benchmark", action="store_true",
                 help="only measure member-steps/s of a vmapped group vs sequential training "
                      "(config.bench); --kit, if given, sets the image size")
  p.add_argument("--plan", action="store_true",
                 help="only list the groups the config would train (members, parameters); "
                      "with --plan-steps, also each group's step memory and time on this "
                      "machine and a training-time estimate. --kit, if given, sets the size")
  p.add_argument("--plan-steps", type=int, default=None, metavar="N",
                 help="--plan, and compile every group's step for its memory on this machine; "
                      "N >= 1 also times N steps of each and estimates the training time")
  opts.add_json(p, "the --benchmark or --plan result")


def main(args, overrides, log=print) -> int:
  from deepwm_jax.errors import DeepwmError
  from deepwm_jax.zoo import config as zoo_config
  zcfg = zoo_config.load(args.config, overrides)
  if args.plan_steps is not None and args.plan_steps < 0:
    raise DeepwmError(f"--plan-steps must be >= 0, got {args.plan_steps}")
  if args.benchmark or args.plan or args.plan_steps is not None:
    size = channels = None
    if args.kit:
      import deepwm_jax
      kit = deepwm_jax.load_kit(args.kit)
      size, channels = kit.image_size, kit.channels
    if args.benchmark:
      from deepwm_jax.tools import zoo_bench as bench
      result = bench.from_config(zcfg, size, channels, log=log)
    else:
      from deepwm_jax.zoo import plan
      result = plan.plan(zcfg, size, channels, args.plan_steps, log=log)
    print(json.dumps(result))
    if args.json != "-":
      opts.write_json(args.json, result)
    return 0
  if not args.kit or not args.workdir:
    raise DeepwmError("deepwm attack needs --kit KIT and --workdir W (or --benchmark, or "
                      "--plan)")
  from deepwm_jax.zoo import run
  rep = run.run(zcfg, args.kit, args.workdir, log=log)
  print(json.dumps({"members": len(rep["members"]), "targets": rep["targets"],
                    "summary": rep["summary"]}))
  return 0
