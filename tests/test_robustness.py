"""`deepwm robustness`: each distortion on known inputs, and a tiny sweep end to end."""
import json
import os

import numpy as np
import pytest

from deepwm_jax import cli
from deepwm_jax.tools import robustness


def test_distortions_change_sizes_as_documented():
  img = np.random.default_rng(0).uniform(size=(100, 150, 3)).astype(np.float32)
  assert robustness.shift(img, 3).shape == (97, 147, 3)
  np.testing.assert_array_equal(robustness.shift(img, 3)[0, 0], img[3, 3])
  assert robustness.crop_kept(img, 0.6).shape == (60, 90, 3)
  assert robustness.rescale_kept(img, 0.5).shape == (50, 75, 3)
  for fam, (_, strengths, fn) in robustness.SWEEPS.items():
    for s in strengths:
      out = fn(img, s)
      assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1, (fam, s)
      if fam not in ("shift", "crop_kept", "rescale_kept"):  # the ones that change the size
        assert out.shape == img.shape, (fam, s)
  # The mildest JPEG barely changes the image; the strongest changes it more.
  jpeg = robustness.SWEEPS["jpeg"][2]
  assert np.abs(jpeg(img, 95) - img).mean() < np.abs(jpeg(img, 30) - img).mean()


def test_tiny_sweep_writes_json_table_and_figure(tiny_run, tmp_path, capsys):
  kit = os.path.join(tiny_run[0], "kit")
  out = tmp_path / "rob"
  assert cli.main(["robustness", "--kit", kit, "--workdir", str(out), "--size", "48",
                   "--only", "shift,noise"]) == 0
  rec = json.loads((out / "robustness.json").read_text())
  assert {r["family"] for r in rec["rows"]} == {"shift", "noise"}
  assert len(rec["rows"]) == 7 and rec["n_images"] == 4
  for r in rec["rows"]:
    assert 0 <= r["protected_detected"] <= 1 and r["clean_detected"] == 0.0
    assert 0 < r["clean_set_p"] <= 1 and not r["clean_set_detected"]
    assert 0 < r["protected_set_p"] <= 1
  assert os.path.getsize(out / "robustness.png") > 1000
  assert "| shift |" in (out / "robustness.md").read_text()
  assert "clean set p" in (out / "robustness.md").read_text()
  assert cli.main(["robustness", "--kit", kit, "--workdir", str(out), "--only", "nope"]) == 2
  assert "unknown distortion" in capsys.readouterr().err
  assert cli.main(["robustness", "--kit", kit, "--workdir", str(out), "--search", "shift"]) == 2
  assert "--search is for keyed kits" in capsys.readouterr().err
