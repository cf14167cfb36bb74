"""The traditional spread-spectrum baseline: embedding strength, the z-score's null
distribution, detection, the kit (verify, CLI, damage) and the pipeline with it."""
import json
import os
import shutil

import numpy as np
import pytest

from deepwm_jax import config, kit as kit_lib, pipeline, verdict
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.kit import traditional as traditional_kit
from deepwm_jax.stages import traditional
from deepwm_jax.errors import DeepwmError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def photos(tiny_cfg):
  """Clean 32 px crops of the builtin photos (validation split)."""
  return pairs_lib.make_pairs(tiny_cfg, "val", 96, 3).b


def test_embedding_meets_the_target_psnr(photos):
  for target in (35.0, 40.0):
    ss = traditional.SpreadSpectrum(7, 32, 3, psnr=target)
    mse = np.mean((ss.embed(photos) - photos) ** 2, axis=(1, 2, 3))
    psnr = float(np.mean(-10 * np.log10(mse)))
    assert target - 0.1 < psnr < target + 1.0  # clipping only removes energy


def test_null_z_scores_are_standard_and_watermarks_stand_out(photos):
  ss = traditional.SpreadSpectrum(7, 32, 3)
  z_clean = ss.statistic(photos)
  assert abs(np.mean(z_clean)) < 0.4 and 0.6 < np.std(z_clean) < 1.4
  z_wm = ss.statistic(ss.embed(photos))
  assert np.median(z_wm) > 8
  # Another key's pattern is nearly orthogonal: its detector sees a small fraction of the
  # signal (random +-1 patterns correlate ~1/sqrt(effective band size) after whitening).
  other = traditional.SpreadSpectrum(8, 32, 3).statistic(ss.embed(photos))
  assert abs(np.mean(other)) < 0.2 * np.median(z_wm)
  # Flat images hold no energy in the band: z is 0, not NaN.
  flat = np.full((2, 32, 32, 3), 0.3, np.float32)
  np.testing.assert_array_equal(ss.statistic(flat), 0.0)


def test_bad_images_are_refused():
  ss = traditional.SpreadSpectrum(7, 32, 3)
  with pytest.raises(DeepwmError, match="shape"):
    ss.embed(np.zeros((2, 16, 16, 3), np.float32))
  with pytest.raises(DeepwmError, match="outside"):
    ss.statistic(np.full((1, 32, 32, 3), 2.0, np.float32))


def _kit(tmp_path, tiny_cfg, photos):
  ss = traditional.SpreadSpectrum(7, 32, 3)
  calibration = verdict.calibrate(ss.statistic(photos[:48]), ss.statistic(ss.embed(photos[:48])),
                                  margin=1.0)
  path = traditional_kit.write_kit(str(tmp_path / "kit"), tiny_cfg, ss, calibration)
  return path, ss


def test_kit_round_trip_verify_and_describe(tmp_path, tiny_cfg, photos):
  path, ss = _kit(tmp_path, tiny_cfg, photos)
  k = kit_lib.load_kit(path)
  assert isinstance(k, traditional_kit.TraditionalKit)
  held_out = photos[48:]
  assert k.verify(k.embed(held_out)).detected
  v = k.verify(held_out)
  assert not v.detected and v.success_rate < 0.1
  np.testing.assert_allclose(k.embed(held_out), ss.embed(held_out))
  with pytest.raises(DeepwmError, match="no extractor"):
    k.extract(held_out)
  from deepwm_jax.tools import describe
  assert describe.describe_kit(path)["method"] == "traditional"


def test_altered_kit_is_refused(tmp_path, tiny_cfg, photos):
  path, _ = _kit(tmp_path, tiny_cfg, photos)
  info_path = os.path.join(path, "kit.json")
  info = json.load(open(info_path))
  info["traditional"]["key"] = 8  # someone swaps the key
  json.dump(info, open(info_path, "w"))
  with pytest.raises(DeepwmError, match="altered"):
    kit_lib.load_kit(path)


def test_cli_verify_and_embed_read_a_traditional_kit(tmp_path, tiny_cfg, photos):
  from deepwm_jax import cli
  from deepwm_jax.data import imageio
  path, _ = _kit(tmp_path, tiny_cfg, photos)
  clean_dir, wm_dir = str(tmp_path / "clean"), str(tmp_path / "wm")
  imageio.write_images(clean_dir, photos[48:], [f"{i}.png" for i in range(48)])
  assert cli.main(["embed", "--kit", path, "--input", clean_dir, "--output", wm_dir]) == 0
  out = str(tmp_path / "v.json")
  assert cli.main(["verify", "--kit", path, "--input", wm_dir, "--json", out]) == 0
  assert json.load(open(out))["detected"] is True
  assert cli.main(["verify", "--kit", path, "--input", clean_dir]) == 1


@pytest.mark.slow
def test_traditional_pipeline_reuses_unwatermarked_models(tiny_run, tmp_path):
  """A deep run's workdir copied: task and null models are reused, surrogates retrained on
  the spread-spectrum outputs; same report keys; the kit verifies."""
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run[0], workdir)
  shutil.rmtree(os.path.join(workdir, "kit"))
  cfg = config.load(os.path.join(REPO, "configs", "tiny.py"))
  cfg.protect.method = "traditional"
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(json.loads(cfg.to_json_best_effort()), f)
  lines = []
  rep = pipeline.run(cfg, workdir, log=lines.append)
  trained = {l.split("]")[0][1:] for l in lines if l.startswith("[") and "step" in l}
  assert trained == {"traditional_surrogate", "traditional_eval_surrogate"}
  assert rep["method"] == "traditional"
  assert 38.0 < rep["fidelity"]["psnr"] < 42.0
  assert rep["watermarked"]["detected"] and not rep["clean"]["detected"]
  assert all(not n["detected"] for n in rep["null"])
  assert {s["name"] for s in rep["surrogates"]} == {"surrogate-stage2", "surrogate-unseen"}
  k = kit_lib.load_kit(os.path.join(workdir, "kit"))
  assert k.calibration.threshold == pytest.approx(rep["calibration"]["threshold"])
  assert os.path.exists(os.path.join(workdir, "report.md"))
