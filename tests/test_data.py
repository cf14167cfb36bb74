"""Tests for deepwm_jax.data: sources, degradations, watermarks and folder I/O."""
import os

import numpy as np
from PIL import Image
import pytest

from deepwm_jax.data import degrade, imageio, sources, splits, synthetic, watermarks
from deepwm_jax.errors import DeepwmError


def _save(path, arr):
  Image.fromarray(arr).save(path)


def _rand_u8(rng, *shape):
  return rng.integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------- sources


def test_builtin_splits_disjoint_nonempty():
  names = [n for split in sources.BUILTIN_SPLITS.values() for n in split]
  assert set(sources.BUILTIN_SPLITS) == {"protect", "attack", "val"}
  assert all(sources.BUILTIN_SPLITS.values())
  assert len(names) == len(set(names))
  # The stereo pair is one scene and must not straddle splits.
  assert {"motorcycle_left", "motorcycle_right"} <= set(sources.BUILTIN_SPLITS["protect"])


@pytest.mark.parametrize("split", ["protect", "attack", "val"])
@pytest.mark.parametrize("channels", [1, 3])
def test_builtin_images_load_offline(split, channels):
  images = sources.builtin_images(split, channels)
  assert len(images) == len(sources.BUILTIN_SPLITS[split])
  for img in images:
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[-1] == channels
    assert min(img.shape[:2]) >= 128
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.01


def test_builtin_channel_conversion():
  gray = sources.builtin_images("attack", 1)[1]    # camera: grayscale
  rgb = sources.builtin_images("attack", 3)[1]
  np.testing.assert_array_equal(rgb[..., 0], gray[..., 0])
  np.testing.assert_array_equal(rgb[..., 2], gray[..., 0])
  astro_rgb = sources.builtin_images("protect", 3)[0]
  astro_gray = sources.builtin_images("protect", 1)[0]
  np.testing.assert_allclose(astro_gray[..., 0], astro_rgb @ np.array([0.299, 0.587, 0.114]),
                             atol=1e-5)


def test_unknown_split_and_source():
  with pytest.raises(DeepwmError, match="unknown data split 'train'"):
    sources.builtin_images("train", 3)
  with pytest.raises(DeepwmError, match="unknown data source"):
    sources.load_split("imagenet", "protect", 3)
  with pytest.raises(DeepwmError, match="tfds"):
    sources.load_split("tfds:div2k", "protect", 3)


def test_split_images_rule():
  items = list(range(23))
  parts = {s: splits.split_images(items, s) for s in splits.SPLITS}
  assert sorted(sum(parts.values(), [])) == items
  # 20 images by the 10-pattern (5:3:2), then positions 0-2: P, A, V.
  assert [len(parts[s]) for s in ("protect", "attack", "val")] == [11, 7, 5]
  for s in splits.SPLITS:
    assert len(splits.split_images([0, 1, 2], s)) == 1
  with pytest.raises(DeepwmError, match="at least 3 images"):
    splits.split_images([0, 1], "protect")


