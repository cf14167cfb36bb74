"""Images of any size: the window grid, the blend, and kits that embed and verify odd sizes."""
import os

import numpy as np
import pytest

import deepwm_jax
from deepwm_jax import cli, windows
from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError

ODD = [(37, 53), (100, 150)]


@pytest.mark.parametrize("h, w", ODD + [(32, 32), (64, 96)])
@pytest.mark.parametrize("overlap", [0, 8])
def test_grid_covers_every_pixel_and_ends_flush(h, w, overlap):
  cover = np.zeros((h, w), int)
  g = windows.grid(h, w, 32, overlap)
  for y, x in g:
    assert 0 <= y <= h - 32 and 0 <= x <= w - 32
    cover[y:y + 32, x:x + 32] += 1
  assert cover.min() >= 1
  assert max(y for y, _ in g) == h - 32 and max(x for _, x in g) == w - 32
  assert g == sorted(g)  # raster order


def test_taper_is_positive_flat_inside_and_symmetric():
  t = windows.taper(32, 8)[..., 0]
  assert t.min() > 0 and np.all(t[8:24, 8:24] == 1)
  np.testing.assert_allclose(t, t[::-1, ::-1])
  assert np.all(windows.taper(32, 0) == 1)


@pytest.mark.parametrize("h, w", ODD)
def test_blend_agrees_with_whole_image_application_of_a_local_function(h, w):
  """A pointwise map is the same on windows as on the whole image, whatever the weights:
  the blend must give exactly its whole-image result (and the identity back)."""
  img = np.random.default_rng(0).uniform(size=(h, w, 3)).astype(np.float32)
  fn = lambda x: np.clip(0.9 * x + 0.05 * np.sin(7 * x), 0, 1)
  for overlap in (0, 8):
    out = windows.blend(fn, [img], 32, overlap, batch=5)[0]
    assert out.shape == img.shape
    np.testing.assert_allclose(out, fn(img), atol=1e-6)
    np.testing.assert_allclose(windows.blend(lambda x: x, [img], 32, overlap)[0], img, atol=1e-6)


def test_an_exact_size_image_is_one_window_and_unblended():
  img = np.random.default_rng(1).uniform(size=(2, 32, 32, 1)).astype(np.float32)
  fn = lambda x: x[:, ::-1]  # not local: windows would change it; one window must not
  np.testing.assert_array_equal(windows.blend(fn, list(img), 32, 8)[0], img[0, ::-1])
  out, owner = windows.apply(lambda x: x.mean(axis=(1, 2, 3)), list(img), 32, 8)
  assert out.shape == (2,) and owner.tolist() == [0, 1]


def test_frame_share_of_an_even_residual_is_the_frame_area_and_a_frame_residual_is_not():
  even = np.ones((96, 96, 3), np.float32)
  area = windows.frame_area(even.shape, 32, 0)
  assert windows.frame_share(even, 32, 0) == pytest.approx(area)
  framed = np.zeros_like(even)
  framed[:2] = 1.0  # everything in the top rows: the frame of the first row of windows
  assert windows.frame_share(framed, 32, 0) == pytest.approx(1.0)


@pytest.mark.parametrize("bad, needle", [
    (np.zeros((1, 20, 40, 3), np.float32), "at least 32x32"),
    ([np.zeros((40, 40, 3), np.float32), np.zeros((40, 40, 1), np.float32)], "expects"),
    (np.zeros((40, 40, 3), np.float32), "shape"),
    ([], "no images"),
    ([np.full((40, 40, 3), 2.0, np.float32)], "outside"),
])
def test_bad_images_get_one_line_errors(bad, needle):
  with pytest.raises(DeepwmError, match=needle) as e:
    windows.check(bad, 32, 3)
  assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def tiny_kit(tiny_run):
  return deepwm_jax.load_kit(os.path.join(tiny_run[0], "kit"))


def odd_photos():
  from deepwm_jax.data import sources
  val = sources.builtin_images("val", 3)
  # Crops of the held-out photos at the odd sizes, and one shrunk whole photo.
  out = [val[0][100:100 + h, 200:200 + w] for h, w in ODD]
  return out + [imageio.resize_image(val[1], 96, 96)]


def test_deep_kit_round_trips_odd_sizes(tiny_kit):
  photos = odd_photos()
  marked = tiny_kit.embed(photos)
  assert isinstance(marked, list) and [m.shape for m in marked] == [p.shape for p in photos]
  for m, p in zip(marked, photos):
    assert 0 <= m.min() and m.max() <= 1 and np.abs(m - p).max() > 0
  counts = tiny_kit.window_counts(photos)
  assert tiny_kit.extract(marked).shape == (sum(counts), 32, 32, 3)
  v = tiny_kit.verify(photos)  # the tiny kit barely embeds: detection is test_learning's
  assert v.n_images == sum(counts) and not v.detected
  # An image of the kit's size is embedded as it was before windows existed, in any company.
  crop = photos[1][:32, :32]
  alone = tiny_kit.embed(crop[None])[0]
  np.testing.assert_array_equal(tiny_kit.embed([photos[0], crop])[1], alone)


