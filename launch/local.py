#!/usr/bin/env python3
"""Starts N JAX processes of one command on this machine, joined through 127.0.0.1.

  python launch/local.py -n 2 -- deepwm run --config configs/tiny.py --workdir runs/mp
  python launch/local.py -n 2 --cpu-devices 2 --dry-run -- deepwm run ...

Each process gets DEEPWM_COORDINATOR=127.0.0.1:PORT, DEEPWM_NUM_PROCESSES=N and
DEEPWM_PROCESS_ID=i; `deepwm` calls jax.distributed.initialize with them (deepwm_jax/parallel.py).
Process 0's output passes through; the others' goes to LOG_DIR/process_i.log (default: only
shown when a process fails). When one process fails the others are stopped, and the exit status
is the first failure's. `--cpu-devices K` forces K CPU devices per process (testing on a laptop),
`--gpus` gives process i the GPU i (CUDA_VISIBLE_DEVICES).
"""
import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(i: int, n: int, port: int, args, base=None) -> dict:
  """The environment variables process i gets on top of the current ones."""
  env = {"DEEPWM_COORDINATOR": f"127.0.0.1:{port}", "DEEPWM_NUM_PROCESSES": str(n),
         "DEEPWM_PROCESS_ID": str(i), "DEEPWM_INIT_TIMEOUT": str(args.timeout)}
  if args.cpu_devices:
    base = os.environ if base is None else base
    flags = base.get("XLA_FLAGS", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.cpu_devices}".strip()
  if args.gpus:
    env["CUDA_VISIBLE_DEVICES"] = str(i)
  return env


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("-n", "--num-processes", type=int, default=2)
  p.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
  p.add_argument("--cpu-devices", type=int, default=0, help="force K CPU devices per process")
  p.add_argument("--gpus", action="store_true", help="process i sees only GPU i")
  p.add_argument("--timeout", type=int, default=120,
                 help="seconds a process waits for the others to join")
  p.add_argument("--log-dir", default=None, help="keep every process's output here")
  p.add_argument("--dry-run", action="store_true", help="print what would run and exit")
  p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
  args = p.parse_args(argv)
  cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not cmd:
    p.error("give the command after --, e.g. -- deepwm run --config C --workdir W")
  if args.num_processes < 1:
    p.error("-n must be at least 1")
  port = args.port or free_port()
  envs = [process_env(i, args.num_processes, port, args) for i in range(args.num_processes)]
  if args.dry_run:
    for env in envs:
      print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd))
    return 0

  log_dir = args.log_dir or tempfile.mkdtemp(prefix="deepwm-local-")
  os.makedirs(log_dir, exist_ok=True)
  procs, logs = [], []
  for i, env in enumerate(envs):
    out = None
    if i > 0:
      logs.append(open(os.path.join(log_dir, f"process_{i}.log"), "w"))
      out = logs[-1]
    procs.append(subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out,
                                  stderr=subprocess.STDOUT if out else None))
  status = _wait(procs)
  for f in logs:
    f.close()
  if status:
    for i in range(1, len(procs)):
      if procs[i].returncode:
        with open(os.path.join(log_dir, f"process_{i}.log")) as f:
          tail = f.read().strip().splitlines()[-5:]
        print(f"[process {i} exit {procs[i].returncode}] " + "\n  ".join(tail), file=sys.stderr)
  return status


def _wait(procs) -> int:
  """Waits for all; on the first failure (or Ctrl-C) stops the others, each by its own pid."""
  try:
    while True:
      codes = [q.poll() for q in procs]
      failed = [c for c in codes if c not in (None, 0)]
      if failed:
        _stop(procs)
        return failed[0] if failed[0] > 0 else 1
      if all(c == 0 for c in codes):
        return 0
      time.sleep(0.2)
  except KeyboardInterrupt:
    _stop(procs)
    return 130


def _stop(procs) -> None:
  for q in procs:
    if q.poll() is None:
      q.send_signal(signal.SIGTERM)
  deadline = time.time() + 10
  for q in procs:
    try:
      q.wait(timeout=max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      q.kill()


if __name__ == "__main__":
  sys.exit(main())
