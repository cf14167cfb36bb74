"""The keyed filter (filter_key.py, kit/keyed_filter.py, stages/keyed_filter.py): embedding at
any size, readings with and without the owner's outputs, the exact bound over keys, a kit that
never claims another key, the tiny pipeline end to end with its CLI, and bad input."""
import json
import os

import numpy as np
import pytest
from scipy import stats
from skimage import data as skdata

import deepwm_jax
from deepwm_jax import cli, config, filter_key, pipeline, secret_key
from deepwm_jax.configs import tiny
from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError

R, EPS = 3, 0.025


def photo(size=96):
  """A natural RGB image from scikit-image, cut to size x size."""
  return (skdata.astronaut()[100:100 + size, 180:180 + size] / 255.0).astype(np.float32)


def test_embed_keeps_any_size_and_is_a_fixed_filter(monkeypatch):
  key = filter_key.new_key(R, 3, seed=1)
  assert key.shape == (24, 3) and filter_key.n_bits(R, 3) == 72
  for h, w in ((37, 53), (100, 150)):
    x = np.random.default_rng(h).random((h, w, 3)).astype(np.float32)
    y = filter_key.embed(x, key, EPS, R)
    assert y.shape == x.shape and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    # Bands of rows give the same image as one pass (bounded memory, no seam).
    monkeypatch.setattr(filter_key, "BAND_ROWS", 7)
    np.testing.assert_allclose(filter_key.embed(x, key, EPS, R), y, atol=1e-6)
    monkeypatch.setattr(filter_key, "BAND_ROWS", 256)
  # A flat image has no content to filter: it is returned as it is.
  flat = np.full((40, 40, 3), 0.4, np.float32)
  np.testing.assert_array_equal(filter_key.embed(flat, key, EPS, R), flat)
  # The filter follows the content: shifting the image shifts its watermark (away from the
  # mirrored border), so nothing is tied to a position or a grid.
  x = photo()
  d = filter_key.embed(x, key, EPS, R) - x
  d_shift = filter_key.embed(np.roll(x, (5, 9), (0, 1)), key, EPS, R) - np.roll(x, (5, 9), (0, 1))
  np.testing.assert_allclose(np.roll(d, (5, 9), (0, 1))[20:-20, 20:-20],
                             d_shift[20:-20, 20:-20], atol=1e-5)


def test_readings_recover_the_key_with_and_without_a_reference():
  key = filter_key.new_key(R, 3, seed=2)
  x = photo()
  marked = filter_key.embed(x, key, EPS, R)
  with_ref = filter_key.readings([marked], R, [x])
  assert with_ref.shape == (1, 72)
  assert np.all(np.sign(with_ref[0]) == key.ravel())
  assert secret_key.decide(with_ref, key.ravel(), 1e-6).p_value < 1e-20
  # Alone (no reference) the image's own content is the noise: weaker, read on a larger image.
  big = (skdata.astronaut()[:256, :256] / 255.0).astype(np.float32)
  alone = filter_key.readings([filter_key.embed(big, key, EPS, R)], R)
  assert secret_key.decide(alone, key.ravel(), 1e-6).detected
  assert not secret_key.decide(filter_key.readings([big], R), key.ravel(), 1e-6).detected
  # The owner's own output read against itself: no residual, nothing read.
  assert not np.any(filter_key.readings([x], R, [x]))


