"""The `deepwm` command: thin wrappers over the library (a notebook needs none of this).

Exit status: 0 and 1 are verdicts (verify: 0 watermark detected, 1 not detected; every other
command: 0 done), 2 any error: a one-line message says what is wrong and what to do; an
unexpected error also names the log file that holds its traceback.
"""
import json
import os
import sys
import tempfile
import traceback

import deepwm_jax
from deepwm_jax import cli_options as opts
from deepwm_jax.errors import DeepwmError


def _parser():
  p = opts.Parser(prog="deepwm", description="Box-free model watermarks for image-processing "
                  "networks: protect a model, watermark images, verify a suspect, attack your "
                  "own protection.",
                  epilog="`deepwm COMMAND --help` describes a command's options. Exit status: "
                         "verify 0 detected / 1 not detected; 2 on any error.")
  p.add_argument("--version", action="version", version=f"deepwm_jax {deepwm_jax.__version__}")
  sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=opts.Parser)

  run = sub.add_parser("run", help="protect a model end to end; writes report and kit",
                       description="Trains the task model (or wraps yours), the watermark "
                                   "barrier and the attackers it is hardened against, "
                                   "calibrates the verdict and writes WORKDIR/report.md, "
                                   "report.json and the kit WORKDIR/kit. Re-running the same "
                                   "command resumes.", epilog=opts.OVERRIDES_HELP)
  opts.add_config(run)
  run.add_argument("--workdir", required=True, metavar="DIR",
                   help="where checkpoints, logs, the report and the kit go")

  protect = sub.add_parser(
      "protect", help="protect your own model on your own inputs; writes report and kit",
      description="`deepwm run` on the owner's data: the model is a Python callable "
                  "(--model python:module:function) fed crops of the images in --inputs, or "
                  "the outputs it gave for them, collected in --outputs (same file names). "
                  "Re-running the same command resumes.", epilog=opts.OVERRIDES_HELP)
  opts.add_config(protect, required=False, what="config to start from (default: keyed)")
  protect.add_argument("--inputs", required=True, metavar="DIR",
                       help="folder of the model's inputs (images of any sizes)")
  model = protect.add_mutually_exclusive_group(required=True)
  model.add_argument("--model", metavar="python:MODULE:FUNCTION",
                     help="the model: a function of NHWC float32 images in [0, 1]")
  model.add_argument("--outputs", metavar="DIR",
                     help="folder of the model's outputs for --inputs (same file names)")
  protect.add_argument("--workdir", required=True, metavar="DIR",
                       help="where checkpoints, logs, the report and the kit go")

  from deepwm_jax.tools import robustness
  robustness.add_arguments(sub.add_parser(
      "robustness", help="detection after JPEG, resizing, cropping, blur, noise and shifts "
                         "of protected and clean images (a table and a figure)",
      description=robustness.__doc__.split("\n\n")[2]))

  embed = sub.add_parser("embed", help="watermark every image of a folder with a kit's embedder")
  opts.add_kit(embed)
  embed.add_argument("--input", required=True, metavar="DIR", help="folder of PNG/JPEG images")
  embed.add_argument("--output", required=True, metavar="DIR",
                     help="folder for the watermarked PNGs (same file names)")
  embed.add_argument("--resize", action="store_true",
                     help="squash whole images to the kit's crop size (by default images of any "
                          "size at least the crop are read in overlapping windows)")
  embed.add_argument("--overwrite", action="store_true", help="replace existing output files")
  embed.add_argument("--psnr-floor", type=float, default=0.0, metavar="DB",
                     help="scale each image's watermark down, where stronger, until its PSNR "
                          "is DB (0, the default: as the kit embeds; e.g. 40; a weaker "
                          "watermark survives less JPEG)")

  verify = sub.add_parser("verify", help="decide whether a suspect model's outputs carry the "
                                         "watermark (exit 0 detected, 1 not detected)")
  opts.add_kit(verify)
  verify.add_argument("--input", required=True, metavar="DIR",
                      help="folder of the suspect model's output images")
  opts.add_json(verify, "the verdict")
  verify.add_argument("--resize", action="store_true",
                      help="squash whole images to the kit's crop size (by default images of any "
                           "size at least the crop are read in overlapping windows)")
  verify.add_argument("--alpha", type=float, metavar="RATE",
                      help="false-positive rate of the decision (default: the kit's, 1e-6)")
  verify.add_argument("--search", default="none", choices=("none", "shift", "scale"),
                      help="keyed kits: also read images shifted or cropped at any offset "
                           "('shift') or rescaled ('scale'); the p-value counts every "
                           "alignment tried, so it stays exact; filter kits with --references: "
                           "register each image onto its reference first ('shift') "
                           "(default none)")
  verify.add_argument("--references", metavar="DIR",
                      help="filter kits: the owner's outputs for the very inputs the suspect "
                           "was given (same file names as --input); the suspect's images are "
                           "read against them, far more strongly than alone")
  verify.add_argument("--message-evidence", action="store_true",
                      help="payload kits: also detect on a decoded message equal to the kit's "
                           "(Bonferroni; see docs/verdicts.md for why it is off by default)")

  info = sub.add_parser("kit-info", help="a kit's provenance: owner, time, version, config, "
                                         "SHA-256 manifest, calibration, payload")
  opts.add_kit(info, required=False)
  info.add_argument("kit_path", nargs="?", metavar="KIT", help="the kit, as --kit (older form)")
  opts.add_json(info, "the whole record")

  describe = sub.add_parser("describe", help="parameter counts of a config's or a kit's networks",
                            epilog=opts.OVERRIDES_HELP)
  g = describe.add_mutually_exclusive_group(required=True)
  opts.add_config(g, required=False)
  opts.add_kit(g, required=False)
  _classify_parser(sub)
  _attack_parser(sub)
  _bench_parser(sub)
  return p


