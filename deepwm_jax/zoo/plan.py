"""`deepwm attack --plan`: what a zoo config will train and what each group costs on this
machine, before anything is trained.

--plan alone only expands the grid (jax.eval_shape: seconds, no compilation): the groups,
their member counts and each member's parameter count. --plan-steps 0 also compiles every
group's vmapped step on the current backend and reads its memory from XLA
(`Compiled.memory_analysis()`: arguments + outputs + temporaries, per device); a group that
would not fit the device's memory (an accelerator's allocator limit, the host's RAM on a CPU)
is flagged with the largest `max_members_per_device` that would. --plan-steps N (N >= 1) then
times N steps of each group that fits on random inputs and projects its training time (steps
x seconds per step).

No kit is needed: sizes come from --kit when given, else from config.bench (image_size,
channels). Perceptual members (groups of their own) are sized with zero VGG16 weights when no
weights file is set; the run skips them then, so the training estimate leaves them out.
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from deepwm_jax.zoo import grid, perceptual, train

# Leave this fraction of the device's memory free for XLA's own buffers and fragmentation
# when suggesting a member count.
_HEADROOM = 0.85


def plan(zcfg, image_size: int | None = None, channels: int | None = None,
         steps: int | None = None, log=print) -> dict:
  """steps None: list the groups; 0: also compile each and read its memory; N: also time N."""
  size = int(image_size or zcfg.bench.image_size)
  ch = int(channels or zcfg.bench.channels)
  members = grid.expand(zcfg)
  vgg, placeholder = None, False
  if any(m.pixel_loss == "perceptual" for m in members):
    if zcfg.perceptual.weights:
      vgg = perceptual.load_weights(zcfg.perceptual.weights)
    else:
      vgg, placeholder = perceptual.placeholder_weights(), True
  vgg = None if vgg is None else [tuple(jnp.asarray(a) for a in pair) for pair in vgg]
  mesh = train.make_mesh(zcfg.mesh.devices)
  groups = train.groups(members, zcfg, mesh)
  limit = _bytes_limit(mesh)
  log(f"[plan] {len(members)} members in {len(groups)} groups at {size} px x {ch} channels, "
      f"on {mesh.devices.size} {jax.default_backend()} device(s)"
      + (f" ({limit / 2**30:.1f} GiB each)" if limit else ""))
  rows = []
  for g in groups:
    setup = train.setup_for(g, zcfg, size, ch, vgg)
    padded = train.padded(list(g.members), mesh)
    abstract = train.abstract_group(setup, padded, mesh)
    params = int(sum(np.prod(a.shape[1:]) for a in
                     jax.tree.leaves(abstract["members"]["model"]["params"])))
    row = {"group": g.name, "arch": g.arch, "members": len(g.members),
           "padded_to": len(padded), "steps": g.steps, "batch": g.batch,
           "adversarial": g.adversarial, "perceptual": g.perceptual,
           "params_per_member": params}
    if g.perceptual and placeholder:
      row["skipped_by_run"] = True     # no perceptual.weights: `deepwm attack` skips them
    if steps is not None:
      row.update(_measure(setup, padded, g, mesh, abstract, steps, size, ch, limit))
    rows.append(row)
    log("[plan] " + _line(row))
  out = {"backend": jax.default_backend(), "devices": int(mesh.devices.size),
         "image_size": size, "channels": ch,
         "max_members_per_device": zcfg.get("max_members_per_device", 0),
         "members": len(members), "groups": rows, "perceptual_placeholder": placeholder,
         "device_bytes_limit": limit}
  if steps is not None:
    too_big = [r for r in rows if r.get("fits") is False]
    fits = [r["members_per_device_that_fit"] for r in too_big
            if "members_per_device_that_fit" in r]
    if too_big:
      hint = (f"set --config.max_members_per_device={min(fits)}"
              if fits and min(fits) >= 1 else "one member alone is too large: lower the batch "
              "or the image size, or shard over more devices")
      log(f"[plan] {len(too_big)} group(s) would not fit one device's memory: {hint}")
  if steps:
    counted = [r for r in rows if not r.get("skipped_by_run")]
    out["train_seconds_estimate"] = round(sum(r.get("train_seconds_estimate", 0.0)
                                              for r in counted), 1)
    left_out = sum("train_seconds_estimate" not in r for r in counted)
    notes = ["compilation and evaluation not included"]
    if left_out:
      notes.append(f"{left_out} group(s) that do not fit are not counted")
    if len(counted) < len(rows):
      notes.append(f"{len(rows) - len(counted)} perceptual group(s) not counted: without "
                   f"perceptual.weights the run skips them")
    log(f"[plan] training estimate: {_duration(out['train_seconds_estimate'])} of steps "
        f"({'; '.join(notes)})")
  return out


def _measure(setup, padded, g, mesh, abstract, steps, size, ch, limit) -> dict:
  """Compile the group's step, read its memory, time `steps` steps on random inputs."""
  k = len(padded)
  sh = train.member_sharding(mesh)
  batch_abs = {v: jax.ShapeDtypeStruct((k, g.batch, size, size, ch), jnp.float32, sharding=sh)
               for v in "xy"}
  jitted = train.jit_group_step(train.make_group_step(setup, mesh, jit=False), mesh)
  t = time.perf_counter()
  compiled = jitted.lower(abstract, batch_abs).compile()
  compile_s = time.perf_counter() - t
  row = {"compile_seconds": round(compile_s, 2)}
  mem = _memory(compiled)
  if mem:
    row.update(mem)
    per_device = max(1, k // mesh.devices.size)
    if limit:
      row["fits"] = mem["peak_bytes"] <= _HEADROOM * limit
      row["members_per_device_that_fit"] = int(_HEADROOM * limit
                                               // (mem["peak_bytes"] / per_device))
  if row.get("fits") is False or steps == 0:
    return row                  # running a group that does not fit would only fail to allocate
  try:
    state = train.init_group(setup, padded, 0, mesh)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (k, g.batch, size, size, ch)).astype(np.float32)
    batch = jax.device_put({"x": x, "y": x[..., ::-1, :].copy()}, sh)
    times = []
    for _ in range(steps + 1):    # the first call only warms up
      t = time.perf_counter()
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
  except Exception as e:        # XLA's RESOURCE_EXHAUSTED, where the estimate was too low
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    row["fits"] = False
    return row
  del state, batch
  per_step = float(np.median(times[1:]))
  row.update(seconds_per_step=round(per_step, 5),
             member_steps_per_s=round(len(g.members) / per_step, 2),
             train_seconds_estimate=round(per_step * g.steps, 1))
  return row


def _memory(compiled) -> dict | None:
  try:
    ma = compiled.memory_analysis()
  except Exception:  # not every backend/jaxlib implements it
    return None
  if ma is None:
    return None
  arg, out = int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes)
  alias, temp = int(ma.alias_size_in_bytes), int(ma.temp_size_in_bytes)
  return {"argument_bytes": arg, "output_bytes": out, "temp_bytes": temp,
          "peak_bytes": arg + out - alias + temp}