def test_folder_source(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(5):
    _save(tmp_path / f"im{i}.png", _rand_u8(rng, 40 + i, 50, 3))
  _save(tmp_path / "gray.jpg", _rand_u8(rng, 30, 30))
  (tmp_path / "notes.txt").write_text("not an image")
  images = sources.folder_images(str(tmp_path), 3)
  assert len(images) == 6 and all(im.shape[-1] == 3 for im in images)
  assert images[0].shape == (30, 30, 3)  # gray.jpg sorts first.
  protect = sources.load_split(f"folder:{tmp_path}", "protect", 1)
  assert len(protect) == 3 and protect[0].shape == (30, 30, 1)
  assert len(sources.load_split(str(tmp_path), "val", 3)) == 1
  with pytest.raises(DeepwmError, match="does not exist"):
    sources.load_split(f"folder:{tmp_path / 'nope'}", "val", 3)


def test_make_patches_shapes_and_determinism():
  images = sources.builtin_images("val", 3)
  a = sources.make_patches(images, 50, 32, np.random.default_rng(1), scale=0.25)
  b = sources.make_patches(images, 50, 32, np.random.default_rng(1), scale=0.25)
  c = sources.make_patches(images, 50, 32, np.random.default_rng(2), scale=0.25)
  assert a.shape == (50, 32, 32, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert 0.0 <= a.min() and a.max() <= 1.0


def test_make_patches_upscales_small_images_and_flips():
  img = np.arange(20 * 10, dtype=np.float32).reshape(20, 10, 1) / 200
  p = sources.make_patches([img], 8, 16, np.random.default_rng(0))
  assert p.shape == (8, 16, 16, 1)
  # A 16-wide crop of an image upscaled to 16 wide is the whole width: flips are visible.
  unflipped = sources.make_patches([img], 64, 16, np.random.default_rng(0), flip=False)
  assert np.all(unflipped[:, :, 0] <= unflipped[:, :, -1])
  flipped = sources.make_patches([img], 64, 16, np.random.default_rng(0), flip=True)
  assert np.any(flipped[:, :, 0] > flipped[:, :, -1])


# ---------------------------------------------------------------- degradations


@pytest.fixture(scope="module")
def clean_batch():
  return sources.make_patches(sources.builtin_images("protect", 3), 16, 48,
                              np.random.default_rng(0), scale=0.25)


@pytest.mark.parametrize("kind", ["rain", "noise", "blur"])
def test_degrade_changes_and_is_deterministic(clean_batch, kind):
  a1 = degrade.degrade(clean_batch, kind, seed=3)
  a2 = degrade.degrade(clean_batch, kind, seed=3)
  assert a1.shape == clean_batch.shape and a1.dtype == np.float32
  np.testing.assert_array_equal(a1, a2)
  assert np.abs(a1 - clean_batch).mean() > 0.005
  assert 0.0 <= a1.min() and a1.max() <= 1.0


def test_rain_differs_per_image_and_seed(clean_batch):
  same = np.repeat(clean_batch[:1], 4, axis=0)
  rain = degrade.degrade(same, "rain", seed=0) - same
  assert not np.allclose(rain[0], rain[1])
  assert np.all(rain >= -1e-6)  # Screen blend only brightens.
  assert not np.array_equal(degrade.degrade(same, "rain", seed=1), rain + same)


def test_degrade_none_is_identity_and_unknown_kind(clean_batch):
  np.testing.assert_array_equal(degrade.degrade(clean_batch, "none", seed=0), clean_batch)
  with pytest.raises(DeepwmError, match="rain, noise, blur, none"):
    degrade.degrade(clean_batch, "snow", seed=0)


# ---------------------------------------------------------------- watermarks


@pytest.mark.parametrize("spec", ["logo", "text:ACME", "text:Deep Model IP", "skimage-logo"])
@pytest.mark.parametrize("size,channels", [(32, 3), (64, 1)])
def test_watermark_shapes(spec, size, channels):
  w = watermarks.watermark_image(spec, size, channels)
  assert w.shape == (size, size, channels) and w.dtype == np.float32
  assert 0.0 <= w.min() and w.max() <= 1.0
  assert w.max() == pytest.approx(1.0, abs=0.02)  # White background.


def test_logo_dark_marks_on_white():
  w = watermarks.watermark_image("logo", 32, 1)
  dark = (w < 0.5).mean()
  assert 0.15 <= dark <= 0.35
  assert (w > 0.95).mean() > 0.5


def test_watermark_from_file_and_bad_specs(tmp_path):
  _save(tmp_path / "mark.png", _rand_u8(np.random.default_rng(0), 20, 30, 3))
  assert watermarks.watermark_image(str(tmp_path / "mark.png"), 32, 1).shape == (32, 32, 1)
  with pytest.raises(DeepwmError, match="existing image file"):
    watermarks.watermark_image(str(tmp_path / "missing.png"), 32, 3)
  (tmp_path / "broken.png").write_bytes(b"not a png")
  with pytest.raises(DeepwmError, match="'broken.png'.*not a readable image"):
    watermarks.watermark_image(str(tmp_path / "broken.png"), 32, 3)
  with pytest.raises(DeepwmError, match="needs some text"):
    watermarks.watermark_image("text:", 32, 3)


def test_blank_is_ones():
  b = watermarks.blank_image(32, 3)
  assert b.shape == (32, 32, 3) and b.dtype == np.float32 and np.all(b == 1.0)


# ---------------------------------------------------------------- folder I/O


def test_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  x = (_rand_u8(rng, 3, 16, 16, 3) / 255).astype(np.float32)
  out = tmp_path / "out"
  paths = imageio.write_images(str(out), x, ["b.jpg", "a.png", "c"])
  assert sorted(os.path.basename(p) for p in paths) == ["a.png", "b.png", "c.png"]
  y, names = imageio.read_image_dir(str(out), image_size=16, channels=3)
  assert names == ["a.png", "b.png", "c.png"]
  np.testing.assert_allclose(y, x[[1, 0, 2]], atol=1e-6)
  g, _ = imageio.read_image_dir(str(out))
  assert g.shape == (3, 16, 16, 3)


def test_read_modes_rgba_gray16(tmp_path):
  rng = np.random.default_rng(0)
  _save(tmp_path / "rgba.png", _rand_u8(rng, 8, 8, 4))
  x, _ = imageio.read_image_dir(str(tmp_path), channels=3)
  assert x.shape == (1, 8, 8, 3)
  g16 = tmp_path / "g16"
  g16.mkdir()
  Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(g16 / "a.png")
  _save(g16 / "b.png", np.full((8, 8), 255, np.uint8))
  (g16 / ".DS_Store").write_bytes(b"junk")  # Hidden files are ignored.
  x, names = imageio.read_image_dir(str(g16), image_size=8, channels=1)
  assert names == ["a.png", "b.png"]
  np.testing.assert_allclose(x[0], 0.5, atol=1e-4)
  np.testing.assert_allclose(x[1], 1.0)


def test_read_errors(tmp_path):
  rng = np.random.default_rng(0)
  with pytest.raises(DeepwmError, match="'.*nope' does not exist; point --input"):
    imageio.read_image_dir(str(tmp_path / "nope"))
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(DeepwmError, match="is a file, not a folder"):
    imageio.read_image_dir(str(tmp_path / "file.txt"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DeepwmError, match="has no images"):
    imageio.read_image_dir(str(empty))

  junk = tmp_path / "junk"
  junk.mkdir()
  _save(junk / "a.png", _rand_u8(rng, 8, 8, 3))
  (junk / "b.png").write_bytes(b"\x89PNG truncated")
  with pytest.raises(DeepwmError, match="'b.png' .*not a readable image.*remove it"):
    imageio.read_image_dir(str(junk))
  (junk / "b.png").unlink()
  (junk / "notes.txt").write_text("x")
  with pytest.raises(DeepwmError, match="'notes.txt' .*is not an image.*remove it"):
    imageio.read_image_dir(str(junk))


def test_read_size_and_channel_checks(tmp_path):
  rng = np.random.default_rng(0)
  _save(tmp_path / "a.png", _rand_u8(rng, 32, 32, 3))
  _save(tmp_path / "x.png", _rand_u8(rng, 48, 48, 3))
  with pytest.raises(DeepwmError, match="differ in size"):
    imageio.read_image_dir(str(tmp_path))
  with pytest.raises(DeepwmError,
                     match="image 'x.png' is 48x48 but the kit expects 32x32; pass --resize"):
    imageio.read_image_dir(str(tmp_path), image_size=32)
  x, _ = imageio.read_image_dir(str(tmp_path), image_size=32, resize=True)
  assert x.shape == (2, 32, 32, 3) and 0.0 <= x.min() and x.max() <= 1.0
  with pytest.raises(DeepwmError, match="image 'a.png' has 3 channels .* kit expects 1 channel"):
    imageio.read_image_dir(str(tmp_path), channels=1)
  gray = tmp_path / "gray"
  gray.mkdir()
  _save(gray / "g.png", _rand_u8(rng, 32, 32))
  with pytest.raises(DeepwmError, match="image 'g.png' has 1 channel .* kit expects 3"):
    imageio.read_image_dir(str(gray), channels=3)


def test_check_pixels():
  imageio.check_pixels(np.zeros((2, 2)), "ok")
  imageio.check_pixels(np.full((2, 2), 1 + 1e-7), "ok")
  with pytest.raises(DeepwmError, match="suspect images contain NaN"):
    imageio.check_pixels(np.array([0.5, np.nan]), "suspect images")
  with pytest.raises(DeepwmError, match="outside \\[0, 1\\]"):
    imageio.check_pixels(np.array([0.5, 255.0]), "inputs")


def test_write_refuses_bad_pixels_and_overwrite(tmp_path):
  out = tmp_path / "out"
  x = np.full((2, 8, 8, 1), 0.5, np.float32)
  bad = x.copy()
  bad[1, 0, 0, 0] = np.nan
  with pytest.raises(DeepwmError, match="NaN"):
    imageio.write_images(str(out), bad, ["a.png", "b.png"])
  assert not out.exists()  # Nothing written, not even the folder.

  imageio.write_images(str(out), x[:1], ["b.png"])
  before = (out / "b.png").read_bytes()
  with pytest.raises(DeepwmError, match="output 'b.png' already exists .*--overwrite"):
    imageio.write_images(str(out), np.zeros_like(x), ["a.png", "b.png"])
  assert sorted(os.listdir(out)) == ["b.png"]  # 'a.png' was not written first.
  assert (out / "b.png").read_bytes() == before
  with pytest.raises(DeepwmError, match="both be written as 'a.png'"):
    imageio.write_images(str(tmp_path / "o2"), x, ["a.jpg", "a.png"])
  with pytest.raises(DeepwmError, match="not a plain visible file name"):
    imageio.write_images(str(tmp_path / "o2"), x, ["../a.png", ".b"])
  imageio.write_images(str(out), np.zeros_like(x), ["a.png", "b.png"], overwrite=True)
  y, _ = imageio.read_image_dir(str(out))
  assert np.all(y == 0.0)


def test_dead_leaves_are_varied_sharp_and_deterministic():
  """Synthetic queries: every colour, flat disks with sharp edges, a function of the seed."""
  x = synthetic.dead_leaves(16, 32, 3, seed=1)
  assert x.shape == (16, 32, 32, 3) and x.dtype == np.float32
  assert 0 <= x.min() and x.max() <= 1
  np.testing.assert_array_equal(x, synthetic.dead_leaves(16, 32, 3, seed=1))
  assert not np.array_equal(x, synthetic.dead_leaves(16, 32, 3, seed=2))
  assert len({tuple(c) for c in x.reshape(-1, 3).round(3)}) > 500  # many colours
  step = np.abs(np.diff(x, axis=2)).max(-1)  # flat inside the disks, jumps at their edges
  assert np.mean(step == 0) > 0.5 and step.max() > 0.3
  assert synthetic.dead_leaves(2, 8, 1, seed=0).shape == (2, 8, 8, 1)
  with pytest.raises(DeepwmError, match="r_min < r_max"):
    synthetic.dead_leaves(2, 8, 3, seed=0, r_min=9.0, r_max=4.0)
  with pytest.raises(DeepwmError, match=">= 1"):
    synthetic.dead_leaves(0, 8, 3, seed=0)
