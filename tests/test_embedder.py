"""The embedder architectures: the reference U-Net and the translation-equivariant CNN."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepwm_jax import config, models
from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import stage1


def _cfg(arch):
  cfg = config.base_config()
  cfg.data.image_size, cfg.data.channels = 16, 3
  cfg.embedder.update(arch=arch, ngf=8, depth=4)
  return cfg


@pytest.mark.parametrize("arch", ["unet", "cnn"])
def test_residual_embedder_starts_at_identity(arch):
  cfg = _cfg(arch)
  w = np.random.default_rng(0).uniform(0, 1, (16, 16, 3)).astype(np.float32)
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), w)
  x = jnp.asarray(np.random.default_rng(1).uniform(0.1, 0.9, (2, 16, 16, 3)), jnp.float32)
  out = models.embedder(cfg).apply(state["embedder"], x, jnp.asarray(w))
  np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-6)


@pytest.mark.parametrize("arch", ["unet", "cnn"])
def test_only_the_cnn_embedder_ignores_the_watermark_and_position(arch):
  """The CNN's residual depends on local content: the same content shifted gives the same
  residual shifted (away from the border; its instance norm sees the whole image, hence a
  tolerance), and the condition (w) changes nothing. The U-Net's does not."""
  cfg = _cfg(arch)
  H = models.embedder(cfg)
  rng = np.random.default_rng(2)
  variables = models.init_variables(H, jax.random.PRNGKey(3), jnp.zeros((1, 16, 16, 3)),
                                    jnp.zeros((16, 16, 3)))  # random last layer: B' != B
  x = jnp.asarray(rng.uniform(0.2, 0.8, (1, 16, 16, 3)), jnp.float32)
  w1, w2 = (jnp.asarray(rng.uniform(0, 1, (16, 16, 3)), jnp.float32) for _ in range(2))
  residual = H.apply(variables, x, w1) - x
  same_w = float(jnp.max(jnp.abs(H.apply(variables, x, w2) - x - residual)))
  xs = jnp.roll(x, (3, 2), axis=(1, 2))
  # depth 4: receptive field radius 4; pixels >= 4 + shift from every border see no padding
  # (measured: the CNN moved by 4% of its residual, the instance norm; the U-Net by > 20%).
  moved = (H.apply(variables, xs, w1) - xs)[:, 7:-4, 6:-4] - residual[:, 4:-7, 4:-6]
  scale = float(jnp.max(jnp.abs(residual)))
  assert scale > 1e-4
  if arch == "cnn":
    assert same_w == 0.0 and float(jnp.max(jnp.abs(moved))) < 0.1 * scale
  else:
    assert same_w > 0.01 * scale and float(jnp.max(jnp.abs(moved))) > 0.2 * scale


def test_unknown_embedder_arch_is_refused():
  cfg = _cfg("resnet")
  with pytest.raises(DeepwmError, match="embedder.arch"):
    config.validate(cfg)


def _configs(*names):
  """Shipped configs by name ('quickstart', 'studies/quickstart_cnn')."""
  return [config.load(n) for n in names]


@pytest.mark.parametrize("base_name, cnn_name",
                         [("quickstart", "studies/quickstart_cnn"),
                          ("quickstart_payload", "studies/quickstart_payload_cnn")])
def test_cnn_configs_change_only_the_embedder(base_name, cnn_name):
  base, cnn = _configs(base_name, cnn_name)
  config.validate(cnn)
  assert (cnn.embedder.arch, cnn.embedder.ngf, base.embedder.arch) == ("cnn", 32, "unet")
  cnn.embedder = base.embedder
  assert cnn.to_dict() == base.to_dict()


def test_quickstart_cnn_s2_adds_only_a_cnn_surrogate_to_stage2():
  base, s2 = _configs("studies/quickstart_cnn", "studies/quickstart_cnn_s2")
  config.validate(s2)
  assert [s.arch for s in config.stage2_surrogates(s2).values()] == ["unet", "cnn"]
  assert tuple(base.attack.extra_surrogate_archs) == ()
  s2.attack.extra_surrogate_archs = ()
  assert s2.to_dict() == base.to_dict()


def test_stage1_trains_the_cnn_embedder(tiny_cfg):
  """Two real stage-1 steps with H = the CNN: finite losses, and H moves off the identity."""
  cfg = tiny_cfg.copy_and_resolve_references()
  cfg.embedder.update(arch="cnn", depth=3)
  s, c = cfg.data.image_size, cfg.data.channels
  w = np.random.default_rng(4).uniform(0, 1, (s, s, c)).astype(np.float32)
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), w)
  step = stage1.make_step(cfg, w, np.ones_like(w))  # jitted
  rng = np.random.default_rng(5)
  batch = {k: jnp.asarray(rng.uniform(0, 1, (cfg.stage1.batch, s, s, c)), jnp.float32)
           for k in ("a", "b")}
  last = models.embedder_last_layer(cfg)
  assert last == "conv2" and not np.any(state["embedder"]["params"]["body"][last]["kernel"])
  for k in range(2):
    state, metrics = step(state, batch, jax.random.PRNGKey(k))
  assert all(np.isfinite(float(v)) for v in jax.tree.leaves(metrics))
  assert np.any(np.asarray(state["embedder"]["params"]["body"][last]["kernel"]))


