"""The one loop that drives every stage: checkpoints, resume, divergence guard, logs.

A stage is a pure jitted `step(state, batch, key) -> (state, metrics)` plus a deterministic
`batch_fn(step) -> batch`. Because batches and keys are functions of the step number, a stage
interrupted at step k and resumed from its checkpoint continues exactly as if it had never
stopped. A stage is finished when its checkpoint at `num_steps` exists.
"""
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from deepwm_jax import parallel
from deepwm_jax.errors import DeepwmError


@dataclasses.dataclass
class Guard:
  """Rolls back to the last good checkpoint when a loss turns NaN or `metric` collapses."""
  metric: str | None = None      # e.g. 'psnr': a collapse is a sudden drop below its recent level
  drop: float = 10.0             # how far below the running average counts as a collapse
  smoothing: float = 0.5         # running average weight of the newest healthy value
  warmup: int = 50               # collapse checks start after this many steps
  lr_factor: float = 0.5
  max_rollbacks: int = 4


def checkpoint_manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, step: int, like):
  """Restores into the structure (and shardings) of `like`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises many types for a damaged or foreign checkpoint
    raise DeepwmError(
        f"checkpoint {mngr.directory}/{step} cannot be restored ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:160]}); it was written by a different config or is damaged: "
        f"use a new --workdir or delete that folder") from None


def finished_state(ckpt_dir: str, num_steps: int, like):
  """The final state of a finished stage, or None."""
  if not os.path.isdir(ckpt_dir):
    return None
  mngr = checkpoint_manager(ckpt_dir)
  if mngr.latest_step() != num_steps:
    return None
  return restore(mngr, num_steps, like)


class MetricsLog:
  """Metrics as JSON lines (for the report) and TensorBoard events (for people)."""

  def __init__(self, path: str, tb_dir: str | None, resume_step: int):
    self._f = self._tb = None
    if not parallel.is_primary():  # one writer in a multi-process run: process 0
      return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kept = []
    if os.path.exists(path):  # drop what was logged after the checkpoint we resume from
      with open(path) as f:
        kept = [l for l in f if l.strip() and json.loads(l)["step"] <= resume_step]
    with open(path, "w") as f:
      f.writelines(kept)
    self._f = open(path, "a")
    self._tb = None
    if tb_dir:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(tb_dir)

  def write(self, step: int, metrics: dict[str, float]):
    if self._f is None:
      return
    self._f.write(json.dumps({"step": step, **metrics}) + "\n")
    self._f.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(k, v, step)

  def close(self):
    if self._f is not None:
      self._f.close()
    if self._tb is not None:
      self._tb.close()


def read_log(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def run(name: str, step_fn: Callable, state: Any, batch_fn: Callable[[int], Any],
        num_steps: int, workdir: str, key, *, log_every: int = 50, ckpt_every: int = 500,
        guard: Guard | None = None, log=print, mesh=None, shardings=None) -> Any:
  """Trains `state` for `num_steps` steps of `step_fn`, resuming from workdir's checkpoints.

  With a `mesh` the state is placed as `shardings` (default: replicated), `batch_fn` returns
  global arrays split over the data axis, and the step is re-jitted with those shardings
  (deepwm_jax.parallel). Checkpoints restore into the current shardings, so a run may resume on
  another number of devices or processes.
  """
  if mesh is not None:
    shardings = shardings or parallel.state_shardings(mesh, state, fsdp=False)
    state = parallel.place(state, shardings)
    step_fn = parallel.shard_step(step_fn, mesh, shardings)
  if not parallel.is_primary():
    log = lambda *_: None
  ckpt_dir = os.path.join(workdir, "checkpoints", name)
  mngr = checkpoint_manager(ckpt_dir)
  start = mngr.latest_step()
  if start is not None:
    state = restore(mngr, start, state)
    if start >= num_steps:
      return state
    log(f"[{name}] resuming from step {start}")
  else:
    start = 0
    save(mngr, 0, state)

  logger = MetricsLog(os.path.join(workdir, "logs", f"{name}.jsonl"),
                      os.path.join(workdir, "tensorboard", name), start)
  guard = guard or Guard()
  recent = None                  # running average of the guarded metric
  rollbacks = 0
  step = start
  bar = tqdm(total=num_steps, initial=start, desc=name, dynamic_ncols=True,
             disable=not sys.stderr.isatty() or not parallel.is_primary(), leave=False)
  t0, last_print = time.time(), time.time()
  try:
    while step < num_steps:
      step_key = jax.random.fold_in(key, step)
      if mesh is not None:  # a host value is the same global (replicated) key in every process
        step_key = np.asarray(step_key)
      batch = batch_fn(step)
      if mesh is not None:
        batch = parallel.as_global_batch(mesh, batch)
      state, metrics = step_fn(state, batch, step_key)
      step += 1
      bar.update(1)
      if step % log_every and step != num_steps and step % ckpt_every:
        # On CPU, wait on every step so that hundreds of steps never queue up (ARCHITECTURE.md).
        jax.block_until_ready(metrics)
        continue
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      bad = _unhealthy(m, guard, recent, step)
      if bad:
        rollbacks += 1
        if rollbacks > guard.max_rollbacks:
          raise DeepwmError(f"[{name}] training diverged {rollbacks} times ({bad}); lower the "
                            f"learning rate in the config")
        last = mngr.latest_step()
        state = restore(mngr, last, state)
        state = {**state, "lr_scale": state["lr_scale"] * guard.lr_factor ** rollbacks}
        log(f"[{name}] step {step}: {bad}; restored step {last} and continue with the learning "
            f"rate x{float(state['lr_scale']):.3g}")
        step = last
        bar.reset(total=num_steps)
        bar.update(step)
        continue
      if guard.metric and guard.metric in m:
        # A running average, not the best: fidelity falls on purpose while the watermark
        # grows in (B' = B exactly at step 0), so only a sudden drop is a collapse.
        v = m[guard.metric]
        recent = v if recent is None else guard.smoothing * v + (1 - guard.smoothing) * recent
      m["lr_scale"] = float(state["lr_scale"])
      m["seconds"] = round(time.time() - t0, 2)
      logger.write(step, m)
      bar.set_postfix({k: f"{v:.4g}" for k, v in m.items() if k in _SHOWN})
      if not bar.disable or time.time() - last_print > 30 or step == num_steps:
        if bar.disable:
          shown = " ".join(f"{k}={v:.4g}" for k, v in m.items() if k in _SHOWN)
          log(f"[{name}] step {step}/{num_steps} {shown}")
          last_print = time.time()
      if step % ckpt_every == 0 or step == num_steps:
        save(mngr, step, state)
  except KeyboardInterrupt:
    # Keep what was done: the next run resumes here.
    if step > (mngr.latest_step() or 0):
      save(mngr, step, state)
    log(f"[{name}] interrupted at step {step}; checkpoint saved, re-run the command to resume")
    raise
  finally:
    bar.close()
    logger.close()
  return state


_SHOWN = ("loss", "psnr", "ssim", "band_dB", "wm_mse", "clean_mse", "sur_mse", "neg_mse",
          "d_loss")


def _unhealthy(m: dict[str, float], guard: Guard, recent: float | None,
              step: int) -> str | None:
  for k, v in m.items():
    if not math.isfinite(v):
      return f"{k} is {v}"
  if (guard.metric in m and recent is not None and step > guard.warmup
      and m[guard.metric] < recent - guard.drop):
    return f"{guard.metric} collapsed from {recent:.2f} to {m[guard.metric]:.2f}"
  return None


def remove_stage(workdir: str, name: str) -> None:
  shutil.rmtree(os.path.join(workdir, "checkpoints", name), ignore_errors=True)
