"""The classifier: a small CNN with one additional output (the watermark class), and the
helpers that treat several independently trained copies as one stacked pytree."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Conv3x3(nn.Module):
  """3x3 'SAME' convolution as one matmul over the nine shifted copies of the input.

  The copies of a model are trained one after another inside one jitted step (`lax.map`, see
  train.py). Measured on a 2-core CPU at 16 px: XLA's convolution inside that loop ran ~15x
  slower than this, and vmapping XLA's convolution over 23 copies ~3.6x slower than this.
  The kernel is stored HWIO like flax's, so checkpoints do not depend on the implementation.
  """
  features: int

  @nn.compact
  def __call__(self, x_BxHxWxC):
    c = x_BxHxWxC.shape[-1]
    kernel = self.param("kernel", nn.initializers.he_normal(), (3, 3, c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    h, w = x_BxHxWxC.shape[1:3]
    xp = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols_BxHxWx9C = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)],
                                    axis=-1)
    return cols_BxHxWx9C @ kernel.reshape(9 * c, self.features) + bias


class Classifier(nn.Module):
  """conv-relu-maxpool blocks, then a hidden dense layer; logits for num_outputs classes."""
  num_outputs: int
  widths: Sequence[int] = (16, 32)
  hidden: int = 64

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    x = x_BxHxWxC
    for i, w in enumerate(self.widths):
      x = nn.relu(Conv3x3(w, name=f"conv{i}")(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Dense(self.hidden, name="hidden")(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_outputs, name="logits")(x)


def classifier(cfg) -> Classifier:
  """The network of a classify config; the extra output is the watermark class."""
  return Classifier(cfg.data.num_classes + 1, tuple(cfg.model.widths), cfg.model.hidden)


def example_input(cfg, n: int = 1) -> jax.ShapeDtypeStruct:
  s, c = cfg.data.image_size, cfg.data.channels
  return jax.ShapeDtypeStruct((n, s, s, c), jnp.float32)


def init_params(model: nn.Module, x_spec, seed: int) -> dict:
  """He-normal kernels, zero biases, drawn with NumPy from `eval_shape` shapes.

  Like `deepwm_jax.models.init_variables` this skips flax's jitted init (a compile per network
  on CPU); unlike it, it uses He scaling, which a ReLU classifier needs more than the N(0, 0.02)
  of the image-to-image reference networks.
  """
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x_spec)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


# Stacking and slicing run in NumPy: as eager JAX ops they compiled one small kernel per
# parameter shape, which was most of a tiny run's time on CPU.
def stack(trees: list) -> dict:
  """Copies with one architecture -> one pytree with a leading member axis."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def member(tree, i: int):
  return jax.tree.map(lambda x: np.asarray(x)[i], jax.device_get(tree))


def num_members(tree) -> int:
  return int(jax.tree.leaves(tree)[0].shape[0])
