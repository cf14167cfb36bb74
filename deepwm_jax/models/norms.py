"""Normalisation layers by name, with PyTorch's defaults (eps 1e-5, BN momentum 0.1)."""
import flax.linen as nn
import jax

from deepwm_jax.models import layers


class _Norm(nn.Module):
  kind: str

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.kind == "batch":
      # Reference init: BatchNorm scale N(1, 0.02).
      scale_init = lambda k, s, d=None: 1.0 + 0.02 * jax.random.normal(k, s)
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                          scale_init=scale_init)(x)
    if self.kind == "instance":
      if jax.default_backend() == "cpu":  # same params and values; faster gradients on CPU
        return layers.InstanceNorm(epsilon=1e-5, name="InstanceNorm_0")(x)
      return nn.InstanceNorm(epsilon=1e-5, use_scale=True, use_bias=True)(x)
    if self.kind == "instance_noaffine":
      return nn.InstanceNorm(epsilon=1e-5, use_scale=False, use_bias=False)(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown norm {self.kind!r}; use batch, instance, instance_noaffine or none")


def make_norm(kind: str, name: str | None = None) -> nn.Module:
  return _Norm(kind, name=name)