def _bytes_limit(mesh) -> int | None:
  """What one device can hold: the allocator's limit, or on a CPU the host's RAM shared by the
  devices (so that timing a paper-scale group on a laptop is refused, not swapped to death)."""
  device = mesh.devices.flat[0]
  try:
    stats = device.memory_stats()
  except Exception:
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    try:
      ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
      return None
    return int(ram // len(jax.devices("cpu")))
  return None


def _line(r: dict) -> str:
  s = (f"{r['group']}: {r['members']} member(s) x {r['steps']} steps, batch {r['batch']}, "
       f"{r['params_per_member'] / 1e6:.2f} M params each")
  if r.get("skipped_by_run"):
    s += " (zero VGG16 weights; skipped by the run without perceptual.weights)"
  if "peak_bytes" in r:
    s += f"; step memory {_bytes(r['peak_bytes'])}/device"
  if r.get("fits") is False:
    s += " (does NOT fit" + (f"; at most {r['members_per_device_that_fit']} members per "
                             "device)" if "members_per_device_that_fit" in r else ")")
  if "seconds_per_step" in r:
    s += (f"; {r['seconds_per_step'] * 1e3:.1f} ms/step ({r['member_steps_per_s']:.1f} "
          f"member-steps/s), {_duration(r['train_seconds_estimate'])} of training, "
          f"compiled in {r['compile_seconds']:.1f} s")
  return s


def _bytes(n: float) -> str:
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
  if seconds >= 3600:
    return f"{seconds / 3600:.1f} h"
  return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"
