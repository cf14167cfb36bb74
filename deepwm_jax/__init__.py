"""deepwm_jax: box-free model watermarks for image-processing networks, in JAX/Flax."""

__version__ = "0.1.0"

from deepwm_jax.errors import DeepwmError  # noqa: E402


def load_kit(path):
  """Loads a verification kit (see `deepwm_jax.kit.Kit`)."""
  from deepwm_jax import kit
  return kit.load_kit(path)


def protect(model, inputs, workdir, config=None, overrides=None, log=print):
  """Protects the owner's model (a callable, or a folder of its outputs) on the owner's inputs
  (a folder or an array) and returns the kit; see `deepwm_jax.owner`. `config` defaults to
  'keyed' (owner.DEFAULT_CONFIG)."""
  from deepwm_jax import owner
  return owner.protect(model, inputs, workdir, config or owner.DEFAULT_CONFIG, overrides, log)


def __getattr__(name):
  # `deepwm_jax.api` (a notebook's helpers) without importing JAX at `import deepwm_jax`.
  if name == "api":
    import importlib
    return importlib.import_module("deepwm_jax.api")
  raise AttributeError(f"module 'deepwm_jax' has no attribute {name!r}")
