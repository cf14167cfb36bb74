"""Data parallel and multi-host: the same stage-1 results on 1 device, 4 devices, 2 processes,
and across a change of topology mid-run; kits written on 4 devices load here; bad input.

Multi-device runs are subprocesses with forced CPU devices (this pytest process already started
JAX with one); the multi-process run has one device per process (see that test). A stage-1 step with Adam moves every parameter by about +-lr whatever the size of
its gradient, so parameters whose gradient is zero up to rounding (biases before a norm, the
embedder behind its zero-initialised last layer) differ by O(lr) between device counts. The
comparison is therefore on the logged losses (forward passes of the updated networks) and on
the parameter updates as a whole, with tolerances well below what a wrong split of the batch
gives.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from deepwm_jax import parallel
from deepwm_jax.errors import DeepwmError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.py")
LOG_EVERY = ["--config.log_every=1"]


def _env(devices: int = 1, **extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPWM_")}
  env.update(JAX_PLATFORMS="cpu", **extra)
  flags = env.get("XLA_FLAGS", "")
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
  return env


def _train(workdir, stop_at, devices=1, out=None, extra=()):
  cmd = [sys.executable, "-m", "deepwm_jax.tools.parallel_bench", "train", "--config", TINY,
         "--workdir", str(workdir), "--stop-at", str(stop_at), *LOG_EVERY, *extra]
  if out:
    cmd += ["--out", str(out)]
  proc = subprocess.run(cmd, env=_env(devices), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc


def _log(workdir):
  with open(os.path.join(workdir, "logs", "stage1.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]


def _assert_same_run(ref_npz, got_npz, ref_log, got_log, init):
  ref, got = np.load(ref_npz), np.load(got_npz)
  assert sorted(ref.files) == sorted(got.files)
  for r, g in zip(ref_log, got_log):
    assert r["step"] == g["step"]
    for k in ("loss", "wm_mse", "clean_mse", "d_loss", "gan_g", "psnr"):
      assert g[k] == pytest.approx(r[k], rel=1e-3), (r["step"], k)
  for net in ("embedder", "extractor", "discriminator"):
    keys = [k for k in ref.files if k.startswith(f"['{net}']['params']")]
    d_ref = np.concatenate([(ref[k] - init[k]).ravel() for k in keys])
    d_got = np.concatenate([(got[k] - init[k]).ravel() for k in keys])
    assert np.linalg.norm(d_ref) > 0
    # Measured 0.03-0.16 (Adam on rounding-level gradients); a batch split wrongly gives ~1.
    assert np.linalg.norm(d_got - d_ref) / np.linalg.norm(d_ref) < 0.3, net
    assert np.max(np.abs(d_got - d_ref)) < 1e-2, net  # 3 Adam steps of lr 1e-3 at most


@pytest.fixture(scope="module")
def init_state():
  import jax
  from deepwm_jax import config
  from deepwm_jax.data import watermarks
  from deepwm_jax.tools.parallel_bench import flatten
  from deepwm_jax.train import stage1
  cfg = config.load(TINY)
  w = watermarks.watermark_image(cfg.watermark.spec, cfg.data.image_size, cfg.data.channels)
  return flatten(stage1.init_state(cfg, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1), w))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One process, one device: stage 1 to step 2, then resumed to step 3."""
  root = tmp_path_factory.mktemp("ref")
  work = root / "work"
  _train(work, 2, out=root / "r2.npz")
  shutil.copytree(work, root / "at2")  # the same run at step 2, for topology changes
  _train(work, 3, out=root / "r3.npz")
  return root, _log(work)


# ----------------------------------------------------------------------------- subprocess runs

