"""The keyed method end to end on a small config where H and R learn: its report, kit, CLI and
resume, a kit that never claims another key, and the exact false-claim bound on innocent models
of families the pipeline never trains."""
import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import deepwm_jax
from deepwm_jax import cli, config, pipeline, secret_key
from deepwm_jax.data import imageio, watermarks
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import keyed
from deepwm_jax.tools import recalibrate, robustness
from deepwm_jax.train import stage1, stage2
from deepwm_jax.zoo import run as zoo_run
from test_learning import learning_config


def keyed_config():
  """The learning test's config (tiny, with a stage 1 that learns), keyed, at 120 steps."""
  c = learning_config()
  c.protect.method = "keyed"
  c.protect.keyed.update(surrogate_archs=("unet",), null_archs=("cnn",), stage2_archs=("unet",))
  c.stage1.steps = 120
  c.evaluate.update(served=("jpeg:90", "blur:1.0"), set_size=8)  # two sets of 8 per group
  return c


@pytest.fixture(scope="module")
def keyed_run(tmp_path_factory):
  cfg = keyed_config()
  workdir = str(tmp_path_factory.mktemp("keyed"))
  return cfg, workdir, pipeline.run(cfg, workdir, log=lambda *_: None)


@pytest.mark.slow
def test_report_kit_and_resume(keyed_run, tmp_path, capsys):
  cfg, workdir, rep = keyed_run
  assert rep["method"] == "keyed" and rep["key"]["bits"] == 64
  assert "stage2" in rep["timing"] and "keyed_stage2_0_unet" in rep["timing"]
  assert set(rep["groups"]) == {"watermarked", "surrogate unet", "clean M(A)", "inputs A",
                                "another key", "null cnn"}
  for g in rep["groups"].values():
    assert 0 <= g["matches"] <= 64 and 0 < g["p_value"] <= 1 and g["n_images"] == 16
  # H and R learned: every protected image is detected on its own; nothing innocent is, and
  # neither are images carrying another key. B' = B at the start: the watermark is there.
  wm = rep["groups"]["watermarked"]
  assert wm["image_rate"] >= 0.9 and wm["p_value"] < 1e-15
  for name, g in rep["groups"].items():
    if g["role"] == "innocent":
      assert not g["detected"] and g["image_rate"] == 0.0, name
  assert rep["innocent"]["images_detected_alone"] == 0 and not rep["innocent"]["sets_detected"]
  assert rep["innocent"]["n_sets"] == 4 and rep["innocent"]["smallest_set_p_value"] > 1e-6
  assert 25.0 < rep["fidelity"]["psnr"] < 60.0
  # A kit that reads its outputs and claims nothing innocent has no warnings; one that does
  # not read them, or claims an innocent set, is told so first thing in the report.
  assert rep["warnings"] == []
  assert "## Warnings" not in open(os.path.join(workdir, "report.md")).read()
  bad = copy.deepcopy(rep)
  bad["groups"]["watermarked"]["detected"] = False
  bad["innocent"]["sets_detected"] = ["null cnn"]
  warned = keyed.warnings(bad)
  assert len(warned) == 2 and "did not learn to embed" in warned[0] and "null cnn" in warned[1]
  # After serving: every group in two sets of 8 under each distortion; no innocent set claimed.
  sv = rep["served"]
  assert sv["specs"] == ["jpeg:90", "blur:1.0"] and set(sv["groups"]) == set(rep["groups"])
  assert all(r["sets"] == 2 for g in sv["groups"].values() for r in g["rows"].values())
  assert sv["innocent"] == {"sets": 4 * 2 * 2, "sets_detected": 0}
  assert "## After serving (sets of 8)" in open(os.path.join(workdir, "report.md")).read()
  # Full size: the keyed kit also judges the shifted photo and the clean one with its alignment
  # search, and both cut to 60% of each side at an offset of their own; the search's bound
  # (every shift counted) keeps the clean photo unclaimed, whole or cut.
  for r in rep["full_size"]["photos"]:
    assert set(r["searched"]) == {"protected shifted 1 px", "clean", "crop", "protected cropped",
                                  "clean cropped"}
    for clean in (r["searched"]["clean"], r["searched"]["clean cropped"]):
      assert not clean["detected"] and clean["p_value"] > 1e-6
  # The imitator and the null model serve whole photos (four squares, one size): each judged
  # alone and as a set; the null model, innocent, is never claimed, whatever its size.
  sus = rep["full_size"]["suspects"]
  assert set(sus) == {"surrogate unet", "null cnn"}
  for g in sus.values():
    assert g["n_images"] == 4 and g["height"] == g["width"] and g["height"] % 32 == 0
    assert len(g["p_values"]) == 4 and all(0 <= m <= 64 for m in g["matches"])
  null = sus["null cnn"]
  assert null["role"] == "innocent" and null["detected_alone"] == 0
  assert not null["set"]["detected"] and min(null["p_values"]) > 1e-6
  md = open(os.path.join(workdir, "report.md")).read()
  assert "clean, searched" in md and "cropped to 60%, searched" in md
  assert "### Imitators serving whole photos" in md
  for f in ("report.md", "report.json", "figures/grid.png", "figures/innocent_qq.png",
            "figures/served.png"):
    assert os.path.exists(os.path.join(workdir, f)), f
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  assert kit.method == "keyed" and kit.key.shape == (64,)
  # The report's key is the kit's, and a resumed run keeps it (it is drawn once); the CLI
  # resumes the same run and prints one line per group.
  cfg_file = tmp_path / "keyed_cfg.py"
  cfg_file.write_text(f"import sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                      "from test_keyed import keyed_config as get_config\n")
  assert cli.main(["run", "--config", str(cfg_file), "--workdir", workdir]) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["watermarked"]["matches"] == rep["groups"]["watermarked"]["matches"]
  np.testing.assert_array_equal(deepwm_jax.load_kit(os.path.join(workdir, "kit")).key, kit.key)
  # Two runs never share a key: it comes from the operating system, not from the config.
  assert not np.array_equal(secret_key.new_key(64), kit.key)


@pytest.mark.slow
def test_kit_api_cli_and_bad_input(keyed_run, tmp_path, capsys):
  _, workdir, _ = keyed_run
  kit_path = os.path.join(workdir, "kit")
  kit = deepwm_jax.load_kit(kit_path)
  # Crops no stage used (offset 77): what the owner's API serves tomorrow.
  x = pairs_lib.make_pairs(kit.config, "val", 5, 77).b
  marked = kit.embed(x)
  assert marked.shape == x.shape and kit.readings(marked).shape == (5, 64)
  v = kit.verify(marked)
  assert isinstance(v, secret_key.KeyVerdict) and v.detected and v.p_value < 1e-15
  assert not kit.verify(x).detected
  # A kit never claims images that carry another key.
  other = secret_key.new_key(64, seed=123)
  embed_other = stage1.make_embed_fn(kit.config, keyed.pattern(kit.config, other))
  carrying_other = np.asarray(embed_other(kit.embedder_vars, x))
  assert secret_key.decide(kit.readings(carrying_other), other, 1e-6).detected
  assert not kit.verify(carrying_other).detected
  for name, images, want in (("marked", marked, 0), ("clean", x, 1)):
    imageio.write_images(str(tmp_path / name), images, [f"{i}.png" for i in range(5)])
    out = tmp_path / f"{name}.json"
    rc = cli.main(["verify", "--kit", kit_path, "--input", str(tmp_path / name),
                   "--json", str(out)])
    rec = json.loads(out.read_text())
    assert rc == want and rec["detected"] == (want == 0) and rec["n_bits"] == 64
    assert "key bits match" in capsys.readouterr().out
  assert cli.main(["kit-info", "--kit", kit_path]) == 0
  shown = capsys.readouterr().out
  assert "64-bit secret key" in shown and str(kit.key.tolist()) not in shown
  with pytest.raises(DeepwmError, match="at least 32x32"):
    kit.embed(np.zeros((2, 16, 16, 3), np.float32))
  with pytest.raises(DeepwmError, match="NaN"):
    kit.verify(np.full((2, 32, 32, 3), np.nan, np.float32))
  assert cli.main(["verify", "--kit", kit_path, "--input", str(tmp_path / "clean"),
                   "--message-evidence"]) == 2
  # The zoo judges a keyed kit's imitators by the same exact test (deepwm attack).
  frac, _, centred, v = zoo_run._judge(kit, marked)
  assert v.detected and np.all(frac >= kit.threshold) and np.all(centred > 0.5)
  # Commands built on a calibrated statistic refuse a keyed kit in one line.
  with pytest.raises(DeepwmError, match="keyed kit"):
    recalibrate.recalibrate(workdir, str(tmp_path / "recal"))


def test_invalid_keyed_config():
  c = keyed_config()
  c.protect.keyed.cell = 5
  with pytest.raises(DeepwmError, match="cell"):
    config.validate(c)
  c = keyed_config()
  c.protect.keyed.reading_loss = "l2"
  with pytest.raises(DeepwmError, match="reading_loss='l2'; use drawing or hinge"):
    config.validate(c)
  c = keyed_config()
  c.protect.keyed.margin = 0.0
  with pytest.raises(DeepwmError, match=r"margin=0.0; use a value in \(0, 0.5\]"):
    config.validate(c)
  c = keyed_config()
  c.evaluate.served = ("jpeg:500",)
  with pytest.raises(DeepwmError, match="evaluate.served: .*jpeg:500"):
    config.validate(c)
  c = keyed_config()
  c.protect.keyed.null_archs = ("vit",)
  with pytest.raises(DeepwmError, match="null_archs"):
    config.validate(c)


def _innocent_outputs(x):
  """Image models of families the pipeline never trains, none of which saw the key."""
  k = jax.random.normal(jax.random.PRNGKey(3), (5, 5, 3, 3)) * 0.2
  conv = jax.lax.conv_general_dilated(jnp.asarray(x) * 2 - 1, k, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  blur = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4
  return {"random tanh generator in [-1, 1] rescaled": np.asarray(0.5 + 0.5 * jnp.tanh(conv)),
          "box blur": blur, "inverted": 1.0 - x, "constant": np.full_like(x, 0.3),
          "posterised": np.round(x * 4) / 4}


@pytest.mark.slow
def test_one_image_of_any_size_carries_a_verdict(keyed_run):
  """Readings are summed over an image's tiled windows: one odd-sized protected image is
  detected by itself, its original never."""
  from test_windows import odd_photos
  _, workdir, _ = keyed_run
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  photo = odd_photos()[1]  # 100 x 150
  marked = kit.embed([photo])
  assert marked[0].shape == photo.shape
  assert kit.verify(marked).detected and kit.verify(marked).p_value < 1e-6
  assert not kit.verify([photo]).detected
  assert kit.readings([photo]).shape == (1, 64)
  kit.config.protect.keyed.symmetry = "flips"  # the search rolls cells, which tied cells forbid
  with pytest.raises(DeepwmError, match="search is built for keys without symmetry"):
    kit.verify(marked, search="shift")


def test_a_wide_image_is_read_from_half_its_tiles(keyed_run):
  """Past 8 tiles along an axis a keyed kit reads a checkerboard of tiles: half the work, and
  the image is still detected, its original not."""
  from test_windows import odd_photos
  _, workdir, _ = keyed_run
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  s = kit.image_size
  p = odd_photos()[1]  # 100 x 150, mirrored side by side to 10 tiles wide
  photo = np.ascontiguousarray(np.concatenate([p, p[:, ::-1], p], axis=1)[:3 * s, :10 * s])
  assert kit.window_counts([photo]) == [15]  # 30 tiles, half of them read
  marked = kit.embed([photo])
  assert kit.verify(marked).p_value < 1e-6
  assert not kit.verify([photo]).detected


def test_alignment_search_reads_shifted_and_cropped_images(keyed_run, capsys, tmp_path):
  """A protected image cropped at an offset that is not a multiple of the crop loses the
  key's phase: the plain verdict misses it, the 'shift' search finds it and where, with its
  p-value multiplied by every alignment tried; the clean original stays undetected."""
  from test_windows import odd_photos
  _, workdir, _ = keyed_run
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  photo = odd_photos()[1]  # 100 x 150
  marked = kit.embed([photo])[0][7:, 13:]
  assert not kit.verify([marked]).detected
  v = kit.verify([marked], search="shift")
  assert v.hypotheses == 4 * 4 * 64 and v.detected and v.p_value >= 1024 * 2.0 ** -64
  assert v.alignment["scale"] == 1.0
  assert [o % 4 for o in v.alignment["offset"]] == [7 % 4, 13 % 4]  # the cell phase found
  assert not kit.verify([photo[7:, 13:]], search="shift").detected
  # `deepwm robustness` judges each image alone and the images as one set from one search:
  # each image's p-value is the one it gets searched by itself.
  j = robustness.judge(kit, [marked, photo[7:, 13:], photo[:20]], "shift")
  assert j["alone"][0] == (True, kit.verify([marked], search="shift").p_value)
  assert not j["alone"][1][0] and j["alone"][2] == (False, 1.0)  # 20 px: cannot be read
  assert j["set_p"] == kit.verify([marked, photo[7:, 13:]], search="shift").p_value
  with pytest.raises(DeepwmError, match="search 'rotate' is not one of none, shift, scale"):
    kit.verify([marked], search="rotate")
  folder = tmp_path / "suspect"
  imageio.write_images(str(folder), [marked], ["a.png"])
  assert cli.main(["verify", "--kit", os.path.join(workdir, "kit"), "--input", str(folder),
                   "--search", "shift"]) == 0
  assert "best of 1024 alignments" in capsys.readouterr().out


def test_alignment_search_keeps_the_exact_bound():
  """Readings that know nothing of the key, searched over every alignment: the corrected
  p-value is a bound (at most alpha of keys give p <= alpha), and a reader that sees the key
  rolled by whole cells is found at that roll."""
  from deepwm_jax import alignment
  rng = np.random.default_rng(0)
  size, cell = 32, 4
  img = np.zeros((64, 64, 3), np.float32)
  views = alignment._views(img, size, cell, (1.0,))
  assert len(views) == 16 and [v.shape[:2] for _, o, v in views if o in (0, 5)] == [
      (64, 64), (32, 32)]  # whole windows only, every one on the grid
  # 'scale' reads the image resized by 1/f (17 coarse factors first): f = 0.5 doubles it.
  assert alignment.n_hypotheses("scale", size, cell) == 65 * 16 * 64
  scaled = alignment._views(img, size, cell, alignment.SCALES)
  assert {v.shape[:2] for j, o, v in scaled if o == 0 and alignment.SCALES[j] == 0.5} == {
      (128, 128)}
  noise = lambda views: rng.normal(size=(len(views), 64))
  p = [alignment.search(noise, [img], secret_key.new_key(64, seed=i), size, cell, 1e-6,
                        "shift").p_value for i in range(300)]
  assert np.mean(np.array(p) <= 0.5) <= 0.5 and min(p) > 1e-6
  key = secret_key.new_key(64, seed=1)
  rolled = alignment.key_rolls(key, size, cell)[2 * 8 + 5]  # 2 cells down, 5 across
  exact = lambda views: np.stack([rolled if o == 3 else rng.normal(size=64) * 0.01
                                  for o, _ in enumerate(views)])
  v = alignment.search(exact, [img], key, size, cell, 1e-6, "shift")
  assert v.matches == 64 and v.detected
  assert v.alignment["offset"] == [(4 * 2 - 0) % 32, (4 * 5 - 3) % 32]


@pytest.mark.slow
def test_key_study_trains_one_imitator_per_key_and_judges_it_against_that_key(
    keyed_run, tmp_path, capsys):
  from deepwm_jax.tools import key_study
  cfg, workdir, rep = keyed_run
  assert key_study.main(["--workdir", workdir, "--keys", "2", "--arch", "unet",
                         "--steps", "7"]) == 0
  out = json.load(open(os.path.join(workdir, "key_study_unet_7.json")))
  assert out["steps"] == 7
  assert out["n_keys"] == 2 and out["bits"] == rep["key"]["bits"] and len(out["keys"]) == 2
  for row in out["keys"]:
    assert 0 <= row["matches"] <= out["bits"] and 0 < row["p_value"] <= 1
    assert row["detected"] == (row["p_value"] <= out["alpha"])
  assert out["sets_detected"] == sum(row["detected"] for row in out["keys"])
  assert "of 2 keys: the unet imitator (7 steps) detected as a set" in capsys.readouterr().out
  for argv, needle in ((["--arch", "vit"], "--arch 'vit'; use unet, resnet or cnn"),
                       (["--keys", "0"], "--keys 0 --steps 0; use 1 or more keys")):
    assert key_study.main(["--workdir", workdir] + argv) == 2
    assert needle in capsys.readouterr().err
  assert key_study.main(["--workdir", str(tmp_path)]) == 2
  assert "config.json' not found" in capsys.readouterr().err


def test_key_study_refuses_a_run_that_is_not_keyed(tmp_path, capsys):
  from deepwm_jax.tools import key_study
  (tmp_path / "config.json").write_text(config.load("tiny").to_json_best_effort())
  assert key_study.main(["--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "is not a keyed run (protect.method='deep')" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_exact_bound_on_unseen_families(keyed_run):
  """Per family, the randomised p-values over fresh keys are uniform (KS), and at most ~1% of
  keys give p <= 0.01: what the construction says for any model that never saw the key."""
  _, workdir, _ = keyed_run
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  x = pairs_lib.make_pairs(kit.config, "val", 8, 91).b
  rng = np.random.default_rng(2)
  n_keys = 2000
  for name, y in _innocent_outputs(x).items():
    v = kit.readings(np.clip(y, 0, 1)).sum(0)  # the set's reading, as verify pools it
    w = secret_key.rank_sum(v, rng.choice([-1.0, 1.0], (n_keys, 64)))
    # Randomised p-value P(W > w) + U P(W = w): exactly uniform under the null.
    above, p = secret_key.rank_sum_pvalue(w + 1, 64), secret_key.rank_sum_pvalue(w, 64)
    p_rand = above + rng.random(n_keys) * (p - above)
    assert stats.kstest(p_rand, "uniform").pvalue > 1e-3, name
    assert np.mean(p <= 0.01) <= 0.01 + 4 * np.sqrt(0.01 * 0.99 / n_keys), name


def test_key_patterns_read_back_exactly():
  cfg = keyed_config()
  key = secret_key.new_key(keyed.n_bits(cfg), seed=4)
  w = keyed.pattern(cfg, key)
  assert w.shape == (32, 32, 3) and set(np.unique(w)) == {0.0, 1.0}
  v = np.asarray(watermarks.key_readings(w[None], cfg.protect.keyed.cell))
  np.testing.assert_array_equal(np.sign(v[0]), key)
  blank = watermarks.key_blank(32, 3)
  assert np.all(np.asarray(watermarks.key_readings(blank[None], 4)) == 0)
  bits = np.asarray(watermarks.random_key_bits(jax.random.PRNGKey(0), 3, 32, 4))
  assert bits.shape == (3, 64) and set(np.unique(bits)) == {-1.0, 1.0}


@pytest.mark.parametrize("symmetry,bits", [("none", 256), ("flips", 64), ("dihedral", 36)])
def test_symmetric_keys_survive_flips_and_read_back(symmetry, bits):
  """protect.keyed.symmetry ties mirrored cells to one bit: the pattern is the same after the
  flips (and quarter turns) an augmenting imitator applies, and still reads back exactly."""
  key = secret_key.new_key(watermarks.key_bits(32, 2, symmetry), seed=5)
  assert key.size == bits
  w = np.asarray(watermarks.key_pattern(key, 32, 2, 3, symmetry))
  same = lambda f: np.array_equal(f(w), w)
  flips = [lambda x: x[::-1], lambda x: x[:, ::-1]]
  turns = [lambda x: np.rot90(x, 1, (0, 1)), lambda x: np.transpose(x, (1, 0, 2))]
  assert all(same(f) for f in flips) == (symmetry != "none")
  assert all(same(f) for f in turns) == (symmetry == "dihedral")
  v = np.asarray(watermarks.key_readings(w[None], 2, symmetry))
  np.testing.assert_array_equal(np.sign(v[0]), key)
  noisy = w + np.random.default_rng(0).normal(0, 0.05, w.shape).astype(np.float32)
  np.testing.assert_allclose(np.asarray(watermarks.key_readings(noisy[None], 2, symmetry))[0],
                             0.5 * key, atol=0.05)  # each bit: the mean of its cells


def test_symmetric_key_config_errors():
  c = config.load("keyed")
  c.protect.keyed.symmetry = "rotations"
  with pytest.raises(DeepwmError, match="symmetry='rotations'; use none, flips or dihedral"):
    config.validate(c)
  c.protect.keyed.symmetry = "dihedral"  # 4 px cells on 32 px crops: 10 bits
  with pytest.raises(DeepwmError, match="10 key bits .* cannot reach a p-value of 1e-6"):
    config.validate(c)
  c.protect.keyed.cell = 2
  config.validate(c)


@pytest.mark.parametrize("reading_loss", ["drawing", "hinge"])
def test_stage1_reading_loss_is_what_the_config_says(reading_loss):
  """protect.keyed.reading_loss: 'drawing' is the MSE of R(B') to the key's cells, 'hinge'
  mean(relu(margin - sign(bit) * reading)) over the cells. At the first step H changes
  nothing (its last layer starts at zero), so both are functions of R(B) and the step's keys."""
  cfg = config.load("tiny")  # small networks: two compiles of the step
  cfg.protect.method = "keyed"
  cfg.protect.keyed.update(reading_loss=reading_loss, margin=0.2)
  s, c, cell = cfg.data.image_size, cfg.data.channels, cfg.protect.keyed.cell
  blank = watermarks.key_blank(s, c)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(size=(4, s, s, c)), jnp.float32) for k in ("a", "b")}
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), blank)
  step_key = jax.random.PRNGKey(1)
  _, m = stage1.make_step(cfg, blank, blank, key_cell=cell)(state, batch, step_key)
  w = watermarks.key_pattern(watermarks.random_key_bits(step_key, 4, s, cell), s, cell, c)
  r_b = stage1.make_extract_fn(cfg)(state["extractor"], batch["b"])
  if reading_loss == "hinge":
    side = np.sign(np.asarray(watermarks.key_readings(w, cell)))
    want = np.mean(np.maximum(0.0, 0.2 - side * np.asarray(watermarks.key_readings(r_b, cell))))
  else:
    want = np.mean((np.asarray(r_b) - np.asarray(w)) ** 2)
  np.testing.assert_allclose(float(m["wm_mse"]), want, rtol=1e-4)


