"""deepwm_jax: box-free model watermarks for image-processing networks, in JAX/Flax."""

__version__ = "0.1.0"

from deepwm_jax.errors import DeepwmError  # noqa: E402


def load_kit(path):
  """Loads a verification kit (see `deepwm_jax.kit.Kit`)."""
  from deepwm_jax import kit
  return kit.load_kit(path)