@pytest.mark.slow
def test_two_processes_match_one_then_resume_on_one_device(reference, init_state, tmp_path):
  """launch/local.py starts 2 processes (one CPU device each, so each holds half of every
  global batch) on 127.0.0.1; after 2 steps their parameters match one process; the 2-process
  checkpoint then resumes in 1 process and matches again after step 3. (One device per process:
  with several forced CPU devices per process the step's compilation hung here, jax 0.10.2;
  openxla/xla#16430 reports a crash in the same setting. Accelerators are not affected.)"""
  root, ref_log = reference
  work = tmp_path / "work"
  cmd = [sys.executable, os.path.join(REPO, "launch", "local.py"), "-n", "2", "--cpu-devices",
         "1", "--log-dir", str(tmp_path / "logs"), "--", sys.executable, "-m",
         "deepwm_jax.tools.parallel_bench", "train", "--config", TINY, "--workdir", str(work),
         "--stop-at", "2", "--out", str(tmp_path / "m2.npz"), *LOG_EVERY]
  proc = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "2 device(s) on the data axis (cpu), 2 process(es)" in proc.stderr
  log = _log(work)
  assert [m["step"] for m in log] == [1, 2]  # written once, by process 0 only
  _assert_same_run(root / "r2.npz", tmp_path / "m2.npz", ref_log[:2], log, init_state)

  _train(work, 3, devices=1, out=tmp_path / "m3.npz")
  _assert_same_run(root / "r3.npz", tmp_path / "m3.npz", ref_log, _log(work), init_state)


@pytest.mark.slow
def test_one_device_checkpoint_resumes_on_four_with_fsdp_and_kit_loads_here(
    reference, init_state, tmp_path):
  """A 1-device checkpoint resumes on 4 devices with the parameters split FSDP-style; the
  result matches the 1-device run, and a kit written there loads in this 1-device process."""
  import deepwm_jax
  root, ref_log = reference
  work = tmp_path / "work"
  shutil.copytree(root / "at2", work)
  kit_dir = tmp_path / "kit"
  proc = _train(work, 3, devices=4, out=tmp_path / "f3.npz",
                extra=["--config.mesh.fsdp=true", "--config.mesh.fsdp_min_size=256",
                       "--kit", str(kit_dir)])
  assert "4 device(s) on the data axis" in proc.stderr
  _assert_same_run(root / "r3.npz", tmp_path / "f3.npz", ref_log, _log(work), init_state)

  kit = deepwm_jax.load_kit(str(kit_dir))
  got = np.load(tmp_path / "f3.npz")
  k = "['extractor']['params']['up']['kernel']"
  np.testing.assert_array_equal(np.asarray(kit.extractor_vars["params"]["up"]["kernel"]), got[k])
  images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  assert kit.extract(images).shape == (2, 32, 32, 3)


