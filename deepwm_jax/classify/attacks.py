"""Removal attacks on a watermarked classifier: global magnitude pruning, fine-tuning on clean
data (several rates and lengths) and query modification (an autoencoder purifier trained on
clean data, placed in front of the model)."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax

from deepwm_jax.classify import models
from deepwm_jax.config import optimizer
from deepwm_jax.train import optim


def prune(params, fraction: float):
  """Zeroes the `fraction` of all kernel weights (conv and dense, pooled) smallest in
  magnitude; biases are kept, as in global magnitude pruning."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  kernels = [np.abs(np.asarray(v)).ravel() for p, v in leaves if _is_kernel(p)]
  if not kernels or fraction <= 0:
    return params
  threshold = np.quantile(np.concatenate(kernels), fraction)

  def cut(path, v):
    v = np.asarray(v)
    return np.where(np.abs(v) <= threshold, 0, v).astype(v.dtype) if _is_kernel(path) else v

  return jax.tree_util.tree_map_with_path(cut, params)


def _is_kernel(path) -> bool:
  return str(getattr(path[-1], "key", path[-1])) == "kernel"


def zero_fraction(params) -> float:
  """Fraction of kernel weights that are exactly zero."""
  ks = [np.asarray(v).ravel() for p, v in jax.tree_util.tree_leaves_with_path(params)
        if _is_kernel(p)]
  allk = np.concatenate(ks)
  return float(np.mean(allk == 0))


def finetune_optimizer() -> optax.GradientTransformation:
  """Adam at rate 1: each fine-tuned member's own rate is its lr_mult (train.make_step)."""
  return optim.make_optimizer(ml_collections.ConfigDict(optimizer(1.0, "constant", b1=0.9)), 1)


# ----------------------------------------------------------------------------- purifier


class Purifier(nn.Module):
  """A small convolutional autoencoder: the attacker's input filter (query modification)."""
  channels: int
  width: int = 16

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    h = x_BxHxWxC
    for i, w in enumerate((self.width, self.width // 2)):
      h = nn.max_pool(nn.relu(models.Conv3x3(w, name=f"enc{i}")(h)), (2, 2), (2, 2))
    for i in range(2):
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = nn.relu(models.Conv3x3(self.width, name=f"dec{i}")(h))
    return nn.sigmoid(models.Conv3x3(self.channels, name="out")(h))


def purifier_state(net: Purifier, x_spec, optimizer, seed: int) -> dict:
  params = models.init_params(net, x_spec, seed)["params"]
  return {"params": params, "opt": jax.jit(optimizer.init)(params), "lr_scale": jnp.ones(())}


def make_purifier_step(net: Purifier, optimizer):
  @jax.jit
  def step(state, batch, key):
    del key
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean((net.apply({"params": p}, batch["x"]) - batch["x"]) ** 2))(
            state["params"])
    updates, opt = optimizer.update(grads, state["opt"], state["params"])
    updates = jax.tree.map(lambda u: u * state["lr_scale"], updates)
    return {**state, "params": optax.apply_updates(state["params"], updates), "opt": opt}, \
        {"loss": loss, "psnr": -10 * jnp.log10(loss + 1e-10)}
  return step


def purify(net: Purifier, params, x: np.ndarray, batch: int = 256) -> np.ndarray:
  fn = _purify_fn(net)
  out = []
  for i in range(0, len(x), batch):
    chunk = np.asarray(x[i:i + batch], np.float32)
    pad = batch - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
    out.append(np.asarray(fn(params, jnp.asarray(chunk)))[:batch - pad])
  return np.concatenate(out)


_PURIFY_FNS: dict = {}


def _purify_fn(net):
  if net not in _PURIFY_FNS:
    _PURIFY_FNS[net] = jax.jit(lambda p, x: net.apply({"params": p}, x))
  return _PURIFY_FNS[net]


def lengths(steps: Sequence[int]) -> list[int]:
  return sorted(set(int(s) for s in steps))