def _bench_parser(sub):
  from deepwm_jax.tools import bench
  bench.add_arguments(sub.add_parser(
      "bench", help="steps/s, FLOPs and fraction of peak of the training steps (vs PyTorch "
                    "with --torch); docs/performance.md"))


def _attack_parser(sub):
  from deepwm_jax.zoo import commands
  commands.add_parser(sub)


def _classify_parser(sub):
  from deepwm_jax.classify import commands
  commands.add_parser(sub)


def _config(path, overrides):
  from deepwm_jax import config as config_lib
  cfg = config_lib.load(path)
  config_lib.apply_overrides(cfg, overrides)
  config_lib.validate(cfg)
  return cfg


def cmd_run(args, overrides):
  from deepwm_jax import pipeline
  cfg = _config(args.config, overrides)
  _print_summary(pipeline.run(cfg, args.workdir, log=opts.log))
  return 0


def cmd_protect(args, overrides):
  from deepwm_jax import owner, pipeline
  if args.model is not None and not args.model.startswith("python:"):
    raise DeepwmError(f"--model {args.model!r}: give python:module:function (or --outputs DIR)")
  cfg = owner.owner_config(args.model or args.outputs, args.inputs,
                           args.config or owner.DEFAULT_CONFIG, overrides)
  _print_summary(pipeline.run(cfg, args.workdir, log=opts.log))
  return 0


def _print_summary(rep):
  """The report's headline numbers as one JSON line."""
  if rep.get("method") in ("keyed", "filter"):  # a line per group: detected alone, set p-value
    print(json.dumps({"fidelity": rep["fidelity"]}
                     | {name: {k: g[k] for k in ("image_rate", "matches", "p_value", "detected")}
                        for name, g in rep["groups"].items()}, default=opts.jsonable))
    return
  print(json.dumps({k: rep[k] for k in ("fidelity", "watermarked", "clean")}
                   | {"surrogates": [{k: s[k] for k in ("name", "success_rate")}
                                     for s in rep["surrogates"]],
                      "null": [{k: s[k] for k in ("name", "success_rate")} for s in rep["null"]]},
                   default=opts.jsonable))