def test_innocent_p_values_are_uniform_over_keys():
  """For an image that does not carry the key, the readings do not depend on it, so over
  random keys the p-value is uniform (the bound holds whatever model made the image)."""
  rng = np.random.default_rng(0)
  x = photo()
  innocents = [x, 1 - x, np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1),
               filter_key.embed(x, filter_key.new_key(R, 3, seed=9), EPS, R)]
  for img in innocents:
    for ref in (None, x):
      v = filter_key.readings([img.astype(np.float32)], R, None if ref is None else [ref])
      ps = [secret_key.decide(v, filter_key.new_key(R, 3, seed=s).ravel(), 1e-6).p_value
            for s in range(300)]
      if ref is not None:  # registered first: the shift is chosen without the key too
        moved, ref_cut, _ = filter_key.align(np.roll(img, (2, 1), (0, 1))[3:-3, 3:-3],
                                             ref[3:-3, 3:-3], 8)
        v = filter_key.readings([moved.astype(np.float32)], R, [ref_cut])
      if not np.any(v):  # no residual at all: never detected
        assert min(ps) == 1.0
        continue
      assert stats.kstest(ps, "uniform").pvalue > 1e-3
      assert np.mean(np.array(ps) <= 0.05) <= 0.1


def test_a_key_never_claims_another_keys_images():
  x = photo(64)
  for seed in range(5):
    mine, theirs = filter_key.new_key(R, 3, seed=seed), filter_key.new_key(R, 3, seed=100 + seed)
    other = filter_key.embed(x, theirs, EPS, R)
    assert secret_key.decide(filter_key.readings([other], R, [x]), theirs.ravel(), 1e-6).detected
    assert not secret_key.decide(filter_key.readings([other], R, [x]), mine.ravel(),
                                 1e-6).detected


def test_bad_input():
  key = filter_key.new_key(R, 3, seed=1)
  with pytest.raises(DeepwmError, match="radius must be >= 1"):
    filter_key.offsets(0)
  with pytest.raises(DeepwmError, match="24, 3"):
    filter_key.embed(photo(), key[:5], EPS, R)
  with pytest.raises(DeepwmError, match="larger than 3 px"):
    filter_key.embed(np.zeros((3, 40, 3), np.float32), key, EPS, R)
  with pytest.raises(DeepwmError, match="reference must have its image's shape"):
    filter_key.readings([photo(64)], R, [photo(32)])
  with pytest.raises(DeepwmError, match="2 images but 1 references"):
    filter_key.readings([photo(64), photo(64)], R, [photo(64)])
  c = tiny.get_config()
  c.protect.method = "filter"
  c.protect.filter.eps = 0.0
  with pytest.raises(DeepwmError, match="protect.filter.eps=0.0"):
    config.validate(c)
  c.protect.filter.eps, c.protect.filter.radius = 0.02, 16
  with pytest.raises(DeepwmError, match="protect.filter.radius=16"):
    config.validate(c)


@pytest.fixture(scope="module")
def filter_run(tmp_path_factory):
  c = tiny.get_config()
  c.protect.method = "filter"
  c.protect.filter.update(surrogate_archs=("cnn",), null_archs=("unet",))
  c.evaluate.update(served=("jpeg:90",), set_size=4)
  workdir = str(tmp_path_factory.mktemp("filter"))
  return c, workdir, pipeline.run(c, workdir, log=lambda *_: None)