def test_stage1_adds_the_hardest_distortions_reading_loss():
  """stage1.hardest_distortion: the mean hinge of the layer's entry read worst in the batch,
  added to the loss with that weight (nothing else changes)."""
  cfg = config.load("tiny")
  cfg.protect.method = "keyed"
  cfg.protect.keyed.update(reading_loss="hinge", margin=0.2)
  cfg.stage1.update(distortions="none, noise:0.5, blur:2", distortion_ramp=(0.0, 0.0))
  s, c, cell = cfg.data.image_size, cfg.data.channels, cfg.protect.keyed.cell
  blank = watermarks.key_blank(s, c)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(size=(8, s, s, c)), jnp.float32) for k in ("a", "b")}
  state = stage1.init_state(cfg, jax.random.PRNGKey(0), blank)
  metrics = {}
  for weight in (0.0, 2.0):
    cfg.stage1.hardest_distortion = weight
    _, metrics[weight] = stage1.make_step(cfg, blank, blank, key_cell=cell)(
        state, batch, jax.random.PRNGKey(1))
  assert "wm_hardest" not in metrics[0.0]
  hardest = float(metrics[2.0]["wm_hardest"])
  assert hardest >= float(metrics[2.0]["wm_mse"]) > 0
  np.testing.assert_allclose(float(metrics[0.0]["wm_mse"]), float(metrics[2.0]["wm_mse"]))
  added = cfg.stage1.loss_scale * cfg.stage1.weights.watermark * 2.0 * hardest
  np.testing.assert_allclose(float(metrics[2.0]["loss"]) - float(metrics[0.0]["loss"]), added,
                             rtol=1e-3)


