"""Test set-up: CPU only, a persistent XLA compilation cache shared by all tests (and the CLI
subprocesses they start), and one tiny protection run shared by the pipeline tests."""
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = os.path.join(tempfile.gettempdir(), "deepwm-jax-test-xla-cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.py")


@pytest.fixture(scope="session")
def tiny_cfg():
  from deepwm_jax import config
  return config.load(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_cfg):
  """One end-to-end run of every stage on the tiny config: (workdir, report, log lines)."""
  from deepwm_jax import pipeline
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  lines = []
  report = pipeline.run(tiny_cfg, workdir, log=lines.append)
  return workdir, report, lines