def test_quickstart_band_is_the_s2_kit_with_a_band_weak_copies_and_longer_stage2():
  """quickstart_band writes out the two-family kit's changes itself (one parent, quickstart):
  it must still be studies/quickstart_cnn_s2 plus exactly the band changes."""
  s2, band = _configs("studies/quickstart_cnn_s2", "quickstart_band")
  config.validate(band)
  assert band.stage1.fidelity_band.weight == 1.0 and s2.stage1.fidelity_band.weight == 0.0
  assert (band.stage1.weights.fidelity, band.stage1.weights.fidelity_ssim) == (0.025, 2.0)
  assert (s2.stage1.weights.fidelity, s2.stage1.weights.fidelity_ssim) == (0.1, 8.0)
  assert (band.stage2.weak_copies, band.stage2.steps, band.evaluate.per_image_fpr) == (0.25, 1600,
                                                                                      0.001)
  band.stage1.fidelity_band.weight = 0.0
  band.stage1.weights = s2.stage1.weights
  band.stage2.update(weak_copies=s2.stage2.weak_copies, steps=s2.stage2.steps)
  band.evaluate.per_image_fpr = s2.evaluate.per_image_fpr
  assert band.to_dict() == s2.to_dict()


def test_quickstart_band_specific_is_the_band_kit_absorbed_into_m_prime():
  band, spec = _configs("quickstart_band", "quickstart_band_specific")
  config.validate(spec)
  assert (band.protect.strategy, spec.protect.strategy, spec.protect.absorb.steps) == (
      "agnostic", "specific", 250)
  spec.protect.strategy = band.protect.strategy
  spec.protect.absorb.steps = band.protect.absorb.steps
  assert spec.to_dict() == band.to_dict()


def test_a_started_embedder_adds_the_watermark_at_its_gain_from_step_0():
  """embedder.start: at init B' = B + start * (2 w - 1), wherever B leaves room (no clip);
  the gain is a parameter that training can move, and start = 0 adds no parameter."""
  cfg = _cfg("unet")
  cfg.embedder.start = 0.01
  w = (np.random.default_rng(0).uniform(0, 1, (16, 16, 3)) > 0.5).astype(np.float32)
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), w)
  assert float(state["embedder"]["params"]["start_gain"]) == 1.0
  x = jnp.asarray(np.random.default_rng(1).uniform(0.1, 0.9, (2, 16, 16, 3)), jnp.float32)
  out = models.embedder(cfg).apply(state["embedder"], x, jnp.asarray(w))
  np.testing.assert_allclose(np.asarray(out - x), 0.01 * (2 * w - 1)[None].repeat(2, 0),
                             atol=1e-6)
  cfg.embedder.start = 0.0
  assert "start_gain" not in stage1.init_state(cfg, jax.random.PRNGKey(0), w)["embedder"]["params"]


@pytest.mark.parametrize("arch, start, message", [
    ("unet", -0.01, "embedder.start=-0.01; use 0"), ("unet", 0.5, "embedder.start=0.5; use 0"),
    ("cnn", 0.01, "needs a U-Net embedder")])
def test_an_invalid_start_is_refused(arch, start, message):
  cfg = _cfg(arch)
  cfg.embedder.start = start
  with pytest.raises(DeepwmError, match=message):
    config.validate(cfg)


def test_the_psnr_floor_holds_each_image_and_leaves_weaker_ones_alone():
  """embedder.psnr_floor: an image whose residual is under the floor's PSNR is scaled to it
  exactly, a weaker one is untouched, and the output stays in [0, 1]."""
  cfg = _cfg("unet")
  cfg.embedder.start = 0.05  # a residual of about 26 dB at init, which the floor must cut
  w = (np.random.default_rng(0).uniform(0, 1, (16, 16, 3)) > 0.5).astype(np.float32)
  x = jnp.asarray(np.random.default_rng(1).uniform(0.1, 0.9, (2, 16, 16, 3)), jnp.float32)
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), w)

  def psnr(floor):
    cfg.embedder.psnr_floor = floor
    out = np.asarray(models.embedder(cfg).apply(state["embedder"], x, jnp.asarray(w)))
    assert out.min() >= 0.0 and out.max() <= 1.0
    return -10 * np.log10(np.mean((out - np.asarray(x)) ** 2, axis=(1, 2, 3)))

  free = psnr(0.0)
  assert np.all(free < 30)
  np.testing.assert_allclose(psnr(35.0), 35.0, atol=1e-3)
  np.testing.assert_allclose(psnr(20.0), free, atol=1e-4)   # already above 20 dB: untouched


@pytest.mark.parametrize("floor", [-1.0, 10.0, 100.0])
def test_an_invalid_psnr_floor_is_refused(floor):
  cfg = _cfg("unet")
  cfg.embedder.psnr_floor = floor
  with pytest.raises(DeepwmError, match="embedder.psnr_floor="):
    config.validate(cfg)


def test_the_psnr_floor_passes_finite_gradients_at_a_zero_residual():
  """H's last layer starts at zero: B' = B at step 0, where the floor must not make NaNs."""
  g = jax.grad(lambda r: jnp.sum(models.floor_gain(r, 40.0) * r))(jnp.zeros((2, 8, 8, 3)))
  assert np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_allclose(np.asarray(g), 1.0)