def traditional_kit(path: str, cfg, psnr: float):
  """A spread-spectrum kit of a 32 px pattern at `psnr` dB (no training)."""
  from deepwm_jax.kit import traditional as trad_kit
  from deepwm_jax.stages.traditional import SpreadSpectrum
  from deepwm_jax import verdict
  wm = SpreadSpectrum(7, 32, 3, psnr=psnr)
  cal = verdict.calibrate(np.random.default_rng(0).normal(size=500))
  return deepwm_jax.load_kit(trad_kit.write_kit(path, cfg, wm, cal))


def test_traditional_kit_round_trips_odd_sizes(tmp_path, tiny_cfg):
  kit = traditional_kit(str(tmp_path / "kit"), tiny_cfg, psnr=38.0)
  photos = odd_photos()
  marked = kit.embed(photos)
  assert [m.shape for m in marked] == [p.shape for p in photos]
  assert kit.verify(marked).detected and not kit.verify(photos).detected


def _psnr(x, y):
  return float(10 * np.log10(1.0 / np.mean((np.asarray(x, np.float64) - y) ** 2)))


def test_an_embed_time_psnr_floor_scales_down_only_the_images_below_it():
  from deepwm_jax import budget
  rng = np.random.default_rng(0)
  b = [rng.uniform(0.2, 0.8, (40, 50, 3)).astype(np.float32) for _ in range(3)]
  # Residuals at 30, 36 and 45 dB (a Gaussian residual of standard deviation 10^(-dB/20)).
  marked = [x + (10 ** (-db / 20) * rng.standard_normal(x.shape)).astype(np.float32)
            for x, db in zip(b, (30, 36, 45))]
  out = budget.cap(b, marked, 40)
  assert [round(_psnr(o, x), 2) for o, x in zip(out[:2], b[:2])] == [40.0, 40.0]
  np.testing.assert_array_equal(out[2], marked[2])  # above the floor: untouched
  # The same residual at a lower gain, not another one.
  r0, r1 = (marked[0] - b[0]).ravel(), (out[0] - b[0]).ravel()
  assert np.corrcoef(r0, r1)[0, 1] > 0.999
  assert all(o is m for o, m in zip(budget.cap(b, marked, 0), marked))
  for bad in (10, 90, "forty", float("nan")):
    with pytest.raises(DeepwmError, match=f"psnr_floor={bad}; use 0 .off. or a PSNR in dB"):
      budget.check_floor(bad)


def test_a_kit_embeds_under_a_psnr_floor(tmp_path, tiny_cfg):
  kit = traditional_kit(str(tmp_path / "kit"), tiny_cfg, psnr=36.0)
  photos = odd_photos()
  plain = kit.embed(photos)
  assert max(_psnr(m, p) for m, p in zip(plain, photos)) < 39.0
  floored = kit.embed(photos, psnr_floor=39.0)
  assert [m.shape for m in floored] == [p.shape for p in photos]
  assert all(abs(_psnr(m, p) - 39.0) < 0.01 for m, p in zip(floored, photos))
  for m, p in zip(kit.embed(photos, psnr_floor=30.0), plain):
    np.testing.assert_array_equal(m, p)
  with pytest.raises(DeepwmError, match="psnr_floor=5"):
    kit.embed(photos, psnr_floor=5)


def test_cli_embeds_under_a_psnr_floor_and_refuses_a_bad_one(tiny_run, tmp_path, capsys):
  kit = os.path.join(tiny_run[0], "kit")
  photos = odd_photos()
  src, out = tmp_path / "photos", tmp_path / "marked"
  imageio.write_images(str(src), photos, [f"p{i}.png" for i in range(len(photos))])
  assert cli.main(["embed", "--kit", kit, "--input", str(src), "--output", str(out),
                   "--psnr-floor", "200"]) == 2
  err = capsys.readouterr().err.strip()
  assert "psnr_floor=200.0; use 0 (off) or a PSNR in dB in [20, 80]" in err
  assert len(err.splitlines()) == 1 and not out.exists()
  assert cli.main(["embed", "--kit", kit, "--input", str(src), "--output", str(out),
                   "--psnr-floor", "40"]) == 0
  assert f"watermarked {len(photos)} images" in capsys.readouterr().err
  back, _ = imageio.read_image_dir(str(out), stack=False)
  assert [b.shape for b in back] == [p.shape for p in photos]


def test_cli_embeds_and_verifies_a_folder_of_odd_sizes(tiny_run, tmp_path, capsys):
  kit = os.path.join(tiny_run[0], "kit")
  photos = odd_photos()
  src, out = tmp_path / "photos", tmp_path / "marked"
  imageio.write_images(str(src), photos, [f"p{i}.png" for i in range(len(photos))])
  assert cli.main(["embed", "--kit", kit, "--input", str(src), "--output", str(out)]) == 0
  back, names = imageio.read_image_dir(str(out), stack=False)
  assert [b.shape for b in back] == [p.shape for p in photos]
  capsys.readouterr()
  assert cli.main(["verify", "--kit", kit, "--input", str(src)]) == 1  # clean: not detected
  assert f"windows of {len(photos)} images" in capsys.readouterr().out


