"""The report's after-serving study (stages/served.py) with a reader whose answer is known: the
key drawn as each cell's mean level, which JPEG, blur and resizes keep and which images without
it do not have; and resuming runs written before the study existed."""
import json

import numpy as np
import pytest

from deepwm_jax import config, pipeline, report, secret_key
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import served

CELL, SIDE = 8, 64


def cell_means(x):
  """Each 8 px cell's mean level above mid-grey: [N, 64]."""
  x = np.asarray(x, np.float64).mean(-1) - 0.5
  n = x.shape[0]
  return x.reshape(n, SIDE // CELL, CELL, SIDE // CELL, CELL).mean((2, 4)).reshape(n, -1)


def test_set_slices():
  assert served.set_slices(5, 16) == [slice(0, 5)]
  assert served.set_slices(40, 16) == [slice(0, 16), slice(16, 32)]  # the remainder is left


def test_marked_sets_survive_and_innocent_sets_are_never_claimed(tmp_path):
  rng = np.random.default_rng(0)
  key = secret_key.new_key(64, seed=1)
  cells = np.kron((2.0 * key - 1).reshape(8, 8), np.ones((CELL, CELL)))[..., None]
  smooth = lambda n: np.clip(0.5 + 0.2 * rng.standard_normal((n, 8, 8, 3)).repeat(
      CELL, 1).repeat(CELL, 2), 0, 1)  # innocent: cell-wise levels of their own
  clean = smooth(32)
  groups = {"marked": ("carries the key", np.clip(clean + 0.03 * cells, 0, 1)),
            "clean": ("innocent", clean), "noise": ("innocent", rng.uniform(size=(32, 64, 64, 3)))}
  specs = ("none", "jpeg:75", "blur:1.0", "rescale:0.5", "noise:0.03")
  judge = served.keyed_judge(cell_means, key, 1e-6)
  out = served.study(judge, groups, specs, set_size=16)
  assert out["set_size"] == 16 and out["specs"] == list(specs)
  for spec in specs:
    r = out["groups"]["marked"]["rows"][spec]
    assert r["sets"] == 2 and r["sets_detected"] == 2 and r["smallest_set_p"] < 1e-6, spec
    for name in ("clean", "noise"):
      r = out["groups"][name]["rows"][spec]
      assert r["sets_detected"] == 0 and r["smallest_set_p"] > 1e-6, (name, spec)
  assert out["innocent"] == {"sets": 2 * 2 * len(specs), "sets_detected": 0}
  # The distortion is applied to what is read: a centre crop resized back moves the cells.
  moved = served.study(judge, groups, ("crop:0.5",), set_size=16)
  assert moved["groups"]["marked"]["rows"]["crop:0.5"]["sets_detected"] == 0
  # The report's section and figure draw from the same record.
  section = report.served_section({"served": out}, "figures/served.png")
  assert "sets of 16" in section and "| marked | carries the key | 2/2 |" in section
  report.save_figure(report.served_figure(out, "t"), str(tmp_path / "served.png"))
  assert (tmp_path / "served.png").stat().st_size > 0


def test_a_workdir_from_before_the_served_study_resumes(tmp_path):
  """A keyed run written before evaluate.served and the reading loss existed had their
  defaults: it resumes (and gains the report's section); a changed value is still refused."""
  cfg = config.load("keyed")
  base = config.base_config().protect.keyed
  cfg.protect.keyed.update(reading_loss=base.reading_loss, margin=base.margin)
  saved = json.loads(cfg.to_json_best_effort())
  for section, key in (("evaluate", "served"), ("evaluate", "set_size")):
    del saved[section][key]
  for key in ("reading_loss", "margin"):
    del saved["protect"]["keyed"][key]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  pipeline.check_workdir_config(cfg, str(tmp_path))  # no error
  cfg.protect.keyed.reading_loss = "hinge"
  with pytest.raises(DeepwmError, match="protect.keyed.reading_loss"):
    pipeline.check_workdir_config(cfg, str(tmp_path))
  # The shipped keyed config reads with the hinge: such an old workdir is not its run.
  with pytest.raises(DeepwmError, match="protect.keyed"):
    pipeline.check_workdir_config(config.load("keyed"), str(tmp_path))


def test_a_deep_kit_that_claims_innocent_sets_after_serving_is_warned_about():
  from deepwm_jax.stages import evaluate
  rows = lambda k: {"jpeg:50": {"sets": 4, "sets_detected": k}, "blur:1.0": {"sets": 4,
                                                                              "sets_detected": 0}}
  sv = {"groups": {"watermarked": {"role": "carries the watermark", "rows": rows(4)},
                   "clean M(A)": {"role": "innocent", "rows": rows(0)}},
        "innocent": {"sets": 8, "sets_detected": 0}}
  assert evaluate._claimed_after_serving({"served": sv}) == []
  assert evaluate._claimed_after_serving({}) == []
  sv["groups"]["null (independent)"] = {"role": "innocent", "rows": rows(1)}
  sv["innocent"] = {"sets": 16, "sets_detected": 1}
  (warning,) = evaluate._claimed_after_serving({"served": sv})
  assert "null (independent) after jpeg:50" in warning and "clean M(A)" not in warning
  assert [evaluate.role(g) for g in ("watermarked", "surrogate (unseen)", "null (protector unet)",
                                     "clean A")] == ["carries the watermark", "imitates B'",
                                                     "innocent", "innocent"]
