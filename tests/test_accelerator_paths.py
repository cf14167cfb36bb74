"""The code paths an accelerator takes, traced on the CPU: 'auto' resolves to plain XLA convs
off the CPU, and compute_dtype='bfloat16' is meant for accelerators. A stage-1 step with both
failed on an H100 (the discriminator's last conv got a bfloat16 input and a float32 kernel);
tracing the steps with jax.eval_shape catches such dtype errors without compiling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepwm_jax.train import imitation, stage1


@pytest.fixture
def bf16_xla_cfg(tiny_cfg):
  cfg = tiny_cfg.copy_and_resolve_references()
  cfg.compute_dtype, cfg.conv_impl = "bfloat16", "xla"  # what 'auto' is on a GPU
  return cfg


def test_bfloat16_stage1_step_traces_on_the_xla_conv_path(bf16_xla_cfg):
  cfg = bf16_xla_cfg
  shape = (cfg.stage1.batch, cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
  w = np.ones(shape[1:], np.float32)
  state = stage1.init_state(cfg, jax.random.key(0), w)  # NumPy init of traced shapes: cheap
  batch = {"a": jax.ShapeDtypeStruct(shape, jnp.float32),
           "b": jax.ShapeDtypeStruct(shape, jnp.float32)}
  new_state, metrics = jax.eval_shape(stage1.make_step(cfg, w, w), state, batch,
                                      jax.random.key(1))
  # Parameters stay float32 (bfloat16 is the compute dtype only), losses are float32 scalars.
  assert jax.tree.map(lambda a: a.dtype, new_state["discriminator"]["params"]) == \
      jax.tree.map(lambda a: a.dtype, state["discriminator"]["params"])
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(metrics))


def test_bfloat16_surrogate_step_traces_on_the_xla_conv_path(bf16_xla_cfg):
  cfg = bf16_xla_cfg
  spec = cfg.attack.surrogate
  shape = (spec.batch, cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
  state = imitation.init_state(spec, cfg, jax.random.key(0), spec.steps)
  batch = {"x": jax.ShapeDtypeStruct(shape, jnp.float32),
           "y": jax.ShapeDtypeStruct(shape, jnp.float32)}
  new_state, _ = jax.eval_shape(imitation.make_step(spec, cfg, spec.steps), state, batch,
                                jax.random.key(1))
  assert {a.dtype for a in jax.tree.leaves(new_state["model"]["params"])} == {
      jnp.dtype(jnp.float32)}
