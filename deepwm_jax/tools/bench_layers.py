"""Per-layer micro-benchmark: forward + backward of every conv impl at the reference shapes.

    python -m deepwm_jax.tools.bench_layers [--batch 8] [--reps 7] [--json FILE] [--only NAME]

Prints, per layer shape, the median seconds of one jitted forward+backward (gradients wrt
input and kernel, as in training) for each impl, and its speed relative to 'xla' measured in
the same run (these machines are shared and noisy: compare ratios, not absolute seconds).
The column 'auto+opts' is 'auto' compiled with `layers.cpu_compiler_options()`.
"""
import argparse
import json
import os
import random
import statistics
import time

import jax

from deepwm_jax.models import layers

# (name, op, kernel, stride, padding, dilation, in_ch, out_ch, size): the layers the reference
# networks are made of. R runs its residual blocks at half the image size.
SHAPES = [
    ("conv3x3 64px 64ch", "conv", 3, 1, 1, 1, 64, 64, 64),
    ("conv3x3 128px 32ch", "conv", 3, 1, 1, 1, 32, 32, 128),
    ("conv3x3 32px 128ch", "conv", 3, 1, 1, 1, 128, 128, 32),
    ("conv3x3 s2 64px 64ch", "conv", 3, 2, 1, 1, 64, 64, 64),
    ("conv3x3 d2 32px 128ch", "conv", 3, 1, 2, 2, 128, 128, 32),
    ("conv3x3 d2 64px 128ch", "conv", 3, 1, 2, 2, 128, 128, 64),
    ("conv3x3 d4 64px 32ch", "conv", 3, 1, 4, 4, 32, 32, 64),
    ("conv3x3 d4 32px 128ch", "conv", 3, 1, 4, 4, 128, 128, 32),
    ("conv4x4 s2 64px 64>128", "conv", 4, 2, 1, 1, 64, 128, 64),
    ("conv4x4 s2 128px 16>32", "conv", 4, 2, 1, 1, 16, 32, 128),
    ("convT4x4 32>64px 128>64", "convT", 4, 2, 1, 1, 128, 64, 32),
    ("convT4x4 64>128px 32>16", "convT", 4, 2, 1, 1, 32, 16, 64),
    ("convT4x4 16>32px 256>128", "convT", 4, 2, 1, 1, 256, 128, 16),
    # The innermost U-Net levels (2x2 and 4x4 at every image size) and D's last convs.
    ("tiny conv3x3 2px 128>256", "conv", 3, 1, 1, 1, 128, 256, 2),
    ("tiny conv3x3 4px 128>256", "conv", 3, 1, 1, 1, 128, 256, 4),
    ("tiny conv3x3 8px 64>128", "conv", 3, 1, 1, 1, 64, 128, 8),
    ("tiny conv3x3 16px 32>64", "conv", 3, 1, 1, 1, 32, 64, 16),
    ("tiny conv4x4 s2 4px 64>128", "conv", 4, 2, 1, 1, 64, 128, 4),
    ("tiny conv4x4 s2 8px 32>64", "conv", 4, 2, 1, 1, 32, 64, 8),
    ("tiny conv3x3 s2 4px 64>128", "conv", 3, 2, 1, 1, 64, 128, 4),
    ("tiny conv3x3 s2 8px 32>64", "conv", 3, 2, 1, 1, 32, 64, 8),
    ("tiny convT4x4 2>4px 128>64", "convT", 4, 2, 1, 1, 128, 64, 2),
    ("tiny convT4x4 4>8px 128>32", "convT", 4, 2, 1, 1, 128, 32, 4),
    # first layers, on the RGB image (6 channels: image + condition), where 'auto' is im2col
    ("first conv3x3 32px 3>32", "conv", 3, 1, 1, 1, 3, 32, 32),
    ("first conv3x3 64px 3>32", "conv", 3, 1, 1, 1, 3, 32, 64),
    ("first conv3x3 128px 3>32", "conv", 3, 1, 1, 1, 3, 32, 128),
    ("first conv3x3 32px 6>16", "conv", 3, 1, 1, 1, 6, 16, 32),
    ("first conv4x4 s2 32px 3>16", "conv", 4, 2, 1, 1, 3, 16, 32),
    ("first conv4x4 s2 128px 3>64", "conv", 4, 2, 1, 1, 3, 64, 128),
]


