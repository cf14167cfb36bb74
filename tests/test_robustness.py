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
  # The sweep records the protected images' fidelity at their own size.
  fid = rec["fidelity"]
  assert len(fid["psnr"]) == len(fid["ssim"]) == 4
  assert 15 < fid["psnr_mean"] < 100 and 0 < fid["ssim_mean"] <= 1
  assert "Fidelity of the protected images" in (out / "robustness.md").read_text()


def test_compare_draws_the_tradeoff_of_two_sweeps(tiny_run, tmp_path, capsys):
  kit = os.path.join(tiny_run[0], "kit")
  a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "cmp"
  assert cli.main(["robustness", "--kit", kit, "--workdir", str(a), "--size", "48",
                   "--only", "noise,blur"]) == 0
  assert cli.main(["robustness", "--kit", kit, "--workdir", str(b), "--size", "48",
                   "--only", "noise"]) == 0
  assert cli.main(["robustness", "--compare", str(a), str(b), "--workdir", str(out)]) == 0
  rec = json.loads((out / "tradeoff.json").read_text())
  # Only the distortions both sweeps ran are compared, one value per kit.
  assert [(r["family"], r["strength"]) for r in rec["rows"]] == [
      ("noise", s) for s in robustness.SWEEPS["noise"][1]]
  assert [k["label"] for k in rec["kits"]] in (["a", "b"], ["b", "a"])
  for r in rec["rows"]:
    assert len(r["detected"]) == 2 and all(0 <= d <= 1 for d in r["detected"])
  assert os.path.getsize(out / "tradeoff.png") > 1000
  assert "| a |" in (out / "tradeoff.md").read_text()
  capsys.readouterr()
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "robustness.json").write_text("{not json")
  for argv, msg in ((["--compare", str(a)], "at least two"),
                    (["--compare", str(a), str(tmp_path)], "holds no robustness.json"),
                    (["--compare", str(a), str(bad)], "cannot be read"),
                    (["--compare", str(a), str(b), "--kit", kit], "not both"),
                    ([], "--kit KIT is required")):
    assert cli.main(["robustness", "--workdir", str(out)] + argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