def _read(kit, args):
  """The input folder's images at their own sizes (a list), or resized to the kit's crop with
  --resize; images smaller than the crop are refused by the kit in one line."""
  from deepwm_jax.data import imageio
  if args.resize:
    images, names = imageio.read_image_dir(args.input, kit.image_size, kit.channels, True)
    opts.log(f"resized {len(names)} images to {kit.image_size}x{kit.image_size}")
    return images, names
  images, names = imageio.read_image_dir(args.input, None, kit.channels, stack=False)
  s = kit.image_size
  for img, name in zip(images, names):
    if min(img.shape[:2]) < s:
      raise DeepwmError(f"image '{name}' is {img.shape[1]}x{img.shape[0]} but the kit needs at "
                        f"least {s}x{s} (its training crop); upscale it or pass --resize")
  return images, names


def cmd_embed(args, overrides):
  import numpy as np
  from deepwm_jax import budget
  from deepwm_jax.data import imageio
  _no_overrides(overrides, "embed")
  budget.check_floor(args.psnr_floor)  # before the kit or any image is read
  kit = deepwm_jax.load_kit(args.kit)
  images, names = _read(kit, args)
  out = kit.embed(images)
  capped = budget.cap(list(images), list(out), args.psnr_floor)
  n_capped = sum(not np.array_equal(c, o) for c, o in zip(capped, out))
  imageio.write_images(args.output, capped, names, overwrite=args.overwrite)
  opts.log(f"watermarked {len(names)} images into {args.output}"
           + (f" ({n_capped} scaled down to {args.psnr_floor:g} dB)" if args.psnr_floor else ""))
  return 0


def cmd_verify(args, overrides):
  _no_overrides(overrides, "verify")
  kit = deepwm_jax.load_kit(args.kit)
  images, _ = _read(kit, args)
  if getattr(kit, "method", None) in ("keyed", "filter"):
    return _verify_keyed(kit, images, args)
  if args.references:
    raise DeepwmError("--references is for filter kits; this kit reads images on their own: "
                      "drop --references")
  if args.search != "none":
    raise DeepwmError("--search is for keyed kits (their key tiles with a known period); this "
                      "kit reads images as they are: drop --search")
  v = kit.verify(images, alpha=args.alpha,
                 **({"message_evidence": True} if args.message_evidence else {}))
  result = {**v.to_dict(), "kit": os.path.abspath(args.kit), "input": os.path.abspath(args.input)}
  word = "DETECTED" if v.detected else "not detected"
  # Images larger than the kit's crop are read in windows, each window one sample.
  unit = "images" if v.n_images == len(images) else f"windows of {len(images)} images"
  print(f"watermark {word}: {v.n_hits}/{v.n_images} {unit} over the threshold, "
        f"p-value {v.p_value:.3g} (alpha {v.alpha:g}); paper NC mean {v.nc_mean:.3f}")
  if v.p_by_kind and not v.detected:  # what an innocent-looking suspect resembles
    print("  against each kind of innocent alone: "
          + ", ".join(f"{k} {p:.3g}" for k, p in v.p_by_kind.items()))
  if v.payload is not None:
    b = v.payload
    message = (f"decoded {b['decode_message']}, "
               + (f"matches the kit (message p-value {b['decode_p_value']:.3g})"
                  if b["decode_matches"] else "NOT the kit's message")
               if b["decode_decoded"] else "not decoded")
    message += f"; decided by: {b.get('decided_by', 'none')}"
    print(f"payload: bit accuracy {100 * b['bit_accuracy_mean']:.1f}% over {b['n_images']} "
          f"images, bit p-value {b['p_value']:.3g}; message {message}")
  opts.write_json(args.json, result)
  return 0 if v.detected else 1


def _verify_keyed(kit, images, args) -> int:
  """A keyed kit's verdict: the exact test on its secret key (no calibration)."""
  if args.message_evidence:
    raise DeepwmError("--message-evidence is for payload kits; a keyed kit's verdict is the "
                      "exact test on its key")
  refs = {}
  if args.references:
    if kit.method != "filter":
      raise DeepwmError("--references is for filter kits; a keyed kit reads images on their "
                        "own: drop --references")
    refs = {"references": _references(kit, args)}
  v = kit.verify(images, alpha=args.alpha, search=args.search, **refs)
  word = "DETECTED" if v.detected else "not detected"
  print(f"watermark {word}: {v.matches}/{v.n_bits} key bits match over {v.n_images} images "
        f"(signed-rank score {v.score:.3f}), exact p-value {v.p_value:.3g} (alpha {v.alpha:g}); "
        f"images detected alone {round(v.image_rate * v.n_images)}/{v.n_images}")
  if v.alignment:
    a = v.alignment
    print(f"  best of {v.hypotheses} alignments (p-value multiplied by {v.hypotheses}): scale "
          f"{a['scale']:.3g}, grid offset {a['offset'][0]},{a['offset'][1]} px")
  opts.write_json(args.json, {**v.to_dict(), "kit": os.path.abspath(args.kit),
                              "input": os.path.abspath(args.input)})
  return 0 if v.detected else 1


