"""launch/: the dry runs of the TPU-pod and SLURM launchers, and the local launcher's process
handling. The local launcher's real multi-process training run (2 JAX processes, stage 1) is
tests/test_parallel.py::test_two_processes_match_one_then_resume_on_one_device."""
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")


def _run(cmd, **kw):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPWM_", "SLURM_"))}
  return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, **kw)


def test_local_dry_run_prints_each_process():
  proc = _run([sys.executable, os.path.join(LAUNCH, "local.py"), "-n", "3", "--port", "4567",
               "--cpu-devices", "2", "--dry-run", "--", "deepwm", "run", "--config", "c.py",
               "--workdir", "runs/x"])
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    words = shlex.split(line)
    assert "DEEPWM_COORDINATOR=127.0.0.1:4567" in words
    assert "DEEPWM_NUM_PROCESSES=3" in words and f"DEEPWM_PROCESS_ID={i}" in words
    assert any(w.endswith("--xla_force_host_platform_device_count=2") for w in words)
    assert words[-6:] == ["deepwm", "run", "--config", "c.py", "--workdir", "runs/x"]


def test_local_launcher_passes_env_and_stops_on_failure(tmp_path):
  """Real processes: each sees its id; when process 1 fails, the launcher stops process 0
  (which would sleep a minute) and exits with process 1's status."""
  script = ("import os, sys, time\n"
            "i = int(os.environ['DEEPWM_PROCESS_ID'])\n"
            "print('process', i, 'of', os.environ['DEEPWM_NUM_PROCESSES'], flush=True)\n"
            "time.sleep(60) if i == 0 else sys.exit(3)\n")
  proc = _run([sys.executable, os.path.join(LAUNCH, "local.py"), "-n", "2", "--log-dir",
               str(tmp_path), "--", sys.executable, "-c", script])
  assert proc.returncode == 3
  assert "process 0 of 2" in proc.stdout
  assert "process 1 of 2" in (tmp_path / "process_1.log").read_text()
  assert "[process 1 exit 3]" in proc.stderr


def test_tpu_pod_dry_run():
  proc = _run([sys.executable, os.path.join(LAUNCH, "tpu_pod.py"), "--tpu", "pod1", "--zone",
               "us-central2-b", "--project", "proj", "--repo", "~/deepwm_jax", "--setup",
               "pip install -e .", "--dry-run", "--", "deepwm", "run", "--config",
               "configs/paper_derain.py", "--workdir", "gs://bucket/derain"])
  assert proc.returncode == 0, proc.stderr
  setup, run = [shlex.split(l) for l in proc.stdout.strip().splitlines()]
  for words in (setup, run):
    assert words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"]
    assert "--worker=all" in words and "--zone=us-central2-b" in words
    assert "--project=proj" in words
  assert setup[-1] == "--command=cd ~/deepwm_jax && pip install -e ."
  remote = run[-1][len("--command="):]
  assert remote.startswith("cd ~/deepwm_jax && DEEPWM_DISTRIBUTED=on ")
  assert remote.endswith("deepwm run --config configs/paper_derain.py --workdir "
                         "gs://bucket/derain")
  assert "warning" not in proc.stderr


def test_tpu_pod_warns_about_a_local_workdir():
  proc = _run([sys.executable, os.path.join(LAUNCH, "tpu_pod.py"), "--tpu", "p", "--zone", "z",
               "--dry-run", "--", "deepwm", "run", "--config", "c.py", "--workdir", "runs/x"])
  assert proc.returncode == 0 and "use gs://" in proc.stderr


def test_slurm_dry_run():
  proc = _run(["bash", os.path.join(LAUNCH, "slurm_gpu.sbatch"), "--dry-run", "deepwm", "run",
               "--config", "configs/paper_derain.py", "--workdir", "/shared/derain"])
  assert proc.returncode == 0, proc.stderr
  words = proc.stdout.split()
  assert "DEEPWM_DISTRIBUTED=on" in words
  i = words.index("srun")
  assert "--gpus-per-task=1" in words[i:] and "--kill-on-bad-exit=1" in words[i:]
  assert words[-6:] == ["deepwm", "run", "--config", "configs/paper_derain.py", "--workdir",
                        "/shared/derain"]
  bad = _run(["bash", os.path.join(LAUNCH, "slurm_gpu.sbatch"), "--dry-run"])
  assert bad.returncode == 2 and "usage" in bad.stderr