@pytest.mark.slow
def test_shardings_on_four_devices():
  """FSDP splits large leaves over 'data' (Adam moments follow their parameter); the zoo's
  member mesh and shardings; each device holds its own rows of a global batch."""
  code = r"""
import jax, numpy as np
from deepwm_jax import config, parallel
from deepwm_jax.train import stage1
from deepwm_jax.data import watermarks
cfg = config.load(%r)
cfg.mesh.fsdp, cfg.mesh.fsdp_min_size = True, 256
mesh = parallel.make_mesh(cfg)
assert parallel.data_shards(mesh) == 4
state = stage1.init_state(cfg, jax.random.PRNGKey(0), watermarks.watermark_image('logo', 32, 3))
sh = parallel.state_shardings(mesh, state, cfg)
k = sh['embedder']['params']['body']['down3']['kernel'].spec          # (4, 4, 16, 32)
assert tuple(k) == (None, None, None, 'data'), k
assert tuple(sh['opt_g'][1][0].mu['embedder']['body']['down3']['kernel'].spec) == tuple(k)
small = sh['embedder']['params']['body']['down_norm1']['BatchNorm_0']['scale']  # (8,)
assert tuple(small.spec) == ()
placed = parallel.place(state, sh)
x = placed['embedder']['params']['body']['down3']['kernel']
assert x.addressable_shards[0].data.shape == (4, 4, 16, 8)
b = parallel.as_global_batch(mesh, {'a': np.arange(8 * 3, dtype=np.float32).reshape(8, 3)})
assert [s.data.shape for s in b['a'].addressable_shards] == [(2, 3)] * 4
assert parallel.process_rows(mesh, 8) == slice(0, 8)
zoo = parallel.member_mesh(2)
assert dict(zoo.shape) == {'member': 2, 'data': 2}
ms = parallel.member_sharding(zoo, {'w': np.zeros((2, 3)), 'x': np.zeros((2, 8, 5))}, batch=True)
assert tuple(ms['w'].spec) == ('member', None) and tuple(ms['x'].spec) == ('member', 'data')
print('ok')
""" % TINY
  proc = subprocess.run([sys.executable, "-c", code], env=_env(4), capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


# ----------------------------------------------------------------------------- bad input (CLI)

def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cli(args, env):
  return subprocess.run([sys.executable, "-m", "deepwm_jax.cli", *args], env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_batch_not_divisible_by_devices(tmp_path):
  work = tmp_path / "w"
  proc = _cli(["run", "--config", TINY, "--workdir", str(work), "--config.stage1.batch=6"],
              _env(4))
  assert proc.returncode == 2, proc.stderr[-1000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("deepwm run: error")]
  assert len(lines) == 1 and "stage1.batch=6 cannot be split over 4 devices" in lines[0]
  assert "multiple of 4" in lines[0]
  assert not work.exists() or not any(work.iterdir())  # nothing written


def test_cli_unreachable_coordinator(tmp_path):
  port = _free_port()  # nothing listens there
  env = _env(1, DEEPWM_COORDINATOR=f"127.0.0.1:{port}", DEEPWM_NUM_PROCESSES="2",
             DEEPWM_PROCESS_ID="1", DEEPWM_INIT_TIMEOUT="1")
  proc = _cli(["run", "--config", TINY, "--workdir", str(tmp_path / "w")], env)
  assert proc.returncode == 2, proc.stderr[-1000:]
  err = [l for l in proc.stderr.splitlines() if l.startswith("deepwm run: error")]
  assert len(err) == 1 and f"coordinator 127.0.0.1:{port} cannot be reached" in err[0]
  assert "start process 0 first" in err[0]


# ----------------------------------------------------------------------------- in-process units

def test_check_batch_and_fsdp_rule():
  import jax
  mesh = parallel.make_mesh(data=1)
  parallel.check_batch(6, mesh)  # one device: any batch
  assert parallel.process_rows(mesh, 6) == slice(0, 6)
  assert parallel.fsdp_spec((3, 3, 64, 128), 4, 1000) == jax.sharding.PartitionSpec(
      None, None, None, "data")
  assert parallel.fsdp_spec((3, 3, 64, 128), 4, 10 ** 7) == jax.sharding.PartitionSpec()
  assert parallel.fsdp_spec((3, 5), 4, 0) == jax.sharding.PartitionSpec()  # nothing divides
  with pytest.raises(DeepwmError, match="mesh.data=3 but 1 devices"):
    parallel.make_mesh(data=3)


def test_distributed_settings_and_detection():
  env = {"DEEPWM_COORDINATOR": "10.0.0.1:1234", "DEEPWM_NUM_PROCESSES": "8",
         "DEEPWM_PROCESS_ID": "3"}
  d = parallel.distributed_settings(None, env)
  assert (d["coordinator"], d["num_processes"], d["process_id"]) == ("10.0.0.1:1234", 8, 3)
  with pytest.raises(DeepwmError, match="DEEPWM_NUM_PROCESSES='x' is not an integer"):
    parallel.distributed_settings(None, {"DEEPWM_NUM_PROCESSES": "x"})
  assert parallel.cluster_detected({}) is None
  assert parallel.cluster_detected({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None
  assert parallel.cluster_detected({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "16"}) == "slurm"
  assert parallel.cluster_detected({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == "tpu"
  # Nothing asks for several processes: a no-op (this pytest process stays single-process).
  assert parallel.initialize(None, {}) is False
  with pytest.raises(DeepwmError, match="not host:port"):
    parallel.initialize(None, {**env, "DEEPWM_COORDINATOR": "nohostport"})
  with pytest.raises(DeepwmError, match="process_id=9"):
    parallel.initialize(None, {**env, "DEEPWM_PROCESS_ID": "9"})
  with socket.socket() as s:  # process 0 cannot serve on a port that is taken
    s.bind(("", 0))
    s.listen()
    taken = s.getsockname()[1]
    with pytest.raises(DeepwmError, match=f"port {taken}"):
      parallel.initialize(None, {"DEEPWM_COORDINATOR": f"127.0.0.1:{taken}",
                                 "DEEPWM_NUM_PROCESSES": "2", "DEEPWM_PROCESS_ID": "0"})
