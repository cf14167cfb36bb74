"""The training loop's guard: a NaN loss or a fidelity collapse rolls back and lowers the rate."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import loop


def _toy(fail_at: set[int], metric="loss", collapse=False):
  """A tiny pure step (gradient descent on a quadratic) that misbehaves at given steps once."""
  failed = set()

  @jax.jit
  def update(state):
    p = state["p"] - 0.1 * state["lr_scale"] * 2 * state["p"]
    return {**state, "p": p, "step": state["step"] + 1}

  def step(state, batch, key):
    s = int(state["step"])
    state = update(state)
    value = jnp.sum(state["p"] ** 2)
    if s in fail_at and s not in failed:
      failed.add(s)
      value = jnp.asarray(-100.0) if collapse else jnp.asarray(jnp.nan)
    elif collapse:
      value = jnp.asarray(30.0)
    return state, {metric: value}

  state = {"p": jnp.ones(3), "step": jnp.zeros((), jnp.int32), "lr_scale": jnp.ones(())}
  return step, state


def test_nan_rolls_back_to_last_checkpoint_with_lower_rate(tmp_path):
  step, state = _toy({6})
  lines = []
  out = loop.run("toy", step, state, lambda s: None, 10, str(tmp_path), jax.random.PRNGKey(0),
                 log_every=1, ckpt_every=4, log=lines.append)
  assert int(out["step"]) == 10
  assert float(out["lr_scale"]) == pytest.approx(0.5)
  assert any("restored step 4" in l and "loss is nan" in l for l in lines)
  assert np.all(np.isfinite(np.asarray(out["p"])))


def test_fidelity_collapse_rolls_back(tmp_path):
  step, state = _toy({7}, metric="psnr", collapse=True)
  lines = []
  out = loop.run("toy", step, state, lambda s: None, 10, str(tmp_path), jax.random.PRNGKey(0),
                 log_every=1, ckpt_every=5, guard=loop.Guard(metric="psnr", drop=10, warmup=2),
                 log=lines.append)
  assert any("psnr collapsed" in l for l in lines)
  assert float(out["lr_scale"]) == pytest.approx(0.5)


def test_persistent_divergence_is_a_clear_error(tmp_path):
  step, state = _toy(set())

  def always_nan(state, batch, key):
    state, _ = step(state, batch, key)
    return state, {"loss": jnp.asarray(jnp.nan)}

  with pytest.raises(DeepwmError, match="diverged"):
    loop.run("toy", always_nan, state, lambda s: None, 10, str(tmp_path), jax.random.PRNGKey(0),
             log_every=1, ckpt_every=2, guard=loop.Guard(max_rollbacks=2), log=lambda m: None)