def _references(kit, args) -> list:
  """The owner's outputs in --references, in the order of --input's names (the same names)."""
  from deepwm_jax.data import imageio
  _, names = imageio.read_image_dir(args.input, None, kit.channels, stack=False)
  refs, ref_names = imageio.read_image_dir(args.references, None, kit.channels, stack=False)
  by_name = dict(zip(ref_names, refs))
  missing = [n for n in names if n not in by_name]
  if missing:
    raise DeepwmError(f"--references {args.references} has no image named {missing[0]!r} "
                      f"({len(missing)} of {len(names)} missing); give the owner's output for "
                      f"every suspect image, under the same file name")
  return [by_name[n] for n in names]


def cmd_kit_info(args, overrides):
  from deepwm_jax import kit as kit_lib
  _no_overrides(overrides, "kit-info")
  if bool(args.kit) == bool(args.kit_path):
    raise DeepwmError("kit-info needs one kit: deepwm kit-info --kit KIT")
  rec = kit_lib.provenance(args.kit or args.kit_path)
  if args.json == "-":  # the record alone, for scripts
    opts.write_json("-", rec)
    return 0
  opts.write_json(args.json, rec)
  c = rec["config"]
  lines = [f"kit       {rec['path']} ({rec['kind'] or 'image'} kit, format {rec['format']})",
           f"owner     {rec['owner']}", f"created   {rec['created']}",
           f"version   deepwm_jax {rec['package_version']}",
           f"config    watermark {c['watermark']}, {c['data']['image_size']} px x "
           f"{c['data']['channels']} ch, task {c['data']['task']}, seed {c['seed']}, "
           f"sha256 {c['config_sha256'][:16]}...",
           f"decision  alpha {rec['alpha']}, min success rate {rec['min_success_rate']}"]
  cal = rec["calibration"]
  f = rec.get("filter")
  if f:
    lines[-2] = (f"config    keyed filter, {c['data']['image_size']} px crops x "
                 f"{c['data']['channels']} ch, task {c['data']['task']}, seed {c['seed']}, "
                 f"sha256 {c['config_sha256'][:16]}...")
    lines[-1] = f"decision  alpha {rec['alpha']}"
    lines.append(f"verdict   exact signed-rank test on a {f['bits']}-bit secret key (filter "
                 f"radius {f['radius']} px, gain {f['eps']:g}, each image held at "
                 f"{f['psnr_floor']:g} dB or weaker); no calibration")
  elif rec.get("keyed"):
    lines[-1] = f"decision  alpha {rec['alpha']}"
    lines.append(f"verdict   exact signed-rank test on a {rec['keyed']['bits']}-bit secret key "
                 f"({rec['keyed']['cell']} px cells, symmetry "
                 f"{rec['keyed'].get('symmetry', 'none')}); no calibration")
  elif not cal:
    lines.append("calib.    none (an older kit: verify refuses it)")
  else:
    lines.append(
        f"calib.    threshold {cal['threshold']:.4g}, p0 {cal['p0']:.3g} from "
        f"{cal['n_negatives']} negatives (max {cal['max_negative']:.3g})"
        + (f" and {cal['n_heldout']} held-out ones (max {cal['max_heldout']:.3g}), null "
           f"per source: {', '.join(cal.get('null_sources') or {}) or 'none'}"
           if cal.get("n_heldout") else ""))
  mn = rec.get("calibration_model_null")
  if mn:
    lines.append(f"model null {mn['n_models']} null models x {mn['n_images']} images "
                 f"(sets of up to {mn['n_images']} images are ranked among them, images over "
                 "the threshold first)")
  pay = rec.get("payload")
  if pay:
    bound = {True: ", owner binding verified", False: ", owner binding BROKEN",
             None: ""}[pay["owner_binding_ok"]]
    bc = pay.get("calibration") or {}
    lines.append(f"payload   {pay['bits']} bits '{pay['message']}' = {pay['data_hex']}, "
                 f"RS +{pay['ecc_bytes']} bytes, {pay['n_coded']} coded bits in "
                 f"{pay['cell']}px cells, key {pay['key']}{bound}")
    if bc:
      lines.append(f"bit cal.  threshold {bc['threshold']:.3g} confident bits, p0 {bc['p0']:.3g}")
  lines.append(f"manifest  {len(rec['manifest'])} files, SHA-256 checked:")
  lines += [f"  {digest}  {name}" for name, digest in sorted(rec["manifest"].items())]
  print("\n".join(lines))
  return 0


