"""`deepwm bench`: how fast the training steps run on this machine, and against PyTorch.

    deepwm bench [--only NAME] [--all] [--conv-impl auto|xla|xla,auto] [--reps 5]
                 [--image-size N --ngf N --extractor-channels N --batch N --channels N]
                 [--torch /path/to/python] [--json FILE]

Per case (the stage-1 step, a surrogate's imitation step, and a zoo step of K surrogates
vmapped together; at the quickstart config and at 64/128 px with the reference widths) it
prints and writes: compile seconds, steps/s, images/s, FLOPs per step (XLA's cost analysis of
the compiled step), this machine's float32 matmul peak measured in the same run, and the
fraction of it the step reaches.

`--conv-impl xla,auto` times both conv paths, and `--torch PYTHON` the same step in PyTorch
(benchmarks/torch_reference.py, run by that interpreter; PyTorch is not a dependency): all
variants of a case take turns step by step, in a fresh random order each repetition, and the
medians are compared. The machines this runs on are shared: compare ratios from one run, not
absolute seconds from different runs; each record carries the load average around it.
"""
import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import numpy as np

import deepwm_jax
from deepwm_jax.errors import DeepwmError

# The repository root (benchmarks/ holds the PyTorch reference): three levels above this file.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCH_SCRIPT = os.path.join(REPO, "benchmarks", "torch_reference.py")
REFERENCE_DILATIONS = (2, 2, 2, 2, 4, 4, 4, 4, 1)


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark: `kind` 'stage1' (H + R + D), 'surrogate' (one imitation step) or 'zoo'
  (`members` surrogates stepped together, vmapped); `base` 'quickstart' takes the networks of
  configs/quickstart.py, 'reference' the paper's architectures (grayscale, batch 8) at the
  widths given here."""
  name: str
  kind: str
  base: str
  image_size: int = 32
  channels: int = 3
  ngf: int = 16
  extractor_channels: int = 32
  batch: int = 16
  members: int = 1
  slow: bool = False  # only with --all or --only
  compute_dtype: str = "float32"  # config.compute_dtype of stage1 / surrogate cases
  distortions: str = ""  # stage1.distortions of a stage1 case (every example distorted)


ROBUST = ("none, jpeg:50:95, rescale:0.5:0.9, blur:0.3:1.2, noise:0:0.04, "
          "rescale:0.6:0.9+jpeg:60:90, shift:0:1")
CASES = (
    Case("stage1-quickstart", "stage1", "quickstart"),
    # The distortion layer's cost: every distortion simulated in the step, and the real JPEG
    # codec through a host callback.
    Case("stage1-distorted", "stage1", "quickstart", distortions=ROBUST),
    Case("stage1-jpeg-codec", "stage1", "quickstart", distortions="jpeg_codec:50:95"),
    Case("surrogate-quickstart", "surrogate", "quickstart"),
    Case("zoo-quickstart", "zoo", "quickstart", members=4),
    Case("stage1-64", "stage1", "reference", 64, 1, 16, 32, 8),
    Case("surrogate-64", "surrogate", "reference", 64, 1, 16, 32, 8),
    Case("zoo-64", "zoo", "reference", 64, 1, 16, 32, 8, members=4),
    Case("stage1-128", "stage1", "reference", 128, 1, 16, 32, 8, slow=True),
    Case("stage1-64-ref", "stage1", "reference", 64, 1, 64, 128, 8, slow=True),
    Case("stage1-128-ref", "stage1", "reference", 128, 1, 64, 128, 8, slow=True),
    Case("surrogate-128-ref", "surrogate", "reference", 128, 1, 64, 32, 8, slow=True),
    # A kit on one large image (tools/kit_bench.py): megapixels per second.
    Case("embed-512", "embed", "quickstart", 512),
    Case("verify-512", "verify", "quickstart", 512),
    Case("embed-2048", "embed", "quickstart", 2048),
    Case("verify-2048", "verify", "quickstart", 2048),
)
KIT_KINDS = ("embed", "verify")
OVERRIDES = ("image_size", "channels", "ngf", "extractor_channels", "batch", "members")


def add_arguments(p):
  p.add_argument("--only", default=None,
                 help="run the cases whose name contains this (e.g. stage1-64)")
  p.add_argument("--all", action="store_true", help="also the slow 128 px / reference cases")
  p.add_argument("--list", action="store_true", help="list the cases and exit")
  p.add_argument("--conv-impl", default="auto",
                 help="conv impl(s) to time, comma-separated: auto, xla or xla,auto")
  p.add_argument("--reps", type=int, default=5, help="timed steps per variant (median)")
  p.add_argument("--image-size", type=int, help="image side of every case (default: the case's)")
  p.add_argument("--channels", type=int, help="image channels of every case (1 or 3)")
  p.add_argument("--ngf", type=int, help="embedder width (stage1) or surrogate width")
  p.add_argument("--extractor-channels", type=int, help="extractor width of the stage-1 cases")
  p.add_argument("--batch", type=int, help="batch of every case")
  p.add_argument("--members", type=int, help="surrogates in a zoo step")
  p.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"),
                 help="config.compute_dtype of every case (bfloat16 is for accelerators)")
  p.add_argument("--torch", default=None, metavar="PYTHON",
                 help="a Python with torch installed: also time PyTorch, interleaved")
  p.add_argument("--torch-threads", type=int, default=None,
                 help="PyTorch intra-op threads (default: the CPU count)")
  p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                 help="also write the records (a list) as JSON to FILE, after every case ('-' "
                      "or no FILE: standard output, at the end)")
  p.add_argument("--scaling", default=None, metavar="COUNTS",
                 help="also time the stage-1 cases data-parallel on these device counts, e.g. "
                      "1,2,4 (tools/parallel_bench.py; forced CPU devices on a CPU)")
  p.add_argument("--kit", default=None, metavar="PATH",
                 help="the kit the embed/verify cases time (default: a kit of the default "
                      "config's networks at their initial weights; speed does not depend on "
                      "training)")
  p.add_argument("--peak-size", type=int, default=2048,
                 help="side of the square matmul that measures the peak (tests use a small one)")
  return p


def select_cases(args):
  cases = [c for c in CASES if (args.only in c.name if args.only else args.all or not c.slow)]
  dtype = getattr(args, "compute_dtype", "float32")
  if not cases:
    raise DeepwmError(f"no bench case matches --only {args.only!r}; cases: "
                      + ", ".join(c.name for c in CASES))
  changes = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
  for k, v in changes.items():
    if v < 1:
      raise DeepwmError(f"--{k.replace('_', '-')} {v}: use a positive number")
  return [dataclasses.replace(c, compute_dtype=dtype, **changes) for c in cases]


# ---------------------------------------------------------------------------------------------
# The cases as configs, JAX steps and PyTorch descriptions

def case_config(case, conv_impl):
  """The config a case runs: the quickstart's, or the reference networks at the case's widths."""
  from deepwm_jax import config as config_lib
  if case.base == "quickstart":
    cfg = config_lib.load("quickstart")
  else:
    cfg = config_lib.base_config()
    cfg.embedder.update(num_downs=0, norm="batch", output="sigmoid")
    cfg.extractor.update(dilations=REFERENCE_DILATIONS, output="relu")
    cfg.discriminator.widths = (64, 128, 256, 512)
    for section in ("optimizer", "discriminator_optimizer"):
      cfg.stage1[section] = config_lib.optimizer(2e-4)  # the reference's plain Adam
    cfg.attack.surrogate.update(arch="unet", num_downs=0, output="residual",
                                optimizer=config_lib.optimizer(2e-4))
  cfg.conv_impl = conv_impl
  cfg.compute_dtype = case.compute_dtype
  cfg.data.update(image_size=case.image_size, channels=case.channels)
  cfg.embedder.ngf = case.ngf
  cfg.extractor.channels = case.extractor_channels
  cfg.stage1.batch = case.batch
  cfg.stage1.update(distortions=case.distortions, distortion_ramp=(0.0, 0.0))
  cfg.attack.surrogate.update(ngf=case.ngf, batch=case.batch)
  config_lib.validate(cfg)
  return cfg


def torch_case(case, cfg):
  """The same step described for benchmarks/torch_reference.py (None: no reference there)."""
  common = {"image_size": case.image_size, "channels": case.channels, "batch": case.batch}
  if case.kind == "stage1":
    e, r = cfg.embedder, cfg.extractor
    if e.norm != "batch" or case.distortions:
      return None
    return {**common, "kind": "stage1",
            "embedder": {"ngf": e.ngf, "num_downs": e.num_downs, "output": e.output,
                         "residual_scale": e.residual_scale},
            "extractor": {"channels": r.channels, "dilations": list(r.dilations),
                          "output": r.output},
            "disc_widths": list(cfg.discriminator.widths),
            "optimizer": dict(cfg.stage1.optimizer),
            "disc_optimizer": dict(cfg.stage1.discriminator_optimizer)}
  spec = cfg.attack.surrogate
  if spec.arch not in ("unet", "cnn") or spec.get("norm", "batch") != "batch":
    return None
  model = {k: (dict(v) if k == "optimizer" else v) for k, v in spec.items()}
  if case.kind == "zoo":
    model.update(loss="l2", optimizer={"lr": spec.optimizer.lr})  # as `_zoo_step`
  return {**common, "kind": "imitation", "members": case.members, "model": model}


def jax_step(case, cfg):
  """(jitted step, its arguments, parameter counts) of one case."""
  import jax
  from deepwm_jax import models
  from deepwm_jax.train import imitation, stage1

  rng = np.random.default_rng(0)
  shape = (case.batch, case.image_size, case.image_size, case.channels)
  key = jax.random.key(0)
  if case.kind == "stage1":
    w = (rng.random(shape[1:]) > 0.5).astype(np.float32)
    blank = np.ones(shape[1:], np.float32)
    state = stage1.init_state(cfg, key, w)
    batch = {"a": rng.random(shape, np.float32), "b": rng.random(shape, np.float32)}
    params = {k: models.count_params(state[k]) for k in ("embedder", "extractor", "discriminator")}
    return stage1.make_step(cfg, w, blank), (state, batch, key), params
  spec = cfg.attack.surrogate
  if case.kind == "surrogate":
    step = imitation.make_step(spec, cfg, spec.steps)
    state = imitation.init_state(spec, cfg, key, spec.steps)
    batch = {"x": rng.random(shape, np.float32), "y": rng.random(shape, np.float32)}
    return step, (state, batch, key), {"model": models.count_params(state["model"])}
  return _zoo_step(case, cfg, spec, rng, shape)


def _zoo_step(case, cfg, spec, rng, shape):
  """The zoo's own group step (deepwm_jax.zoo.train: K members stacked, jit(vmap(step))) on
  K copies of the case's surrogate, all with the L2 loss so PyTorch can run the same."""
  import dataclasses as dc
  import jax
  from deepwm_jax import models
  from deepwm_jax.models import layers
  from deepwm_jax.tools import zoo_bench
  from deepwm_jax.zoo import train as zoo_train
  arch = {k: spec[k] for k in ("arch", "ngf", "num_downs", "n_blocks", "depth", "norm",
                               "output", "residual_scale") if k in spec}
  setup = zoo_train.GroupSetup(arch_spec=arch, image_size=case.image_size,
                               channels=case.channels, steps=spec.steps, adversarial=False,
                               terms=("l2",), conv_impl=cfg.conv_impl,
                               compute_dtype=case.compute_dtype)
  members = [dc.replace(m, loss="l2")
             for m in zoo_bench._members(case.members, "bench", case.batch, spec.steps)]  # pylint: disable=protected-access
  state = zoo_train.init_group(setup, members, 0, zoo_train.make_mesh(1))
  zshape = (case.members,) + shape
  batch = {"x": rng.random(zshape, np.float32), "y": rng.random(zshape, np.float32)}
  step = jax.jit(zoo_train.make_group_step(setup, None, jit=False),
                 compiler_options=layers.cpu_compiler_options())
  first = jax.tree.map(lambda v: v[0], state["members"]["model"])
  return step, (state, batch), {"model": models.count_params(first)}


