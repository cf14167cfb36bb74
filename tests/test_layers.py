"""Conv layers against direct NumPy definitions of PyTorch's ops, and every impl against 'xla'."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepwm_jax.models import layers


@pytest.fixture(autouse=True)
def _full_precision_float32():
  """On a GPU, float32 convs and dots default to TF32 (about 3 significant digits), so two
  correct impls differed there by up to 1e-3 (H100, jax 0.11.2); these tests compare the
  algorithms, so they run at full float32 precision (no change on the CPU)."""
  with jax.default_matmul_precision("highest"):
    yield


def _np_conv2d(x, w, stride, padding, dilation):
  """torch.nn.functional.conv2d by its definition, NHWC input, HWIO kernel."""
  k = w.shape[0]
  xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  h_out = (xp.shape[1] - dilation * (k - 1) - 1) // stride + 1
  w_out = (xp.shape[2] - dilation * (k - 1) - 1) // stride + 1
  y = np.zeros((x.shape[0], h_out, w_out, w.shape[3]), np.float64)
  for i in range(h_out):
    for j in range(w_out):
      for a in range(k):
        for b in range(k):
          pix = xp[:, i * stride + a * dilation, j * stride + b * dilation, :]
          y[:, i, j, :] += pix @ w[a, b]
  return y


def _np_conv_transpose2d(x, w, stride, padding):
  """torch.nn.functional.conv_transpose2d by its definition: every input pixel scatters
  kernel * value into the output at o = stride * i - padding + k (HWIO, I = input channels)."""
  k = w.shape[0]
  n, h, wd, _ = x.shape
  h_out = (h - 1) * stride - 2 * padding + k
  w_out = (wd - 1) * stride - 2 * padding + k
  y = np.zeros((n, h_out, w_out, w.shape[3]), np.float64)
  for i in range(h):
    for j in range(wd):
      for a in range(k):
        for b in range(k):
          oi, oj = stride * i - padding + a, stride * j - padding + b
          if 0 <= oi < h_out and 0 <= oj < w_out:
            y[:, oi, oj, :] += x[:, i, j, :] @ w[a, b]
  return y


def _rand(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CONV_CASES = [  # (kernel, stride, padding, dilation, size)
    (3, 1, 1, 1, 8), (3, 2, 1, 1, 8), (3, 1, 2, 2, 9), (3, 1, 4, 4, 12),
    (4, 2, 1, 1, 8), (1, 1, 0, 1, 5), (3, 2, 1, 1, 7),
    # tiny images, where 'auto' runs im2col + GEMM on CPU
    (3, 1, 1, 1, 2), (4, 2, 1, 1, 4), (3, 2, 1, 1, 3), (3, 1, 2, 2, 4),
]


@pytest.mark.parametrize("k,stride,padding,dilation,size", CONV_CASES)
def test_conv2d_xla_matches_numpy_definition(k, stride, padding, dilation, size):
  x, w = _rand((2, size, size, 3), 0), _rand((k, k, 3, 4), 1)
  y = layers.conv2d(jnp.asarray(x), jnp.asarray(w), stride, padding, dilation, "xla")
  np.testing.assert_allclose(np.asarray(y), _np_conv2d(x, w, stride, padding, dilation),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "subpixel"])
@pytest.mark.parametrize("size", [1, 4, 5])
def test_conv_transpose2d_matches_numpy_definition(impl, size):
  x, w = _rand((2, size, size, 3), 2), _rand((4, 4, 3, 5), 3)
  y = layers.conv_transpose2d(jnp.asarray(x), jnp.asarray(w), 2, 1, impl)
  assert y.shape == (2, 2 * size, 2 * size, 5)
  np.testing.assert_allclose(np.asarray(y), _np_conv_transpose2d(x, w, 2, 1),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,stride,padding", [(6, 2, 2), (8, 4, 2), (3, 1, 1), (2, 2, 0)])
def test_subpixel_other_exact_upsamplings_match_numpy(k, stride, padding):
  x, w = _rand((1, 3, 4, 2), 10), _rand((k, k, 2, 3), 11)
  y = layers.conv_transpose2d(jnp.asarray(x), jnp.asarray(w), stride, padding, "subpixel")
  np.testing.assert_allclose(np.asarray(y), _np_conv_transpose2d(x, w, stride, padding),
                             rtol=1e-5, atol=1e-5)


def test_subpixel_refuses_inexact_upsampling():
  with pytest.raises(ValueError, match="exact upsampling"):
    layers.conv_transpose2d(jnp.zeros((1, 2, 2, 1)), jnp.zeros((3, 3, 1, 1)), 2, 1, "subpixel")
  y = layers.conv_transpose2d(jnp.zeros((1, 2, 2, 1)), jnp.zeros((3, 3, 1, 1)), 2, 1, "auto")
  assert y.shape == (1, 3, 3, 1)  # auto falls back to the XLA path


def _value_and_grads(fn, x, w):
  """Output and gradients wrt input and kernel of a random projection of fn(x, w)."""
  y = fn(x, w)
  probe = jnp.asarray(_rand(y.shape, 7))
  grads = jax.grad(lambda x, w: jnp.sum(fn(x, w) * probe), argnums=(0, 1))(x, w)
  return (y,) + grads


def _assert_same(got, want):
  for g, r in zip(got, want):
    assert g.shape == r.shape
    scale = float(jnp.max(jnp.abs(r)))
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("impl", [i for i in layers.CONV_IMPLS if i != "xla"])
@pytest.mark.parametrize("k,stride,padding,dilation,size", CONV_CASES)
def test_conv2d_impls_match_xla_with_gradients(impl, k, stride, padding, dilation, size):
  x, w = jnp.asarray(_rand((2, size, size, 3), 4)), jnp.asarray(_rand((k, k, 3, 4), 5))
  conv = lambda impl: jax.jit(lambda x, w: layers.conv2d(x, w, stride, padding, dilation, impl))
  _assert_same(_value_and_grads(conv(impl), x, w), _value_and_grads(conv("xla"), x, w))


@pytest.mark.parametrize("impl", [i for i in layers.CONV_TRANSPOSE_IMPLS if i != "xla"])
@pytest.mark.parametrize("size", [1, 3, 6])
def test_conv_transpose2d_impls_match_xla_with_gradients(impl, size):
  x, w = jnp.asarray(_rand((2, size, size, 3), 6)), jnp.asarray(_rand((4, 4, 3, 5), 8))
  conv = lambda impl: jax.jit(lambda x, w: layers.conv_transpose2d(x, w, 2, 1, impl))
  _assert_same(_value_and_grads(conv(impl), x, w), _value_and_grads(conv("xla"), x, w))


@pytest.mark.parametrize("op", ["conv", "conv_transpose"])
@pytest.mark.parametrize("in_axes", [(0, 0), (None, 0), (0, None)])
def test_auto_vmapped_over_members_matches_xla_without_grouped_convs(op, in_axes):
  """The zoo vmaps whole training steps over members: 'auto' then runs one conv per member
  (no grouped conv); values and both gradients equal vmapped 'xla'."""
  k_members, c = 3, 8  # 8 channels: above PATCHES_MAX_CHANNELS, so XLA's conv per member
  x = jnp.asarray(_rand((k_members, 2, 6, 6, c), 12))
  k = 3 if op == "conv" else 4
  w = jnp.asarray(_rand((k_members, k, k, c, 5), 13))
  x, w = (x if in_axes[0] == 0 else x[0]), (w if in_axes[1] == 0 else w[0])
  probe = jnp.asarray(_rand((k_members, 2, 6, 6, 5) if op == "conv" else
                            (k_members, 2, 12, 12, 5), 14))

  def member(impl):
    def loss(x, w, p):
      y = (layers.conv2d(x, w, 1, 1, 1, impl) if op == "conv" else
           layers.conv_transpose2d(x, w, 2, 1, impl))
      return jnp.sum(y * p)
    return jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)), in_axes=(*in_axes, 0)))

  _assert_same(jax.tree.leaves(member("auto")(x, w, probe)),
               jax.tree.leaves(member("xla")(x, w, probe)))
  if jax.default_backend() == "cpu":  # elsewhere 'auto' is plain XLA: grouped convs are fine
    hlo = member("auto").lower(x, w, probe).compile().as_text()
    assert "convolution(" in hlo and "feature_group_count=3" not in hlo


def test_auto_is_plain_xla_off_cpu(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")  # also when the tests run on a GPU
  assert layers.resolve_conv_impl("auto", 3, 1, 1, 4) == "patches"
  assert layers.resolve_conv_impl("auto", 3, 1, 1, 64 * 64) == "xla"
  assert layers.resolve_conv_impl("auto", 3, 1, 1, 64 * 64, 3) == "patches"  # a first layer
  assert layers.resolve_conv_impl("auto", 3, 1, 1, 64 * 64, 16) == "xla"
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert layers.resolve_conv_impl("auto", 3, 1, 1) == "xla"
  assert layers.resolve_conv_impl("auto", 3, 1, 1, 4) == "xla"
  assert layers.resolve_conv_impl("auto", 3, 1, 1, 64 * 64, 3) == "xla"
  assert layers.resolve_conv_transpose_impl("auto", 4, 2, 1) == "xla"


def test_modules_keep_param_layout_across_impls():
  x = jnp.asarray(_rand((2, 6, 6, 3), 9))
  shapes = {}
  for impl in ("xla", "auto"):
    for name, mod in (("conv", layers.Conv(4, impl=impl)),
                      ("convT", layers.ConvTranspose(4, impl=impl))):
      params = mod.init(jax.random.key(0), x)
      shapes[name, impl] = jax.tree.map(jnp.shape, params)
      if impl == "auto":
        np.testing.assert_allclose(mod.apply(params, x),
                                   mod.clone(impl="xla").apply(params, x), rtol=1e-5, atol=1e-5)
  assert shapes["conv", "xla"] == shapes["conv", "auto"]
  assert shapes["convT", "xla"]["params"]["kernel"] == (4, 4, 3, 4)


def test_unknown_impl_is_a_clear_error():
  x, w = jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1))
  with pytest.raises(ValueError, match="unknown conv impl"):
    layers.conv2d(x, w, 1, 1, 1, "nope")
  with pytest.raises(ValueError, match="unknown conv_transpose impl"):
    layers.conv_transpose2d(x, jnp.zeros((4, 4, 1, 1)), 2, 1, "nope")


def test_cpu_compiler_options_keep_results(monkeypatch):
  x, w = jnp.asarray(_rand((2, 5, 5, 3), 12)), jnp.asarray(_rand((4, 4, 3, 2), 13))
  conv = lambda x, w: layers.conv_transpose2d(x, w, 2, 1, "auto")
  step = lambda x, w: _value_and_grads(conv, x, w)
  tuned = jax.jit(step, compiler_options=layers.cpu_compiler_options())
  _assert_same(tuned(x, w), jax.jit(step)(x, w))
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert layers.cpu_compiler_options() == {}


def test_add_bias_and_channel_sum_match_plain_add_with_gradients():
  y, b = jnp.asarray(_rand((3, 5, 4, 6), 14)), jnp.asarray(_rand((6,), 15))
  probe = jnp.asarray(_rand((3, 5, 4, 6), 16))
  fast = jax.value_and_grad(lambda y, b: jnp.sum(layers.add_bias(y, b) * probe), (0, 1))
  plain = jax.value_and_grad(lambda y, b: jnp.sum((y + b) * probe), (0, 1))
  (v1, g1), (v2, g2) = jax.jit(fast)(y, b), jax.jit(plain)(y, b)
  np.testing.assert_allclose(v1, v2, rtol=1e-6)
  _assert_same(g1, g2)
  np.testing.assert_allclose(layers.channel_sum(probe), np.sum(np.asarray(probe), (0, 1, 2)),
                             rtol=1e-5, atol=1e-5)


def test_auto_modules_match_xla_parameter_gradients(size=2):
  """Whole layers with bias, as training uses them: 'auto' (patches on the 2x2 image, the
  GEMV bias gradient, the sub-pixel transposed conv) against plain XLA, every gradient."""
  x = jnp.asarray(_rand((2, size, size, 3), 17))
  mods = {"conv": layers.Conv(4, 3, 1, 1), "down": layers.Conv(4, 4, 2, 1),
          "convT": layers.ConvTranspose(4)}
  for name, mod in mods.items():
    params = mod.init(jax.random.key(1), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias
    def loss(impl):
      return jax.jit(jax.value_and_grad(
          lambda p, x: jnp.sum(jnp.sin(mod.clone(impl=impl).apply(p, x))), (0, 1)))
    (v_auto, g_auto), (v_xla, g_xla) = loss("auto")(params, x), loss("xla")(params, x)
    np.testing.assert_allclose(v_auto, v_xla, rtol=1e-5, err_msg=name)
    _assert_same(jax.tree.leaves(g_auto), jax.tree.leaves(g_xla))


def test_instance_norm_matches_flax_with_gradients():
  """The CPU InstanceNorm: flax's parameter tree and values, outputs and every gradient."""
  import flax.linen as nn
  x = jnp.asarray(_rand((2, 5, 5, 3), 18))
  ours, flax_norm = layers.InstanceNorm(), nn.InstanceNorm(epsilon=1e-5)
  params = flax_norm.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == \
      jax.tree.map(jnp.shape, params)
  params = {"params": {"scale": params["params"]["scale"] + 0.3,
                       "bias": params["params"]["bias"] - 0.2}}
  probe = jnp.asarray(_rand(x.shape, 19))
  def grads(mod):
    return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(mod.apply(p, x) * probe), (0, 1)))(
        params, x)
  (v1, g1), (v2, g2) = grads(ours), grads(flax_norm)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  _assert_same(jax.tree.leaves(g1), jax.tree.leaves(g2))


def test_auto_conv_has_gradients_of_gradients():
  """A gradient penalty or meta-learning differentiates a gradient: the per-member conv's
  custom rules must not stop that (values equal XLA's conv)."""
  x, w = jnp.asarray(_rand((2, 6, 6, 8), 15)), jnp.asarray(_rand((3, 3, 8, 4), 16)) * 0.1

  def penalty(impl):
    inner = lambda w: jnp.sum(jnp.sin(layers.conv2d(x, w, 1, 1, 1, impl)))
    return jax.jit(jax.grad(lambda w: jnp.sum(jax.grad(inner)(w) ** 2)))

  _assert_same([penalty("auto")(w)], [penalty("xla")(w)])
