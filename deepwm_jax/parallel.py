"""Devices: the mesh, where arrays live on it, and the processes of a multi-host run.

Every trainer runs data-parallel over a `jax.sharding.Mesh` with one axis, `data`: the batch is
split over it and the state is replicated, or with `mesh.fsdp` its large arrays are split over
the same axis (FSDP / ZeRO-3 style: XLA gathers a parameter where a layer needs it). One jitted
step with explicit in/out shardings is what `pmap` became (ARCHITECTURE.md). On one device all
of this is the identity and results are those of a plain `jax.jit`.

Multi-host: `initialize(cfg)` starts `jax.distributed` before any JAX work (auto-detected on
SLURM and TPU pods, an explicit coordinator otherwise); every process builds only its own rows
of each global batch (`global_batch`); only process 0 writes reports, logs and the kit
(`is_primary`); all processes take part in orbax checkpoints.

Config (defaults in `deepwm_jax.config.base_config`):
  mesh.data            devices on the data axis; 0 = all devices of all processes
  mesh.fsdp            split large parameters and optimizer moments over the data axis
  mesh.fsdp_min_size   arrays with fewer elements stay replicated (not worth a gather)
  distributed.mode     'auto' (coordinator if given, else SLURM/TPU-pod detection), 'on', 'off'
  distributed.coordinator / num_processes / process_id / timeout
Environment variables override the distributed.* keys (launch/README.md): DEEPWM_DISTRIBUTED,
DEEPWM_COORDINATOR, DEEPWM_NUM_PROCESSES, DEEPWM_PROCESS_ID, DEEPWM_INIT_TIMEOUT.
"""
import math
import os
import socket
import time
from typing import Callable, Mapping

import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepwm_jax.errors import DeepwmError

DATA = "data"
MEMBER = "member"

MESH_DEFAULTS = dict(data=0, fsdp=False, fsdp_min_size=2 ** 18)
DISTRIBUTED_DEFAULTS = dict(mode="auto", coordinator="", num_processes=0, process_id=-1,
                            timeout=300)


def _section(cfg, name: str, defaults: dict) -> dict:
  got = cfg.get(name) if cfg is not None else None
  return {**defaults, **(dict(got) if got else {})}


# ----------------------------------------------------------------------------- mesh

def make_mesh(cfg=None, *, data: int | None = None, devices=None) -> Mesh:
  """The data-parallel mesh: `data` devices (0/None: all) along the axis 'data'.

  Fewer devices than exist is allowed in one process (benchmarks scale 1, 2, 4 devices); a
  multi-process run must use every device, since each process feeds its own.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = _section(cfg, "mesh", MESH_DEFAULTS)["data"] if data is None else data
  n = n or len(devices)
  if n < 1 or n > len(devices):
    raise DeepwmError(f"mesh.data={n} but {len(devices)} devices are visible; set mesh.data to "
                      f"0 (all devices) or a number from 1 to {len(devices)}")
  if n < len(devices) and jax.process_count() > 1:
    raise DeepwmError(f"mesh.data={n} leaves devices unused in a {jax.process_count()}-process "
                      f"run; set mesh.data=0 so every process feeds its devices")
  return Mesh(mesh_utils.create_device_mesh((n,), devices[:n]), (DATA,))


def data_shards(mesh: Mesh) -> int:
  return int(mesh.shape[DATA])


def check_batch(batch: int, mesh: Mesh, what: str = "batch") -> None:
  """Every data shard gets the same number of rows: the global batch must divide evenly."""
  n = data_shards(mesh)
  if batch % n:
    fix = n * max(1, round(batch / n))
    raise DeepwmError(f"{what}={batch} cannot be split over {n} devices; use a multiple of "
                      f"{n} (e.g. --config.{what}={fix}) or set mesh.data to a divisor of it")


def check_config_batches(cfg, mesh: Mesh) -> None:
  """All batch sizes of a protection run, checked before any work starts."""
  check_batch(cfg.stage1.batch, mesh, "stage1.batch")
  check_batch(cfg.stage2.batch, mesh, "stage2.batch")
  for name in ("task", "attack.surrogate", "attack.null", "evaluate.surrogate",
               "evaluate.null"):
    spec = cfg
    for k in name.split("."):
      spec = spec[k]
    if name != "task" or cfg.task.source == "train":
      check_batch(spec.batch, mesh, f"{name}.batch")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis, the rest whole."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple, shards: int, min_size: int) -> P:
  """Splits the largest dimension divisible by the shard count; small arrays stay whole."""
  if shards == 1 or math.prod(shape) < min_size:
    return P()
  fits = [d for d in range(len(shape)) if shape[d] % shards == 0]
  if not fits:
    return P()
  d = max(fits, key=lambda i: (shape[i], i))  # ties: the last dim (output channels of HWIO)
  return P(*[DATA if i == d else None for i in range(len(shape))])


def state_shardings(mesh: Mesh, state, cfg=None, *, fsdp: bool | None = None):
  """A NamedSharding per leaf: replicated, or FSDP-split where `mesh.fsdp` is on.

  The rule depends on a leaf's shape only, so Adam's moments land where their parameter does.
  """
  m = _section(cfg, "mesh", MESH_DEFAULTS)
  fsdp = m["fsdp"] if fsdp is None else fsdp
  n = data_shards(mesh)

  def one(leaf):
    shape = np.shape(leaf)
    spec = fsdp_spec(shape, n, m["fsdp_min_size"]) if fsdp else P()
    return NamedSharding(mesh, spec)
  return jax.tree.map(one, state)


def to_host(tree):
  """NumPy copies of a pytree of (possibly multi-process) arrays: the full value everywhere."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(one, tree)