def compile_step(step, args):
  """(compiled step, compile seconds, FLOPs per step or None, where the FLOPs were counted).

  On the CPU the FLOPs are XLA's cost analysis of the compiled step. Elsewhere only that of
  the lowered, not yet optimised program is used: XLA:GPU's compiled analysis leaves out the
  convolutions it hands to cuDNN as custom calls (an H100 counted 0.25 GFLOP for the quickstart
  stage-1 step, whose program has 12.6), and a count that low would pass for a real one. On
  that H100 (jax 0.11.2) the lowered analysis gave no count either, so there the FLOPs and the
  fraction of peak are None; docs/performance.md has the CPU-counted FLOPs of the same steps.
  """
  import jax
  t0 = time.perf_counter()
  lowered = step.lower(*args)
  compiled = lowered.compile()
  seconds = time.perf_counter() - t0
  flops, source = _flops(compiled.cost_analysis()), "compiled"
  if jax.default_backend() != "cpu" or flops is None:
    flops, source = _flops(lowered.cost_analysis()), "lowered"
  return compiled, seconds, flops, source


def _flops(cost):
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def matmul_peak_flops(n=2048, reps=5):
  """This machine's float32 matmul rate in JAX (best of `reps` n^3 products)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, b))
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a, b))
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best


# ---------------------------------------------------------------------------------------------
# PyTorch on the side

class TorchReference:
  """benchmarks/torch_reference.py --serve in a subprocess: one JSON request / reply a line."""

  def __init__(self, python, threads):
    if not os.path.isfile(TORCH_SCRIPT):
      raise DeepwmError(f"{TORCH_SCRIPT} not found; --torch needs the repository's benchmarks/")
    cmd = [python, TORCH_SCRIPT, "--serve", "--threads", str(threads)]
    try:
      self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True)
    except OSError as e:
      raise DeepwmError(f"--torch {python}: cannot start it ({e}); give a Python that has "
                        "torch installed (benchmarks/README.md says how)") from None
    self.info = self.request({"cmd": "info"})

  def request(self, req):
    self.proc.stdin.write(json.dumps(req) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise DeepwmError("the PyTorch reference exited (is torch installed in the --torch "
                        "Python? see benchmarks/README.md)")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"PyTorch reference: {reply['error']}")
    return reply

  def close(self):
    try:
      self.request_quit()
    finally:
      self.proc.wait(timeout=30)

  def request_quit(self):
    if self.proc.poll() is None:
      self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
      self.proc.stdin.close()


# ---------------------------------------------------------------------------------------------
# Timing

def interleaved_medians(runners, reps, seed=0):
  """Median seconds of each runner() (one step each call), the runners taking turns in a fresh
  random order every repetition, so load from other processes hits all of them alike."""
  times = {name: [] for name in runners}
  order, rng = list(runners), random.Random(seed)
  for _ in range(reps):
    rng.shuffle(order)
    for name in order:
      times[name].append(runners[name]())
  return {name: statistics.median(t) for name, t in times.items()}


def _jax_runner(compiled, args):
  import jax

  def run():
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0
  return run


def bench_case(case, impls, reps, peak, torch_ref=None, log=print):
  """Records (one per conv impl) of one case, all variants timed in one interleaved loop."""
  import jax
  load_before = os.getloadavg()
  runners, records = {}, []
  for impl in impls:
    cfg = case_config(case, impl)
    step, args, params = jax_step(case, cfg)
    compiled, compile_s, flops, flops_source = compile_step(step, args)
    run = _jax_runner(compiled, args)
    run()  # warm-up
    runners[impl] = run
    records.append({
        "name": case.name, "kind": case.kind, "base": case.base, "conv_impl": impl,
        "image_size": case.image_size, "channels": case.channels, "ngf": case.ngf,
        "extractor_channels": case.extractor_channels if case.kind == "stage1" else None,
        "batch": case.batch, "members": case.members, "params": params,
        "compute_dtype": case.compute_dtype,
        "compile_s": compile_s, "flops": flops, "flops_source": flops_source,
        "peak_flops": peak,
        "backend": jax.default_backend(), "jax_version": jax.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", "")})
  same_dtype = case.compute_dtype == "float32"  # the PyTorch reference runs float32 only
  tcase = torch_case(case, case_config(case, impls[0])) if torch_ref and same_dtype else None
  torch_setup = None
  if tcase is not None:
    torch_setup = torch_ref.request({"cmd": "setup", "case": tcase})
    runners["torch"] = lambda: torch_ref.request({"cmd": "step"})["s"]
  secs = interleaved_medians(runners, reps)
  load_after = os.getloadavg()
  images = case.batch * case.members
  for rec in records:
    s = secs[rec["conv_impl"]]
    rec.update(s_per_step=s, steps_per_s=1 / s, images_per_s=images / s,
               fraction_of_peak=rec["flops"] / s / peak if rec["flops"] else None,
               reps=reps, load_avg_before=load_before, load_avg_after=load_after)
    if "xla" in secs:
      rec["speedup_vs_xla"] = secs["xla"] / s
    if torch_setup is not None:
      rec.update(torch_s_per_step=secs["torch"], torch_flops=torch_setup["flops"],
                 torch_params=torch_setup["params"], torch_version=torch_ref.info["torch_version"],
                 torch_threads=torch_ref.info["threads"],
                 torch_peak_flops=torch_ref.info["peak_flops"],
                 torch_fraction_of_peak=torch_setup["flops"] / secs["torch"]
                 / torch_ref.info["peak_flops"],
                 jax_vs_torch=secs["torch"] / s,
                 params_match=_same_counts(rec["params"], torch_setup["params"]))
    log(_line(rec))
  return records


def _same_counts(jax_params, torch_params):
  return {k: jax_params.get(k) for k in torch_params} == torch_params


def _line(r):
  frac = f"{r['fraction_of_peak']:5.1%}" if r["fraction_of_peak"] is not None else "   ? "
  gflop = f"{r['flops'] / 1e9:7.2f}" if r["flops"] else "      ?"
  dtype = "" if r.get("compute_dtype", "float32") == "float32" else " " + r["compute_dtype"]
  out = (f"{r['name']:<22} {r['conv_impl']:<5}{dtype} compile {r['compile_s']:5.1f} s  "
         f"{r['s_per_step']:8.4f} s/step  {r['steps_per_s']:7.2f} steps/s  "
         f"{r['images_per_s']:7.1f} img/s  {gflop} GFLOP  {frac} of peak")
  if "speedup_vs_xla" in r and r["conv_impl"] != "xla":
    out += f"  {r['speedup_vs_xla']:.2f}x xla"
  if "jax_vs_torch" in r:
    out += f"  | torch {r['torch_s_per_step']:.4f} s/step -> JAX/PyTorch {r['jax_vs_torch']:.2f}x"
    if not r["params_match"]:
      out += " (PARAMETER COUNTS DIFFER)"
  return out + f"  [load {r['load_avg_before'][0]:.1f}]"


def run(args, log=print):
  impls = [i.strip() for i in args.conv_impl.split(",") if i.strip()]
  bad = [i for i in impls if i not in ("xla", "auto")]
  if bad or not impls:
    raise DeepwmError(f"--conv-impl {args.conv_impl!r}: use auto, xla or xla,auto")
  if args.reps < 1:
    raise DeepwmError(f"--reps {args.reps}: use 1 or more")
  cases = select_cases(args)
  if args.list:
    for c in cases:
      log(f"{c.name:<22} {c.kind:<9} {c.base:<10} {c.image_size} px, {c.channels} ch, ngf "
          f"{c.ngf}, R {c.extractor_channels}, batch {c.batch}, members {c.members}")
    return []
  to_file = args.json not in (None, "-")
  if to_file and os.path.isdir(args.json):
    raise DeepwmError(f"--json {args.json} is a folder; give a file name")
  import jax
  peak = matmul_peak_flops(args.peak_size)
  log(f"backend {jax.default_backend()}, jax {jax.__version__}, {os.cpu_count()} CPUs, "
      f"matmul peak {peak / 1e9:.0f} GFLOP/s (float32), median of {args.reps} steps, "
      f"load {os.getloadavg()[0]:.1f}")
  torch_ref = None
  if args.torch:
    torch_ref = TorchReference(args.torch, args.torch_threads or os.cpu_count())
    log(f"PyTorch {torch_ref.info['torch_version']}, {torch_ref.info['threads']} threads, "
        f"matmul peak {torch_ref.info['peak_flops'] / 1e9:.0f} GFLOP/s")
  records, kit = [], None
  try:
    for case in cases:
      if case.kind in KIT_KINDS:
        from deepwm_jax.tools import kit_bench
        if kit is None:
          kit = (deepwm_jax.load_kit(args.kit) if args.kit
                 else kit_bench.untrained_kit(conv_impl=impls[0]))
        records.append(kit_bench.bench(case, kit, args.reps, log))
      else:
        records += bench_case(case, impls, args.reps, peak, torch_ref, log)
      if to_file:  # after every case, so an interrupted long run keeps what it measured
        _write_json(args.json, records)
    if args.scaling:
      from deepwm_jax.tools import parallel_bench
      counts = parallel_bench.parse_counts(args.scaling)
      for case in [c for c in cases if c.kind == "stage1"]:
        log(f"{case.name}: data-parallel scaling over {counts} devices")
        records += [{"case": case.name, "kind": "scaling", **r} for r in
                    parallel_bench.scaling(case_config(case, impls[0]), counts, args.reps, log)]
      if to_file:
        _write_json(args.json, records)
  finally:
    if torch_ref is not None:
      torch_ref.close()
  if args.json == "-":
    print(json.dumps(records, indent=1))
  return records


def _write_json(path, records):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(records, f, indent=1)
  os.replace(tmp, path)


def main(argv=None):
  p = add_arguments(argparse.ArgumentParser(prog="deepwm bench",
                                            description=__doc__.splitlines()[0]))
  try:
    run(p.parse_args(argv))
  except DeepwmError as e:
    print(f"deepwm bench: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