def _forward(op, impl, stride, padding, dilation):
  def f(x, w):
    if op == "conv":
      return layers.conv2d(x, w, stride, padding, dilation, impl)
    return layers.conv_transpose2d(x, w, stride, padding, impl)
  return f


def _fwd_bwd(op, impl, stride, padding, dilation, compiler_options=None):
  """One training-like use of the layer: output and gradients wrt input and kernel."""
  f = _forward(op, impl, stride, padding, dilation)

  def step(x, w, probe):
    y, vjp = jax.vjp(f, x, w)
    return y, vjp(probe)
  return jax.jit(step, compiler_options=compiler_options)


def median_seconds(fns, args, reps):
  """Median wall time of each fn(*args) after compile and warm-up.

  The fns take turns, in a fresh random order each repetition, so a burst of load from another
  process on a shared machine (and any cost of going first or last) hits all of them alike and
  their ratios stay meaningful.
  """
  for fn in fns.values():
    jax.block_until_ready(fn(*args))  # compile
    jax.block_until_ready(fn(*args))  # warm-up
  times = {name: [] for name in fns}
  order, rng = list(fns), random.Random(0)
  for _ in range(reps):
    rng.shuffle(order)
    for name in order:
      fn = fns[name]
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}


def bench_shape(shape, batch, reps, impls=None):
  name, op, k, stride, padding, dilation, cin, cout, size = shape
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (batch, size, size, cin))
  w = jax.random.normal(keys[1], (k, k, cin, cout)) * 0.02
  all_impls = layers.CONV_IMPLS if op == "conv" else layers.CONV_TRANSPOSE_IMPLS
  impls = [i for i in (impls or all_impls) if i in all_impls and i != "auto"] + ["auto"]
  fns = {impl: _fwd_bwd(op, impl, stride, padding, dilation) for impl in impls}
  fns["auto+opts"] = _fwd_bwd(op, "auto", stride, padding, dilation,
                              layers.cpu_compiler_options())
  y_shape = jax.eval_shape(_forward(op, "xla", stride, padding, dilation), x, w).shape
  probe = jax.random.normal(keys[2], y_shape)
  secs = median_seconds(fns, (x, w, probe), reps)
  resolve = layers.resolve_conv_impl if op == "conv" else layers.resolve_conv_transpose_impl
  return {"name": name, "op": op, "kernel": k, "stride": stride, "dilation": dilation,
          "in_ch": cin, "out_ch": cout, "size": size, "batch": batch,
          "auto_picks": (layers.resolve_conv_impl("auto", k, stride, dilation, size * size, cin)
                         if op == "conv" else resolve("auto", k, stride, padding)),
          "jax_version": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "seconds": secs, "speedup_vs_xla": {i: secs["xla"] / s for i, s in secs.items()}}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--only", default=None, help="substring of the layer names to run")
  p.add_argument("--impls", default=None, help="comma-separated impls (default: all)")
  p.add_argument("--json", default=None, help="write the records here")
  args = p.parse_args(argv)
  impls = args.impls.split(",") if args.impls else None
  print(f"backend {jax.default_backend()}, batch {args.batch}, median of {args.reps}; "
        "fwd+bwd ms, (speed vs xla)")
  records = []
  for shape in SHAPES:
    if args.only and args.only not in shape[0]:
      continue
    r = bench_shape(shape, args.batch, args.reps, impls)
    records.append(r)
    cells = "  ".join(f"{i} {1e3 * s:7.1f} ({r['speedup_vs_xla'][i]:.2f}x)"
                      for i, s in r["seconds"].items())
    print(f"{r['name']:<26} {cells}  auto->{r['auto_picks']}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(records, f, indent=1)


if __name__ == "__main__":
  main()