def place(tree, shardings):
  """Global arrays with `shardings` from host or device values that are the same in every
  process (each process only copies the pieces its own devices hold)."""
  def one(x, s):
    if isinstance(x, jax.Array) and x.sharding == s:
      return x
    if isinstance(x, jax.Array) and x.is_fully_addressable and jax.process_count() == 1:
      return jax.device_put(x, s)
    host = to_host(x)
    return jax.make_array_from_callback(host.shape, s, lambda index: host[index])
  return jax.tree.map(one, tree, shardings)


def local_copy(tree):
  """The tree on this process's first device: for inference between stages, which every
  process runs on its own inputs, and for the kit."""
  dev = jax.local_devices()[0]
  return jax.device_put(to_host(tree), dev)


def process_rows(mesh: Mesh, batch: int) -> slice:
  """The rows of a global batch that this process's devices hold (all rows in one process)."""
  check_batch(batch, mesh)
  index_map = batch_sharding(mesh).addressable_devices_indices_map((batch,))
  spans = sorted({(idx[0].start or 0, batch if idx[0].stop is None else idx[0].stop)
                  for idx in index_map.values()})
  start, stop = spans[0][0], spans[-1][1]
  if sum(b - a for a, b in spans) != stop - start:
    raise DeepwmError("this process's devices hold non-contiguous rows of the data axis; "
                      "launch one process per host (or per GPU) with its devices in order")
  return slice(start, stop)


def global_batch(mesh: Mesh, local: Mapping[str, np.ndarray], batch: int) -> dict:
  """Global arrays of `batch` rows from this process's rows (`process_rows`) of each array."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(x),
                                                    (batch,) + np.shape(x)[1:])
          for k, x in local.items()}


def shard_step(step_fn: Callable, mesh: Mesh, state_sharding) -> Callable:
  """Re-jits a training step (made by `train.common.jit_step`) with explicit shardings: state
  as `state_sharding`, batch split over 'data', key and metrics replicated. Without explicit
  outputs XLA may return the state laid out differently, and the next call would recompile."""
  from deepwm_jax.models import layers
  fn = getattr(step_fn, "__wrapped__", step_fn)
  rep = replicated(mesh)
  return jax.jit(fn, in_shardings=(state_sharding, batch_sharding(mesh), rep),
                 out_shardings=(state_sharding, rep),
                 compiler_options=layers.cpu_compiler_options())


# ----------------------------------------------------------------------------- the zoo

def member_mesh(n_members: int, devices=None) -> Mesh:
  """A (member, data) mesh for stacked models: as many devices on 'member' as divide both the
  member count and the device count, the rest on 'data'."""
  devices = list(jax.devices() if devices is None else devices)
  m = math.gcd(n_members, len(devices))
  return Mesh(mesh_utils.create_device_mesh((m, len(devices) // m), devices), (MEMBER, DATA))


def member_sharding(mesh: Mesh, tree, *, batch: bool = False):
  """Shardings for a pytree whose leaves are stacked along a leading member axis: that axis on
  'member' (where it divides), and with `batch` the next axis (the batch) on 'data'."""
  m = mesh.shape.get(MEMBER, 1)
  d = mesh.shape.get(DATA, 1)

  def one(leaf):
    shape = np.shape(leaf)
    spec = [MEMBER if shape and shape[0] % m == 0 and m > 1 else None]
    if batch and len(shape) > 1:
      spec.append(DATA if shape[1] % d == 0 and d > 1 else None)
    return NamedSharding(mesh, P(*spec))
  return jax.tree.map(one, tree)


# ----------------------------------------------------------------------------- processes

def is_primary() -> bool:
  """Process 0 writes reports, logs, the kit and the workdir's config."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def share_from_primary(x: np.ndarray) -> np.ndarray:
  """Process 0's value of `x` in every process (a value drawn at random in each, e.g. a key)."""
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.broadcast_one_to_all(x))