@pytest.mark.slow
def test_pipeline_kit_and_cli(filter_run, tmp_path, capsys):
  cfg, workdir, rep = filter_run
  assert rep["method"] == "filter" and rep["key"]["bits"] == 72
  assert set(rep["groups"]) == set(rep["groups_alone"]) == {
      "watermarked", "surrogate cnn", "clean M(A)", "inputs A", "another key", "null unet"}
  assert rep["groups"]["watermarked"]["detected"] and not rep["innocent"]["sets_detected"]
  assert rep["served"]["innocent"]["sets_detected"] == 0
  fs = rep["full_size"]
  assert fs["method"] == "filter" and fs["suspects"]["null unet"]["against_owner_outputs"]
  for row in fs["photos"]:  # no frame: the residual's share near a crop grid is its area's
    assert row["frame_share"] < row["frame_area"] + 0.05 and not row["clean"]["detected"]
  report = open(os.path.join(workdir, "report.md")).read()
  assert "filter kit" in report and "read against the owner's outputs" in report
  # The kit: any size in and out, reads against references, never another key.
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  assert kit.method == "filter" and kit.describe()["key_bits"] == 72
  x = [photo(40), photo(100)[:, :70]]
  marked = kit.embed(x)
  assert [m.shape for m in marked] == [i.shape for i in x]
  assert kit.verify(marked, references=x).detected and not kit.verify(x).detected
  with pytest.raises(DeepwmError, match="takes --search shift"):
    kit.verify(marked, search="shift")
  # Outputs shifted against the owner's (cut at another offset): read after registration.
  shifted = [np.roll(m, (3, -2), (0, 1))[4:-4, 4:-4] for m in marked]
  cut = [i[4:-4, 4:-4] for i in x]
  assert not kit.verify(shifted, references=cut).detected
  assert kit.verify(shifted, references=cut, search="shift").detected
  theirs = filter_key.new_key(kit.radius, 3, seed=5)
  other = [np.roll(filter_key.embed(i, theirs, kit.eps, kit.radius), (3, -2), (0, 1))[4:-4, 4:-4]
           for i in x]
  assert not kit.verify(other, references=cut, search="shift").detected
  with pytest.raises(DeepwmError, match="its reference is"):
    kit.verify(marked, references=[x[1], x[0]])
  # The CLI: verify against the owner's outputs (same names), and refuse unmatched names.
  for name, images in (("suspect", marked), ("owner", x)):
    imageio.write_images(str(tmp_path / name), images, ["a.png", "b.png"])
  out = tmp_path / "v.json"
  rc = cli.main(["verify", "--kit", kit.path, "--input", str(tmp_path / "suspect"),
                 "--references", str(tmp_path / "owner"), "--json", str(out)])
  assert rc == 0 and json.loads(out.read_text())["detected"]
  assert cli.main(["verify", "--kit", kit.path, "--input", str(tmp_path / "owner")]) == 1
  assert cli.main(["verify", "--kit", kit.path, "--input", str(tmp_path / "suspect"),
                   "--references", str(tmp_path / "owner"), "--search", "shift"]) == 0
  assert cli.main(["verify", "--kit", kit.path, "--input", str(tmp_path / "suspect"),
                   "--search", "scale"]) == 2
  os.rename(tmp_path / "owner" / "b.png", tmp_path / "owner" / "c.png")
  assert cli.main(["verify", "--kit", kit.path, "--input", str(tmp_path / "suspect"),
                   "--references", str(tmp_path / "owner")]) == 2
  assert "no image named 'b.png'" in capsys.readouterr().err
  assert cli.main(["kit-info", "--kit", kit.path]) == 0
  shown = capsys.readouterr().out
  assert "72-bit secret key (filter radius 3 px" in shown and "calib." not in shown
  assert str(kit.key.astype(int).tolist()) not in shown
  # Resuming the finished run writes the same kit (the key is kept in the workdir).
  again = pipeline.run(cfg, workdir, log=lambda *_: None)
  assert again["groups"]["watermarked"]["p_value"] == rep["groups"]["watermarked"]["p_value"]
  assert np.array_equal(deepwm_jax.load_kit(kit.path).key, kit.key)


@pytest.mark.slow
def test_the_zoo_reads_a_filter_kits_members_against_the_owners_outputs(filter_run, tmp_path):
  _, workdir, _ = filter_run
  out = str(tmp_path / "zoo")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  assert cli.main(["attack", "--kit", os.path.join(workdir, "kit"), "--config",
                   os.path.join(repo, "configs", "zoo_tiny.py"), "--workdir", out]) in (0, 1)
  rep = json.load(open(os.path.join(out, "report.json")))
  assert rep["method"] == "filter"
  rows = {r["name"]: r for r in rep["members"]}
  assert "unet-l2" in rows and "unet-l2@jpeg:50" in rows
  for r in rows.values():
    assert 0 <= r["success_rate"] <= 1 and 0 < r["p_value"] <= 1
    assert r["null"] is False or not r["detected"]
  assert all("whole_set_p" in r for n, r in rows.items() if "@" not in n)
