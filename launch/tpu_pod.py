#!/usr/bin/env python3
"""Runs one command on every worker of a Cloud TPU VM pod slice (one JAX process per host).

  python launch/tpu_pod.py --tpu my-v4-32 --zone us-central2-b \
      --setup "pip install -e ~/deepwm_jax[tpu]" --repo '~/deepwm_jax' -- \
      deepwm run --config configs/paper_derain.py --workdir gs://BUCKET/runs/derain
  python launch/tpu_pod.py --tpu my-v4-32 --zone us-central2-b --dry-run -- deepwm run ...

It runs `gcloud compute tpus tpu-vm ssh TPU --worker=all --command=...` once (with --setup, a
first pass that installs the package on every worker). Each worker then starts the command
with DEEPWM_DISTRIBUTED=on: jax.distributed.initialize() detects the pod's coordinator,
process count and index by itself. The workdir must be visible to every worker (gs:// or a
shared file system): all of them write their parts of each orbax checkpoint there.
"""
import argparse
import shlex
import subprocess
import sys


def worker_command(args, cmd: list[str]) -> str:
  env = f"DEEPWM_DISTRIBUTED=on DEEPWM_INIT_TIMEOUT={args.timeout}"
  cd = f"cd {args.repo} && " if args.repo else ""
  return f"{cd}{env} {shlex.join(cmd)}"


def gcloud(args, remote: str) -> list[str]:
  g = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}",
       "--worker=all", f"--command={remote}"]
  if args.project:
    g.insert(6, f"--project={args.project}")
  return g


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tpu", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default=None)
  p.add_argument("--repo", default="", help="directory of the checkout on the workers")
  p.add_argument("--setup", default="", help="shell command run on every worker first")
  p.add_argument("--timeout", type=int, default=600,
                 help="seconds the workers wait for each other at start-up")
  p.add_argument("--dry-run", action="store_true", help="print the gcloud commands and exit")
  p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
  args = p.parse_args(argv)
  cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not cmd:
    p.error("give the command after --, e.g. -- deepwm run --config C --workdir gs://B/run")
  if "--workdir" in cmd:
    workdir = cmd[cmd.index("--workdir") + 1] if cmd.index("--workdir") + 1 < len(cmd) else ""
    if workdir and not workdir.startswith("gs://") and not workdir.startswith("/"):
      print(f"warning: --workdir {workdir} is relative: each worker would write its own copy; "
            f"use gs://BUCKET/... or a shared file system path", file=sys.stderr)
  steps = []
  if args.setup:
    steps.append(gcloud(args, (f"cd {args.repo} && " if args.repo else "") + args.setup))
  steps.append(gcloud(args, worker_command(args, cmd)))
  for g in steps:
    if args.dry_run:
      print(shlex.join(g))
      continue
    status = subprocess.call(g)
    if status:
      return status
  return 0


if __name__ == "__main__":
  sys.exit(main())
