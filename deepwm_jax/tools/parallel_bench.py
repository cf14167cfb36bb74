"""Data-parallel stage 1 on the current devices: its scaling benchmark and a worker for tests.

  python -m deepwm_jax.tools.parallel_bench scaling --config configs/tiny.py --devices 1,2,4
  python -m deepwm_jax.tools.parallel_bench train --config configs/tiny.py --workdir W --out P.npz

`scaling` times the stage-1 step (H + R + D, the config's networks and global batch) on meshes
of 1, 2, 4 ... devices in one process and prints steps/s, images/s and the speed-up over one
device. On a CPU without that many devices it re-runs itself with
XLA_FLAGS=--xla_force_host_platform_device_count=N: forced CPU devices share the same cores,
so there it measures the sharding overhead, not a speed-up. `deepwm bench --scaling` calls
`scaling`.

`train` runs `--stop-at` stage-1 steps through the one training loop (checkpoints, resume,
global batches from each process's rows), as a process of a multi-process run when the
DEEPWM_* variables say so, and process 0 saves the parameters to `--out`: the tests compare
them across device counts, process counts and topology changes mid-run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from deepwm_jax.errors import DeepwmError


def _stage1(cfg, mesh, n_images: int | None = None):
  """(jitted step, state, shardings, batch_fn) of stage 1 on `mesh`; `n_images` patches to
  draw batches from (default the config's n_protect; speed does not depend on it)."""
  import jax
  from deepwm_jax import parallel
  from deepwm_jax.data import pairs as pairs_lib
  from deepwm_jax.stages import common
  from deepwm_jax.data import watermarks
  from deepwm_jax.train import stage1
  d = cfg.data
  w = watermarks.watermark_image(cfg.watermark.spec, d.image_size, d.channels)
  blank = watermarks.blank_image(d.image_size, d.channels)
  state = stage1.init_state(cfg, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1), w)
  shardings = parallel.state_shardings(mesh, state, cfg)
  pairs = pairs_lib.make_pairs(cfg, "protect", n_images or d.n_protect, 1)
  # The task model's outputs do not matter for speed or equality: B stands in for M(A).
  batch_fn = common.sampler({"a": pairs.a, "b": pairs.b}, cfg.stage1.batch, (cfg.seed, 21),
                              mesh)
  return stage1.make_step(cfg, w, blank), state, shardings, batch_fn


def train(cfg, workdir: str, stop_at: int, log=print):
  """Stage 1 to step `stop_at` (resuming from workdir); returns the state as NumPy."""
  import jax
  from deepwm_jax import parallel
  from deepwm_jax.train import loop
  parallel.initialize(cfg)
  mesh = parallel.make_mesh(cfg)
  parallel.check_batch(cfg.stage1.batch, mesh, "stage1.batch")
  step, state, shardings, batch_fn = _stage1(cfg, mesh)
  if parallel.is_primary():
    log(f"stage 1 on {parallel.describe(mesh)}")
  state = loop.run("stage1", step, state, batch_fn, stop_at, workdir,
                   jax.random.PRNGKey(cfg.seed), log_every=cfg.log_every,
                   ckpt_every=cfg.ckpt_every, log=log, mesh=mesh, shardings=shardings)
  return parallel.to_host(state)


def write_kit(cfg, state, path: str) -> str:
  """A kit of stage 1's networks, calibrated on B' vs B of the val split (the full pipeline
  calibrates after stage 2; this is for checking that kits are independent of topology)."""
  from deepwm_jax import kit as kit_lib, parallel, verdict
  from deepwm_jax.data import pairs as pairs_lib
  from deepwm_jax.stages import common
  from deepwm_jax.data import watermarks
  from deepwm_jax.train import stage1
  d = cfg.data
  w = watermarks.watermark_image(cfg.watermark.spec, d.image_size, d.channels)
  blank = watermarks.blank_image(d.image_size, d.channels)
  local = parallel.local_copy(state)
  emb, ext = local["embedder"], {"params": local["extractor"]["params"]}
  val = pairs_lib.make_pairs(cfg, "val", d.n_val, 3)
  wm = common.predict(stage1.make_embed_fn(cfg, w), emb, val.b)
  extract = stage1.make_extract_fn(cfg)
  stat = lambda x: np.asarray(verdict.watermark_statistic(
      common.predict(extract, ext, x), np.asarray(w), np.asarray(blank)))
  calibration = verdict.calibrate(stat(val.b), stat(wm), margin=cfg.evaluate.margin)
  return kit_lib.write_kit(path, cfg, emb, ext, w, blank, calibration)


def flatten(tree) -> dict[str, np.ndarray]:
  import jax
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}


def time_steps(cfg, n_devices: int, steps: int = 5, warmup: int = 2) -> dict:
  """Median seconds of a stage-1 step on the first `n_devices` devices (one process)."""
  import jax
  from deepwm_jax import parallel
  mesh = parallel.make_mesh(cfg, data=n_devices)
  parallel.check_batch(cfg.stage1.batch, mesh, "stage1.batch")
  step, state, shardings, batch_fn = _stage1(cfg, mesh, n_images=4 * cfg.stage1.batch)
  step = parallel.shard_step(step, mesh, shardings)
  state = parallel.place(state, shardings)
  key = np.asarray(jax.random.PRNGKey(0))
  batch = batch_fn(0)
  t = time.perf_counter()
  state, m = step(state, batch, key)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  times = []
  for i in range(warmup + steps):
    batch = batch_fn(i + 1)
    t = time.perf_counter()
    state, m = step(state, batch, key)
    jax.block_until_ready((state, m))  # also keeps collectives from queueing up on CPU
    if i >= warmup:
      times.append(time.perf_counter() - t)
  s = statistics.median(times)
  return {"devices": n_devices, "platform": jax.devices()[0].platform,
          "device_kind": jax.devices()[0].device_kind, "global_batch": int(cfg.stage1.batch),
          "compile_s": round(compile_s, 2), "step_s": s, "steps_per_s": 1.0 / s,
          "images_per_s": cfg.stage1.batch / s}


