"""Benchmark: member-steps per second of one vmapped group against the same members trained
one after another (each its own jitted step), measured in one run on the same data.

  deepwm attack --benchmark --config configs/zoo_quick.py
  python -c "from deepwm_jax.tools import zoo_bench as bench; print(bench.member_steps_per_s())"
"""
import time

import jax
import numpy as np

from deepwm_jax.models import layers
from deepwm_jax.zoo import grid, train


def _members(n: int, arch: str, batch: int, steps: int):
  losses = ("l2", "l1", "ssim", "l2")
  return [grid.Member(name=f"bench{k}", arch=arch, loss=losses[k % len(losses)],
                      augmentation="none", n_attack=64, lr=1e-3 * (1 + k % 3), steps=steps,
                      batch=batch, seed=k, null=False, overwrite=False) for k in range(n)]


def member_steps_per_s(arch_spec: dict | None = None, members: int = 4, steps: int = 10,
                       batch: int = 16, image_size: int = 32, channels: int = 3,
                       conv_impl: str = "auto", repeats: int = 3, log=None) -> dict:
  """Times `steps` training steps of `members` surrogates, vmapped vs sequential.

  Both variants run the same per-member step function on the same batches, after a warm-up
  step (compilation excluded and reported apart); each is timed `repeats` times and the
  median kept, alternating the two so machine noise hits both alike (docs/performance.md).
  """
  arch_spec = dict(arch_spec or {"arch": "unet", "ngf": 16, "num_downs": 0})
  ms = _members(members, "bench", batch, steps)
  setup = train.GroupSetup(arch_spec=arch_spec, image_size=image_size, channels=channels,
                           steps=steps, adversarial=False, terms=("l1", "l2", "ssim"),
                           conv_impl=conv_impl)
  mesh = train.make_mesh(1)
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (members, batch, image_size, image_size, channels)).astype(np.float32)
  y = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  batch_k = jax.device_put({"x": x, "y": y}, train.member_sharding(mesh))

  stacked = train.init_group(setup, ms, 0, mesh)
  group_step = train.make_group_step(setup, mesh)
  single = jax.jit(train.make_member_step(setup), compiler_options=layers.cpu_compiler_options())
  singles = [train.unstack(stacked["members"], k) for k in range(members)]
  single_batches = [{"x": x[k], "y": y[k]} for k in range(members)]

  def run_vmapped(state, n):
    for _ in range(n):
      state, m = group_step(state, batch_k)
      jax.block_until_ready(m)
    return state

  def run_sequential(states, n):
    states = list(states)
    for k in range(members):
      for _ in range(n):
        states[k], m = single(states[k], single_batches[k])
        jax.block_until_ready(m)
    return states

  t = time.perf_counter()
  stacked = run_vmapped(stacked, 1)
  compile_v = time.perf_counter() - t
  t = time.perf_counter()
  singles = run_sequential(singles, 1)
  compile_s = time.perf_counter() - t
  tv, ts = [], []
  for r in range(repeats):
    t = time.perf_counter()
    stacked = run_vmapped(stacked, steps)
    tv.append(time.perf_counter() - t)
    t = time.perf_counter()
    singles = run_sequential(singles, steps)
    ts.append(time.perf_counter() - t)
    if log:
      log(f"[bench] repeat {r + 1}/{repeats}: vmapped {tv[-1]:.2f} s, sequential {ts[-1]:.2f} s")
  v = members * steps / float(np.median(tv))
  s = members * steps / float(np.median(ts))
  return {"arch": arch_spec, "members": members, "steps": steps, "batch": batch,
          "image_size": image_size, "channels": channels, "backend": jax.default_backend(),
          "vmapped_member_steps_per_s": round(v, 3),
          "sequential_member_steps_per_s": round(s, 3),
          "speedup": round(v / s, 3),
          "first_step_seconds": {"vmapped": round(compile_v, 2),
                                 "sequential": round(compile_s, 2)},
          "seconds": {"vmapped": [round(t, 3) for t in tv],
                      "sequential": [round(t, 3) for t in ts]}}


def from_config(zcfg, image_size: int | None = None, channels: int | None = None, log=None):
  b = zcfg.bench
  return member_steps_per_s(dict(zcfg.archs[b.arch]), b.members, b.steps, b.batch,
                            image_size or b.image_size, channels or b.channels,
                            zcfg.conv_impl, log=log)
