"""The watermark really works, end to end, on a config small enough for a test: H and R learn
in a few hundred steps, the kit detects freshly watermarked images at a tiny p-value through the
API and the CLI (exit 0), and clean images stay undetected (exit 1), at a fidelity that is not
trivially perfect (the embedder starts at B' = B) nor destroyed."""
import os

import numpy as np
import pytest

import deepwm_jax
from deepwm_jax import cli, config, pipeline
from deepwm_jax.data import imageio
from deepwm_jax.data import pairs as pairs_lib


def learning_config():
  """The tiny config with a stage 1 long enough to learn (the other stages stay tiny)."""
  c = config.load("tiny")
  c.stage1.update(steps=150, batch=8)
  c.stage1.optimizer.lr = 2e-3
  c.stage1.weights.fidelity = 5.0
  c.embedder.ngf = 8
  c.extractor.channels = 8
  c.data.update(n_protect=256, n_val=16)
  return c


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  cfg = learning_config()
  workdir = str(tmp_path_factory.mktemp("learned"))
  return cfg, workdir, pipeline.run(cfg, workdir, log=lambda *_: None)


@pytest.mark.slow
def test_the_run_reports_a_working_watermark(learned):
  _, _, rep = learned
  assert rep["watermarked"]["success_rate"] == 1.0 and rep["watermarked"]["detected"]
  assert rep["watermarked"]["p_value"] < 1e-20
  assert rep["clean"]["success_rate"] == 0.0 and not rep["clean"]["detected"]
  # B' = B at the start (PSNR 100 dB): the watermark is really there, and still faint.
  assert 30.0 < rep["fidelity"]["psnr"] < 60.0 and rep["fidelity"]["ssim"] > 0.8


@pytest.mark.slow
def test_the_kit_detects_fresh_watermarked_images_and_not_their_originals(learned, tmp_path,
                                                                          capsys):
  cfg, workdir, _ = learned
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  # Other crops than any the run used (offset 77): what the owner's API serves tomorrow.
  clean = pairs_lib.make_pairs(cfg, "val", 16, 77).b
  marked = kit.embed(clean)
  v = kit.verify(marked)
  assert v.detected and v.p_value < 1e-6 and v.success_rate >= 0.9
  c = kit.verify(clean)
  assert not c.detected and c.success_rate == 0.0
  names = [f"{i:02d}.png" for i in range(16)]
  imageio.write_images(str(tmp_path / "marked"), marked, names)
  imageio.write_images(str(tmp_path / "clean"), clean, names)
  kit_path = os.path.join(workdir, "kit")
  assert cli.main(["verify", "--kit", kit_path, "--input", str(tmp_path / "marked")]) == 0
  assert "DETECTED" in capsys.readouterr().out
  assert cli.main(["verify", "--kit", kit_path, "--input", str(tmp_path / "clean")]) == 1
  assert "not detected" in capsys.readouterr().out
  # PNG round trip (8-bit quantisation) keeps the decision.
  np.testing.assert_allclose(imageio.read_image_dir(str(tmp_path / "marked"), 32, 3)[0], marked,
                             atol=1 / 255)


@pytest.mark.slow
def test_the_kit_detects_images_of_any_size(learned):
  """Odd sizes (and a shrunk whole photo) are watermarked in windows, same size out; the
  windows of the protected images are detected, those of the originals not."""
  from test_windows import odd_photos
  cfg, workdir, _ = learned
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  photos = odd_photos()
  marked = kit.embed(photos)
  assert [m.shape for m in marked] == [p.shape for p in photos]
  v = kit.verify(marked)
  assert v.detected and v.success_rate >= 0.9 and v.n_images == sum(kit.window_counts(photos))
  assert not kit.verify(photos).detected