def cmd_describe(args, overrides):
  from deepwm_jax.tools import describe
  if args.kit:
    _no_overrides(overrides, "describe --kit")
    out = describe.describe_kit(args.kit)
  else:
    out = describe.describe_config(_config(args.config, overrides))
  print(json.dumps(out, indent=1))
  return 0


def _no_overrides(overrides, what):
  if overrides:
    raise DeepwmError(f"{what} takes no --config.* overrides (got --config.{overrides[0]}); "
                      f"the kit holds its own config")


def cmd_classify(args, overrides):
  from deepwm_jax.classify import commands
  return commands.main(args, overrides, log=opts.log)


def cmd_bench(args, overrides):
  from deepwm_jax.tools import bench
  _no_overrides(overrides, "bench")
  bench.run(args)
  return 0


def cmd_robustness(args, overrides):
  from deepwm_jax.tools import robustness
  _no_overrides(overrides, "robustness")
  return robustness.main(args, log=opts.log)


def cmd_attack(args, overrides):
  from deepwm_jax.zoo import commands
  return commands.main(args, overrides, log=opts.log)


COMMANDS = {"run": cmd_run, "protect": cmd_protect, "embed": cmd_embed, "verify": cmd_verify,
            "describe": cmd_describe, "kit-info": cmd_kit_info,
            "classify": cmd_classify, "attack": cmd_attack, "bench": cmd_bench,
            "robustness": cmd_robustness}


def main(argv=None) -> int:
  from deepwm_jax import config as config_lib
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_lib.split_overrides(argv)
  parser = _parser()
  command = "deepwm"
  try:
    args = parser.parse_args(rest)
    if args.command is None:  # a bare `deepwm`: what it can do, not an error
      parser.print_help()
      return 0
    command = f"deepwm {args.command}"
    _quiet_libraries()
    return COMMANDS[args.command](args, overrides)
  except opts.UsageError as e:
    print(e, file=sys.stderr)
    return 2
  except DeepwmError as e:
    print(f"{command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"{command}: interrupted (re-run the same command to resume)", file=sys.stderr)
    return 130
  except BrokenPipeError:
    # The reader (e.g. `| head`) left: stop quietly, as the Python docs recommend. The output
    # was not all delivered, so this is an error, not a verdict.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 2
  except Exception as e:  # a bug or an unforeseen failure: never a verdict, never a traceback
    log = _save_traceback(command)
    what = (str(e).splitlines() or [""])[0][:200]
    print(f"{command}: unexpected error ({type(e).__name__}: {what}); the traceback is in "
          f"{log}: please report it", file=sys.stderr)
    return 2


def _save_traceback(command: str) -> str:
  fd, path = tempfile.mkstemp(prefix="deepwm-error-", suffix=".log")
  with os.fdopen(fd, "w") as f:
    f.write(f"{command} (deepwm_jax {deepwm_jax.__version__})\n")
    traceback.print_exc(file=f)
  return path


def _quiet_libraries():
  import logging
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
  except ImportError:
    pass
  logging.getLogger("absl").setLevel(logging.ERROR)


if __name__ == "__main__":
  sys.exit(main())
