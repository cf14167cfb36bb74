"""The false-claim study at a small scale: innocent images stay undetected; the output's shape."""
import json
import os

import numpy as np
import pytest

from deepwm_jax.tools import false_claims
from test_payload import make_payload_kit


@pytest.mark.slow
def test_false_claim_study_small(tiny_run, tmp_path):
  kit = make_payload_kit(tiny_run, str(tmp_path / "kit"))
  workdir = str(tmp_path / "study")
  s = false_claims.run_study(kit, workdir, n_clean=48, n_nulls=2, n_surrogates=1, null_steps=3,
                             null_ngf=4, null_images=16, set_size=8, n_protected=16,
                             n_calibration_photos=32, attacks={"jpeg": (50,), "blur": (1.0,)},
                             archs=("unet",), log=lambda *_: None)
  fd = s["false_detections"]
  assert fd["clean_sets"] == 0 and fd["clean_images"] == 48
  assert fd["null_models"] == 2 and fd["null_models_detected"] == 0
  names = [g["name"] for g in s["groups"]]
  assert names[0] == "clean images" and len(names) == 1 + 2 + 1 + 1 + 2
  assert [g["n_sets"] for g in s["groups"]] == [6, 2, 2, 2, 2, 2, 2]
  # A valid p-value: never more small p-values than nominal (here: none below alpha).
  assert s["set_p_value_min"] >= s["alpha"] and s["n_negative_sets"] == 10
  by_kind = s["image_p_values"]["by_kind"]
  assert by_kind["clean"]["n"] == 6 and by_kind["null"]["n"] == 4
  # Against its own kind alone: 3 sets of inputs A vs clean_A, 3 of targets B vs clean_B; no
  # model-level null in this kit, so nothing for the null models' sets.
  own = s["image_p_values"]["own_kind"]
  # and 32 crops of the null's own photos: 2 sets of A vs clean_A, 2 of B vs clean_B.
  assert list(own) == ["clean sets against clean_A / clean_B",
                       "clean sets of the null's own photos against clean_A / clean_B"]
  assert [u["n"] for u in own.values()] == [6, 4]
  assert fd["clean_calibration_photo_sets"] == 0
  clean_sets = s["groups"][0]["p_by_kind"]
  assert all(0 < by["clean_A"] <= 1 and 0 < by["clean_B"] <= 1 for by in clean_sets)
  assert s["fair_bits"]["n_images"] == 48 + 32
  assert [(r["attack"], r["value"]) for r in s["attacks"]] == [("jpeg", 50), ("blur", 1.0)]
  # A payload kit: each attack row also reads the message's bits back.
  assert all({"bit_accuracy", "matches_16", "stat_mean", "p_value_16"} <= set(r)
             for r in s["attacks"])
  with open(os.path.join(workdir, "study.json")) as f:
    assert json.load(f)["false_detections"] == fd
  for name in ("qq.png", "qq_own_kind.png", "stats_hist.png", "attacks.png"):
    assert os.path.getsize(os.path.join(workdir, "figures", name)) > 1000
  assert "False-claim study" in open(os.path.join(workdir, "study.md")).read()
  # Resumable: a second call reuses the trained nulls' checkpoints and gives the same numbers.
  again = false_claims.run_study(kit, workdir, n_clean=48, n_nulls=2, n_surrogates=1,
                                 null_steps=3, null_ngf=4, null_images=16, set_size=8,
                                 n_protected=16, n_calibration_photos=32, attacks={},
                                 archs=("unet",), log=lambda *_: None)
  assert again["false_detections"] == fd
  np.testing.assert_allclose(again["set_p_value_min"], s["set_p_value_min"])


def test_study_refuses_too_few_images(tiny_run, tmp_path):
  from deepwm_jax.errors import DeepwmError
  with pytest.raises(DeepwmError, match="set_size"):
    false_claims.run_study(os.path.join(tiny_run[0], "kit"), str(tmp_path), n_clean=4,
                           set_size=16)
