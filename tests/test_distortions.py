"""The distortion layer on known inputs: each distortion against the real operation it
simulates (Pillow's JPEG, bicubic resizes, scipy's blur), its geometry, its gradients, the spec
grammar and its errors, and a stage-1 step that trains through it."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from deepwm_jax import config, distortions as D
from deepwm_jax.data import sources, watermarks
from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import stage1
from deepwm_jax.zoo import removal


def psnr(a, b) -> float:
  """Pooled over the whole batch (a mean of per-image PSNRs lets one flat image dominate)."""
  return float(10 * np.log10(1.0 / np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.fixture(scope="module")
def photos():
  """Eight 64 px crops of the builtin held-out photos (textured and smooth parts)."""
  imgs = sources.builtin_images("val", 3)
  x = [im[:64, :64] for im in imgs[:4]] + [im[100:164, 50:114] for im in imgs[:4]]
  return np.stack(x).astype(np.float32)


def full(n, v):
  return jnp.full((n,), v, jnp.float32)


def test_parse_and_its_errors():
  assert D.parse("") == ()
  assert D.parse("none, jpeg:50:95+blur:1") == (
      (D.Step("none"),), (D.Step("jpeg", 50, 95), D.Step("blur", 1, 1)))
  for bad, says in [("jpg:50", "unknown distortion 'jpg'"), ("jpeg:0", "quality in [1, 100]"),
                    ("blur:1:0.5", "lo <= hi"), ("none:3", "takes no value"),
                    ("none,,jpeg:50", "empty entry"), ("noise:x", "standard deviation"),
                    ("jpeg:50:60:70", "range lo:hi")]:
    with pytest.raises(DeepwmError, match=re.escape(says)):
      D.parse(bad)
  c = config.base_config()
  c.stage2.distortions = "jpeg:500"
  with pytest.raises(DeepwmError, match=r"invalid config: stage2\.distortion 'jpeg:500'"):
    config.validate(c)


@pytest.mark.parametrize("quality", [95, 75, 50, 30])
def test_simulated_jpeg_is_close_to_the_codec(photos, quality):
  sim = np.asarray(D.jpeg(jnp.asarray(photos), full(len(photos), quality)))
  real = removal.apply(f"jpeg:{quality}", photos)
  assert sim.shape == photos.shape
  # Within rounding of the codec (its fancy chroma upsampling, 8-bit steps), and losing as
  # much as the codec does: measured 45.6-49.3 dB to the codec.
  assert psnr(sim, real) > 44.0
  assert abs(psnr(sim, photos) - psnr(real, photos)) < 0.5
  gray = photos.mean(-1, keepdims=True)
  assert psnr(D.jpeg(jnp.asarray(gray), full(8, quality)),
              removal.apply(f"jpeg:{quality}", gray)) > 44.0


def test_jpeg_gradients_are_the_identitys(photos):
  x = jnp.asarray(photos)
  probe = jnp.asarray(np.random.default_rng(0).normal(size=photos.shape), jnp.float32)
  gray = x.mean(-1, keepdims=True)
  g = jax.grad(lambda v: jnp.sum(D.jpeg(v, full(8, 50)) * probe[..., :1]))(gray)
  # Luma only: the DCT is orthonormal and rounding passes the gradient straight through.
  np.testing.assert_allclose(np.asarray(g), np.asarray(probe[..., :1]), atol=1e-4)
  grad = lambda q: jax.grad(lambda v: jnp.sum(D.jpeg(v, full(8, q)) * probe))(x)
  g = grad(50)
  # Colour: the 4:2:0 chroma averaging is the only part that is not the identity, and it is
  # linear, so the gradient does not depend on the quality.
  np.testing.assert_allclose(np.asarray(g), np.asarray(grad(90)), atol=1e-4)
  cos = float(jnp.sum(g * probe) / (jnp.linalg.norm(g) * jnp.linalg.norm(probe)))
  assert 0.5 < cos < 1.0  # measured 0.65 on white noise, the probe chroma averaging loses most
  g = jax.grad(lambda v: jnp.sum(D.jpeg_codec(v, full(8, 50)) * probe))(x)
  np.testing.assert_allclose(np.asarray(g), np.asarray(probe))
  np.testing.assert_allclose(np.asarray(D.jpeg_codec(x, full(8, 50))),
                             removal.apply("jpeg:50", photos), atol=1e-6)


def test_resizes_blur_and_noise_match_the_real_operations(photos):
  x, n = jnp.asarray(photos), len(photos)
  for f, floor in ((0.75, 42.0), (0.5, 35.0)):  # measured 44.2 and 37.0 dB to Pillow's bicubic
    sim = D.rescale(x, full(n, f))
    real = removal.apply(f"rescale:{f}", photos)
    assert psnr(sim, real) > floor and abs(psnr(sim, photos) - psnr(real, photos)) < 1.5
  for s in (0.5, 1.0, 2.0):
    assert psnr(D.blur(x, full(n, s), 2.0), ndimage.gaussian_filter(
        photos, (0, s, s, 0), mode="reflect")) > 55.0
  sim = D.crop(x, full(n, 0.5), jnp.full((n, 2), 0.5))
  assert psnr(sim, removal.apply("crop:0.5", photos)) > 45.0
  for identity in (D.rescale(x, full(n, 1.0)), D.crop(x, full(n, 1.0), jnp.zeros((n, 2))),
                   D.shift(x, full(n, 0.0), jnp.zeros(n)), D.blur(x, full(n, 0.0), 1.0),
                   D.jitter(x, full(n, 0.0), jnp.zeros((n, 3)))):
    np.testing.assert_allclose(np.asarray(identity), photos, atol=2e-5)
  y = D.noise(x, full(n, 0.03), jax.random.PRNGKey(0))
  assert 0.029 < float(jnp.std(y - x)) < 0.031


def test_geometry_moves_content_where_it_says(photos):
  x, n = jnp.asarray(photos), len(photos)
  # A shift by a whole number of px in the direction u = 0 (columns): out[:, :, j] = x[:, :, j - 2]
  y = np.asarray(D.shift(x, full(n, 2.0), jnp.zeros(n)))
  np.testing.assert_allclose(y[:, :, 2:], photos[:, :, :-2], atol=1e-5)
  y = np.asarray(D.shift(x, full(n, 3.0), full(n, 0.25)))  # u = 1/4: rows
  np.testing.assert_allclose(y[:, 3:], photos[:, :-3], atol=1e-5)
  # A crop of half of each side at the top-left corner, resized back: a ramp's slope doubles.
  ramp = jnp.broadcast_to(jnp.linspace(0, 1, 64)[None, None, :, None], (1, 64, 64, 1))
  y = np.asarray(D.crop(ramp, full(1, 0.5), jnp.zeros((1, 2))))[0, 32, 8:56, 0]
  np.testing.assert_allclose(np.diff(y), 0.5 / 63, atol=1e-3)
  assert abs(y[0] - 4 / 63) < 0.02  # out px 8 <- in px 4


def test_flips_and_turns_are_the_symmetries_of_a_square(photos):
  """`dihedral` gives each of the 8 flips and quarter turns, and a key pattern with dihedral
  symmetry reads the same through every one of them (what stage 1 relies on)."""
  x = jnp.asarray(photos[:1])
  seen = set()
  for bits in range(8):
    u = jnp.asarray([[bits & 1, (bits >> 1) & 1, (bits >> 2) & 1]], jnp.float32)
    y = np.asarray(D.dihedral(x, u))[0]
    seen.add(y.tobytes())
    assert any(np.array_equal(y, np.rot90(t, k)) for t in (photos[0], photos[0][::-1])
               for k in range(4))
  assert len(seen) == 8
  y = np.asarray(D.flip(x, jnp.asarray([[0.0, 1.0]])))[0]  # left-right only
  np.testing.assert_array_equal(y, photos[0][:, ::-1])
  key = np.random.default_rng(0).choice([-1.0, 1.0], watermarks.key_bits(32, 2, "dihedral"))
  w = watermarks.key_pattern(key, 32, 2, 3, "dihedral")[None].repeat(16, 0)
  turned = D.apply("dihedral", w, jax.random.PRNGKey(0))
  assert not np.array_equal(np.asarray(D.apply("dihedral", jnp.asarray(photos),
                                               jax.random.PRNGKey(0))), photos)
  np.testing.assert_array_equal(np.asarray(turned), np.asarray(w))
  with pytest.raises(DeepwmError, match="square images only"):
    D.dihedral(x[:, :32], jnp.zeros((1, 3)))


def test_the_ramp_distorts_a_growing_share(photos):
  x = jnp.asarray(np.concatenate([photos] * 8))
  share = lambda step: float(D.ramp_share(jnp.asarray(step), 100, (0.2, 0.6)))
  assert [share(0), share(20), share(40), share(60), share(90)] == [0, 0, 0.5, 1, 1]
  assert float(D.ramp_share(jnp.asarray(0), 100, (0.0, 0.0))) == 1.0
  y = np.asarray(D.apply("noise:0.2", x, jax.random.PRNGKey(0), share=0.5))
  touched = np.abs(y - np.asarray(x)).mean((1, 2, 3)) > 0
  assert 0.25 < touched.mean() < 0.75


def test_apply_draws_one_entry_per_example_and_is_a_pure_function(photos):
  x = jnp.asarray(np.concatenate([photos] * 4))
  spec = "none, noise:0.2, jpeg:30:60+blur:0.5:1"
  f = jax.jit(lambda v, k: D.apply(spec, v, k))
  y = np.asarray(f(x, jax.random.PRNGKey(3)))
  assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
  np.testing.assert_array_equal(y, np.asarray(f(x, jax.random.PRNGKey(3))))
  err = np.abs(y - np.asarray(x)).mean((1, 2, 3))
  kinds = np.select([err == 0, err > 0.1], [0, 1], 2)  # untouched, noisy, compressed and blurred
  assert set(kinds) == {0, 1, 2}
  assert not np.array_equal(y, np.asarray(f(x, jax.random.PRNGKey(4))))
  every = "none, jpeg:50:95, jpeg_codec:50:95, rescale:0.5:0.9, crop:0.6:0.9, shift:0:2, " \
          "blur:0.3:1, noise:0:0.03, jitter:0:0.1"
  y = D.apply(every, x[:, :32, :32], jax.random.PRNGKey(0))
  assert y.shape == (32, 32, 32, 3) and bool(jnp.all(jnp.isfinite(y)))


def test_a_stage1_step_trains_R_through_the_layer(tiny_cfg):
  cfg = tiny_cfg.copy_and_resolve_references()
  s, c = cfg.data.image_size, cfg.data.channels
  w, blank = watermarks.watermark_image("logo", s, c), watermarks.blank_image(s, c)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(size=(4, s, s, c)), jnp.float32) for k in ("a", "b")}
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), w)
  def run(spec, ramp=(0.0, 0.0)):
    cfg.stage1.update(distortions=spec, distortion_ramp=ramp)
    return stage1.make_step(cfg, w, blank)(state, batch, jax.random.PRNGKey(1))
  def gap(x, y):
    return max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(jnp.abs(a - b).max()), x["extractor"]["params"],
        y["extractor"]["params"])))
  plain, m_plain = run("")
  same, _ = run("none")
  noisy, m = run("noise:0.3")
  assert gap(plain, same) == 0.0  # 'none' is no layer at all
  assert gap(plain, run("noise:0.3", ramp=(0.0, 0.5))[0]) == 0.0  # a ramp's step 0: none
  # R learned from other images (its update differs), H's output was not distorted (the same
  # fidelity), and the step still trains R.
  assert gap(plain, noisy) > 0.0 and gap(noisy, state) > 0.0
  np.testing.assert_allclose(float(m["fid_mse"]), float(m_plain["fid_mse"]), rtol=1e-5)


@pytest.mark.slow
def test_tiny_run_end_to_end_through_the_layer(tiny_cfg, tmp_path):
  """Stage 1, stage 2 and the absorbed strategy's M' all train through distortions; the kit
  records them, and a bad spec is refused before anything is written."""
  import json
  import os
  from deepwm_jax import pipeline
  cfg = tiny_cfg.copy_and_resolve_references()
  cfg.stage1.update(distortions="none, jpeg:50:95+blur:0.5:1, rescale:0.5:0.9",
                    distortion_ramp=(0.0, 0.5))
  cfg.stage2.distortions = "jpeg_codec:50:95, shift:0:2"
  cfg.protect.strategy = "specific"
  cfg.protect.absorb.update(steps=2, batch=4, distortions="noise:0:0.02")
  lines = []
  rep = pipeline.run(cfg, str(tmp_path / "run"), log=lines.append)
  trained = {l.split("]")[0][1:] for l in lines if l.startswith("[") and "step" in l}
  assert {"stage1", "stage2", "absorb"} <= trained
  assert np.isfinite(rep["fidelity"]["psnr"]) and "specific" in rep
  with open(tmp_path / "run" / "kit" / "kit.json") as f:
    kit_cfg = json.load(f)["config"]
  assert kit_cfg["stage1"]["distortions"] == cfg.stage1.distortions
  assert kit_cfg["protect"]["absorb"]["distortions"] == "noise:0:0.02"
  cfg.stage1.distortions = "jpeg:50:95, gamma:2"
  with pytest.raises(DeepwmError, match="unknown distortion 'gamma'"):
    pipeline.run(cfg, str(tmp_path / "bad"), log=lines.append)
  assert not os.path.exists(tmp_path / "bad" / "kit")


def test_the_hardest_entry_is_the_largest_mean_over_the_entries_drawn():
  loss = jnp.asarray([1.0, 2.0, 3.0, 10.0])
  assert float(D.hardest_entry_mean(loss, jnp.asarray([0, 0, 1, -1]), 2)) == 10.0  # -1: as is
  assert float(D.hardest_entry_mean(loss, jnp.asarray([0, 0, 1, 1]), 2)) == 6.5
  # An entry no example drew does not count, even when every mean drawn is below zero.
  assert float(D.hardest_entry_mean(-loss[:2], jnp.asarray([2, 2]), 3)) == -1.5
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 8, 8, 3)), jnp.float32)
  y, pick = D.apply("none, noise:0.3", x, jax.random.PRNGKey(0), with_pick=True)
  moved = np.abs(np.asarray(y - x)).mean((1, 2, 3)) > 0.05
  np.testing.assert_array_equal(moved, np.asarray(pick) == 1)  # pick says what was done
  assert set(np.asarray(pick).tolist()) == {0, 1}
  _, pick = D.apply("noise:0.3", x, jax.random.PRNGKey(0), share=0.0, with_pick=True)
  assert (np.asarray(pick) == -1).all()