def distributed_settings(cfg=None, env: Mapping[str, str] | None = None) -> dict:
  """distributed.* from the config, overridden by the DEEPWM_* environment (launchers)."""
  env = os.environ if env is None else env
  d = _section(cfg, "distributed", DISTRIBUTED_DEFAULTS)
  names = {"mode": "DEEPWM_DISTRIBUTED", "coordinator": "DEEPWM_COORDINATOR",
           "num_processes": "DEEPWM_NUM_PROCESSES", "process_id": "DEEPWM_PROCESS_ID",
           "timeout": "DEEPWM_INIT_TIMEOUT"}
  for key, var in names.items():
    if env.get(var, "") != "":
      raw = env[var]
      try:
        d[key] = raw if key in ("mode", "coordinator") else int(raw)
      except ValueError:
        raise DeepwmError(f"{var}={raw!r} is not an integer; set it to a number") from None
  if d["mode"] not in ("auto", "on", "off"):
    raise DeepwmError(f"distributed.mode={d['mode']!r}; use auto, on or off")
  return d


def cluster_detected(env: Mapping[str, str] | None = None) -> str | None:
  """'slurm' / 'tpu' / 'mpi' when this process was started as one of several by a cluster
  launcher that jax.distributed detects by itself."""
  env = os.environ if env is None else env
  if "SLURM_STEP_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS",
                                                                            "1"))) > 1:
    return "slurm"
  if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
    return "tpu"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "mpi"
  return None


def initialize(cfg=None, env: Mapping[str, str] | None = None) -> bool:
  """Starts jax.distributed when this is one process of several; True when it did (or had).

  Must run before any JAX computation. An explicit coordinator that cannot be reached within
  `timeout` seconds is a DeepwmError (jax itself would abort the process without a message).
  """
  if jax.distributed.is_initialized():
    return True
  d = distributed_settings(cfg, env)
  if d["mode"] == "off":
    return False
  kwargs = {}
  if d["coordinator"]:
    n, pid = d["num_processes"], d["process_id"]
    if n < 1 or not 0 <= pid < n:
      raise DeepwmError(f"coordinator {d['coordinator']} given with num_processes={n} and "
                        f"process_id={pid}; set DEEPWM_NUM_PROCESSES>=1 and DEEPWM_PROCESS_ID "
                        f"in 0..N-1 (or distributed.num_processes / process_id)")
    if n == 1:
      return False
    host, port = _split_address(d["coordinator"])
    if pid == 0:
      _check_port_free(host, port)
    else:
      _wait_for_coordinator(host, port, d["timeout"])
    kwargs = dict(coordinator_address=d["coordinator"], num_processes=n, process_id=pid)
  elif d["mode"] == "auto" and cluster_detected(env) is None:
    return False
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=int(d["timeout"]))
  except (RuntimeError, ValueError) as e:
    first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    raise DeepwmError(f"jax.distributed could not start ({first}); give the coordinator "
                      f"explicitly (DEEPWM_COORDINATOR=host:port, DEEPWM_NUM_PROCESSES, "
                      f"DEEPWM_PROCESS_ID) and start it before any other JAX work") from None
  return True


def _split_address(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise DeepwmError(f"coordinator address {address!r} is not host:port; give e.g. "
                      f"10.0.0.1:1234 (process 0's host and a free port)")
  return host, int(port)


def _check_port_free(host: str, port: int) -> None:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(("", port))
    except OSError as e:
      raise DeepwmError(f"process 0 cannot serve the coordinator on port {port} ({e.strerror});"
                        f" choose another free port in DEEPWM_COORDINATOR") from None


def _wait_for_coordinator(host: str, port: int, timeout: float) -> None:
  """jax aborts the whole process (SIGABRT, no Python exception) when the coordinator stays
  unreachable; probing the port first turns that into an error that says what to do."""
  deadline = time.time() + timeout
  while True:
    try:
      with socket.create_connection((host, port), timeout=2):
        return
    except OSError as e:
      if time.time() >= deadline:
        raise DeepwmError(
            f"coordinator {host}:{port} cannot be reached after {timeout:g} s ({e.strerror or e})"
            f"; start process 0 first and check DEEPWM_COORDINATOR (process 0's host:port) and "
            f"the firewall, or raise DEEPWM_INIT_TIMEOUT") from None
      time.sleep(0.5)


def describe(mesh: Mesh) -> str:
  return (f"{data_shards(mesh)} device(s) on the data axis ({jax.devices()[0].platform}), "
          f"{jax.process_count()} process(es)")


def as_global_batch(mesh: Mesh, batch):
  """A batch as global arrays split over 'data'. Leaves that already are stay; others are the
  full global batch, the same in every process (any plain sampler), of which each process
  passes on only its own rows."""
  sharding = batch_sharding(mesh)

  def one(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    n = np.shape(x)[0]
    if jax.process_count() == 1:
      check_batch(n, mesh)
      return jax.device_put(x, sharding)
    rows = process_rows(mesh, n)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x[rows]), np.shape(x))
  return jax.tree.map(one, batch)