@pytest.mark.parametrize("reading_loss", ["drawing", "hinge"])
def test_stage2_reads_surrogates_with_stage1s_reading_loss(reading_loss):
  """A keyed stage 2 asks R for what stage 1 did: with the hinge, each cell's sign by the
  margin on the surrogates' outputs and B' (against each one's training key), not the
  drawing's MSE, which would pull a hinge-trained R back to full amplitude."""
  cfg = config.load("tiny")
  cfg.protect.method = "keyed"
  cfg.protect.keyed.update(reading_loss=reading_loss, margin=0.2)
  s, c, cell = cfg.data.image_size, cfg.data.channels, cfg.protect.keyed.cell
  blank = watermarks.key_blank(s, c)
  keys = [secret_key.new_key(watermarks.key_bits(s, cell), seed=i) for i in (1, 2)]
  patterns = np.stack([np.asarray(watermarks.key_pattern(k, s, cell, c)) for k in keys])
  rng = np.random.default_rng(0)
  img = lambda n: jnp.asarray(rng.uniform(size=(n, s, s, c)), jnp.float32)
  batch = {"surrogate": img(4), "watermarked": img(4), "negative": img(8),
           "key_index": jnp.asarray([0, 1, 1, 0], jnp.int32)}
  r_vars = stage1.init_state(cfg, jax.random.PRNGKey(0), blank)["extractor"]
  step = stage2.make_step(cfg, blank, blank, patterns, key_cell=cell)
  _, m = step(stage2.init_state(cfg, r_vars), batch, jax.random.PRNGKey(1))
  w = patterns[np.asarray(batch["key_index"])]
  r_sur = np.asarray(stage1.make_extract_fn(cfg)(r_vars, batch["surrogate"]))
  if reading_loss == "hinge":
    side = np.sign(np.asarray(watermarks.key_readings(w, cell)))
    want = np.mean(np.maximum(0.0, 0.2 - side * np.asarray(watermarks.key_readings(r_sur, cell))))
  else:
    want = np.mean((r_sur - w) ** 2)
  np.testing.assert_allclose(float(m["sur_mse"]), want, rtol=1e-4)
