"""`deepwm attack`: the CLI face of the zoo (deepwm_jax/cli.py only registers it)."""
import json


def add_parser(sub):
  p = sub.add_parser("attack", help="train a zoo of surrogate attackers against a kit and "
                                    "report which ones the watermark survives")
  p.add_argument("--kit", help="the kit/ folder written by `deepwm run`")
  p.add_argument("--config", required=True, help="zoo config, e.g. configs/zoo_quick.py")
  p.add_argument("--workdir", help="where checkpoints, results and the report go")
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
  p.add_argument("--json", help="--benchmark or --plan: also write the result to this file")


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
      from deepwm_jax.zoo import bench
      result = bench.from_config(zcfg, size, channels, log=log)
      print(json.dumps(result))
    else:
      from deepwm_jax.zoo import plan
      result = plan.plan(zcfg, size, channels, args.plan_steps, log=log)
      print(json.dumps(result))
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    return 0
  if not args.kit or not args.workdir:
    raise DeepwmError("deepwm attack needs --kit KIT and --workdir W (or --benchmark, or "
                      "--plan)")
  from deepwm_jax.zoo import run
  rep = run.run(zcfg, args.kit, args.workdir, log=log)
  print(json.dumps({"members": len(rep["members"]), "targets": rep["targets"],
                    "summary": rep["summary"]}))
  return 0