def test_a_framed_embedder_leaves_the_frame_and_blending_fills_it_from_neighbours():
  """H with embedder.frame=4 changes nothing within 4 px of a crop's edge; blended windows
  whose frames weigh almost nothing put a neighbour's full residual there instead, so inside
  the image every pixel gets the residual (and the image's own outer 4 px none)."""
  import jax
  from deepwm_jax import config, models
  cfg = config.load("tiny")
  cfg.embedder.update(arch="cnn", depth=2, frame=4)
  H = models.embedder(cfg)
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  v = H.init(jax.random.PRNGKey(0), x, None)
  y = np.asarray(H.apply(v, x, None))
  ring = np.ones((32, 32), bool)
  ring[4:28, 4:28] = False
  np.testing.assert_array_equal(y[:, ring], x[:, ring])
  # A constant residual, masked like H's: blended over a 100 x 150 image it is whole inside.
  c = 0.01 * np.asarray(models.frame_mask(32, 32, 4))
  img = np.full((100, 150, 3), 0.5, np.float32)
  out = windows.blend(lambda w: w + c, [img], 32, 8, frame=4)[0]
  np.testing.assert_allclose(out[4:-4, 4:-4], 0.51, atol=1e-4)
  np.testing.assert_allclose(out[:2], 0.5, atol=1e-6)
  with pytest.raises(ValueError, match="frames would not be covered"):
    windows.taper(32, 6, frame=4)


def test_a_thinned_reading_grid_keeps_every_other_window_of_long_axes_only():
  full = windows.grid(512, 100, 32, 8)
  thin = windows.grid(512, 100, 32, 8, every=2)
  ys_full, xs_full = sorted({y for y, _ in full}), sorted({x for _, x in full})
  assert len(ys_full) == 21 and len(xs_full) == 4  # 512 px: 21 windows; 100 px: 4
  assert sorted({y for y, _ in thin}) == ys_full[::2]  # aligned with the embedding's grid
  assert sorted({x for _, x in thin}) == xs_full  # a short axis is read in full
  assert windows.count([np.zeros((512, 100, 3))], 32, 8, every=2) == [len(thin)]


def test_a_checkerboard_reading_grid_keeps_half_the_tiles_of_large_images_only():
  tiles = windows.grid(512, 320, 32, 0)  # 16 x 10 tiles
  half = windows.grid(512, 320, 32, 0, checker=True)
  assert len(tiles) == 160 and len(half) == 80 and set(half) <= set(tiles)
  rows = {}
  for y, x in half:
    rows.setdefault(y, []).append(x)
  assert len(rows) == 16  # every row of tiles is read, alternate tiles in each
  assert all(abs(xs[0] - rows[y + 32][0]) == 32 for y, xs in rows.items() if y + 32 in rows)
  assert windows.grid(256, 256, 32, 0, checker=True) == windows.grid(256, 256, 32, 0)  # 8 x 8
  assert windows.count([np.zeros((512, 320, 3))], 32, 0, checker=True) == [80]


@pytest.mark.parametrize("h, w", ODD)
def test_windows_with_context_agree_exactly_with_the_whole_image(h, w):
  """A 3x3 filter sees across a window's edge: alone on windows it differs from the whole
  image there; given 1 px of context around each window it agrees everywhere."""
  from scipy import ndimage
  img = np.random.default_rng(2).uniform(size=(h, w, 3)).astype(np.float32)
  box = lambda x: ndimage.uniform_filter(x, size=(1, 3, 3, 1), mode="reflect")
  # The whole image, mirrored at its edge as the windows' context is (numpy's 'reflect').
  whole = box(np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="reflect")[None])[0, 1:-1, 1:-1]
  no_ctx = windows.blend(box, [img], 32, 8)[0]
  assert np.abs(no_ctx - whole).max() > 1e-3
  np.testing.assert_allclose(windows.blend(box, [img], 32, 8, context=1)[0], whole, atol=1e-5)
  np.testing.assert_allclose(windows.blend(box, [img], 32, 0, context=1)[0], whole, atol=1e-5)


def test_context_training_runs_end_to_end_and_embeds_any_size(tmp_path):
  """stage1.context on a tiny CNN-embedder run: stage 1 on crops with their surroundings,
  the kit embeds odd sizes with real context. A U-Net embedder refuses it."""
  from deepwm_jax import config, pipeline
  cfg = config.load("tiny")
  cfg.embedder.update(arch="cnn", depth=2)
  cfg.stage1.context = 8  # 48 px crops: the task U-Net halves them 4 times
  config.validate(cfg)
  pipeline.run(cfg, str(tmp_path / "w"), log=lambda *_: None)
  kit = deepwm_jax.load_kit(str(tmp_path / "w" / "kit"))
  assert kit.context == 8
  marked = kit.embed(odd_photos()[:1])
  assert marked[0].shape == odd_photos()[0].shape
  cfg.embedder.arch = "unet"
  with pytest.raises(DeepwmError, match="stage1.context"):
    config.validate(cfg)