def parse_counts(text: str) -> tuple[int, ...]:
  try:
    counts = tuple(int(c) for c in text.split(",") if c.strip())
  except ValueError:
    counts = ()
  if not counts or min(counts) < 1:
    raise DeepwmError(f"device counts {text!r}: give positive numbers, comma separated (1,2,4)")
  return counts


def scaling(cfg, device_counts=(1, 2, 4), steps: int = 5, log=print) -> list[dict]:
  """Stage-1 steps/s on each device count; on a CPU with too few devices, in a subprocess
  with that many forced CPU devices (XLA_FLAGS must be set before JAX starts)."""
  import jax
  want = max(device_counts)
  if jax.device_count() < want:
    if jax.devices()[0].platform != "cpu":
      raise DeepwmError(f"{want} devices asked for but {jax.device_count()} are visible; "
                        f"pass --devices with counts up to {jax.device_count()}")
    return _scaling_subprocess(cfg, device_counts, steps, log)
  records = []
  for n in device_counts:
    r = time_steps(cfg, n, steps)
    records.append(r)
  base = records[0]["steps_per_s"] / records[0]["devices"]
  for r in records:
    r["speedup_vs_1"] = r["steps_per_s"] / base if records[0]["devices"] == 1 else None
    r["jax_version"] = jax.__version__
    log(f"stage1 data-parallel  devices={r['devices']:<3d} batch={r['global_batch']:<4d} "
        f"compile {r['compile_s']:6.1f} s  {r['steps_per_s']:8.3f} steps/s  "
        f"{r['images_per_s']:8.1f} img/s"
        + (f"  x{r['speedup_vs_1']:.2f} vs 1 device" if r["speedup_vs_1"] else ""))
  return records


def _scaling_subprocess(cfg, device_counts, steps, log):
  import tempfile
  with tempfile.TemporaryDirectory() as tmp:
    cfg_path, out = os.path.join(tmp, "config.json"), os.path.join(tmp, "scaling.json")
    with open(cfg_path, "w") as f:
      f.write(cfg.to_json_best_effort())
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_"
                         f"count={max(device_counts)}").strip()}
    cmd = [sys.executable, "-m", "deepwm_jax.tools.parallel_bench", "scaling", "--config-json",
           cfg_path, "--devices", ",".join(map(str, device_counts)), "--steps", str(steps),
           "--json", out]
    log(f"(forcing {max(device_counts)} CPU devices in a subprocess; they share this CPU's "
        f"cores, so this measures sharding overhead, not a speed-up)")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    for line in proc.stdout.splitlines():
      if line.startswith("stage1 data-parallel"):
        log(line)
    if proc.returncode:
      raise DeepwmError(f"the scaling subprocess failed (exit {proc.returncode}): "
                        f"{proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''}")
    with open(out) as f:
      return json.load(f)


def _config(args, overrides):
  import ml_collections
  from deepwm_jax import config as config_lib
  if args.config_json:
    with open(args.config_json) as f:
      cfg = ml_collections.ConfigDict(json.load(f))
  else:
    cfg = config_lib.load(args.config)
  config_lib.apply_overrides(cfg, overrides)
  config_lib.validate(cfg)
  return cfg


def main(argv=None) -> int:
  from deepwm_jax import config as config_lib
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_lib.split_overrides(argv)
  p = argparse.ArgumentParser(prog="python -m deepwm_jax.tools.parallel_bench")
  sub = p.add_subparsers(dest="command", required=True)
  for name in ("scaling", "train"):
    s = sub.add_parser(name)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--config")
    g.add_argument("--config-json", help=argparse.SUPPRESS)
  sc = sub.choices["scaling"]
  sc.add_argument("--devices", default="1,2,4", help="device counts, comma separated")
  sc.add_argument("--steps", type=int, default=5, help="timed steps per count (median)")
  sc.add_argument("--json", help="write the records to this file")
  tr = sub.choices["train"]
  tr.add_argument("--workdir", required=True)
  tr.add_argument("--stop-at", type=int, help="stop after this step (default stage1.steps)")
  tr.add_argument("--out", help="process 0 saves the final state here (.npz)")
  tr.add_argument("--kit", help="process 0 writes a kit of the stage-1 networks here")
  args = p.parse_args(rest)
  try:
    cfg = _config(args, overrides)
    if args.command == "scaling":
      counts = parse_counts(args.devices)
      records = scaling(cfg, counts, args.steps)
      if args.json:
        with open(args.json, "w") as f:
          json.dump(records, f, indent=1)
      return 0
    from deepwm_jax import parallel
    state = train(cfg, args.workdir, cfg.stage1.steps if args.stop_at is None else args.stop_at,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.out and parallel.is_primary():
      np.savez(args.out, **flatten(state))
    if args.kit:
      write_kit(cfg, state, args.kit)
    return 0
  except DeepwmError as e:
    print(f"parallel_bench {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
