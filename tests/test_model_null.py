"""The model-level null (verdict.model_pvalue, deepwm_jax/model_null.py): suspect sets ranked
among independently trained null models."""
import json
import os
import shutil

import numpy as np
import pytest
from scipy import stats as scipy_stats

from deepwm_jax import api
from deepwm_jax import kit as kit_lib
from deepwm_jax import pipeline, verdict
from deepwm_jax.stages import model_null
from deepwm_jax.tools import model_null as model_null_tool
from deepwm_jax.errors import DeepwmError
from deepwm_jax.train import imitation


def _population(rng, n_models, n_images, shift=0.0):
  """Null models whose images share a model-level offset (one model's outputs lean together)."""
  return (rng.normal(size=(n_models, 1)) + shift) + 0.3 * rng.normal(size=(n_models, n_images))


def test_model_pvalues_are_uniform_for_models_like_the_null_ones():
  # Each trial: a model null of 19 models and one innocent suspect model drawn like them. Its
  # rank p-value is uniform on {1/20, ..., 1}: valid at every x, KS small, not all near 1.
  rng = np.random.default_rng(0)
  p = np.array([verdict.model_pvalue(_population(rng, 1, 16)[0], _population(rng, 19, 64))
                for _ in range(1000)])
  assert set(np.round(p * 20).astype(int)) <= set(range(1, 21))
  for x in (0.05, 0.1, 0.25, 0.5):
    assert np.mean(p <= x) <= x + 0.03, (x, np.mean(p <= x))
  assert scipy_stats.kstest(p, "uniform").statistic < 0.1


def test_model_pvalue_is_conservative_for_other_kinds_and_refuses_big_sets():
  rng = np.random.default_rng(1)
  null = _population(rng, 24, 32)
  low = [verdict.model_pvalue(_population(rng, 1, 16, shift=-6.0)[0], null) for _ in range(50)]
  assert min(low) > 0.5  # a kind R reads lower than every null model: large p-values
  high = verdict.model_pvalue(np.full(16, 50.0), null)
  assert high == pytest.approx(1 / 25)  # never below the grid's first step
  assert verdict.model_pvalue(np.zeros(33), null) is None  # more images than each model has
  # The same suspect gets the same p-value twice (one fixed draw per set size).
  s = _population(rng, 1, 16)[0]
  assert verdict.model_pvalue(s, null) == verdict.model_pvalue(s, null)


def test_a_stray_hit_is_ranked_among_null_models_not_called_rare():
  # Innocent models that put one image in ~50 over the threshold, where p0 says 1e-4: the
  # binomial bound calls one hit in 16 images p ~ 2e-3. Ranked among null models that do the
  # same (hits first), their p-values stay valid, while a copier's many hits keep the bound.
  rng = np.random.default_rng(3)
  threshold, p0 = 0.6, 1e-4

  def model(n, rate=0.02):
    s = rng.normal(0, 0.01, n)
    s[rng.uniform(size=n) < rate] = 0.9
    return s

  p_new, p_old = [], []
  for _ in range(400):
    cal = verdict.Calibration(threshold=threshold, n_negatives=10000, n_negatives_above=0,
                              p0=p0, max_negative=0.5)
    cal = cal.with_model_null(np.stack([model(64) for _ in range(24)]))
    s = model(16)
    v = verdict.decide(s, cal, scores=s)
    assert v.p_method == "calibrated over models" and not v.detected
    p_new.append(v.p_value)
    p_old.append(verdict.set_pvalue(v.n_hits, 16, p0, v.p_combined))
  p_new, p_old = np.array(p_new), np.array(p_old)
  assert np.mean(p_old <= 0.01) > 0.2  # the binomial bound: far too many small p-values
  for x in (0.01, 0.05, 0.2, 0.5):
    assert np.mean(p_new <= x) <= x + 0.03, (x, np.mean(p_new <= x))
  copier = np.where(np.arange(16) < 12, 0.9, 0.0)
  v = verdict.decide(copier, cal, scores=copier)
  assert v.detected and v.p_value < 1e-30 and v.p_combined == pytest.approx(1 / 25)


def test_decide_uses_the_model_null_and_falls_back_for_big_sets():
  rng = np.random.default_rng(2)
  per_source = {"a": np.sort(rng.normal(size=500)), "b": np.sort(rng.normal(size=500))}
  cal = verdict.calibrate(rng.normal(size=500), margin=0.05)
  cal = cal.with_heldout({k: v for k, v in per_source.items()}, per_source)
  cal = cal.with_model_null(_population(rng, 24, 16))
  s = rng.normal(size=16)
  v = verdict.decide(s, cal, scores=s)
  assert v.p_method == "calibrated over models" and v.p_combined >= 1 / 25
  assert set(v.p_by_kind) == {"a", "b", "null models"}
  assert v.p_by_kind["null models"] == pytest.approx(v.p_value)  # no hits: the same rank
  big = rng.normal(size=32)
  assert verdict.decide(big, cal, scores=big).p_method == "calibrated per source"
  hit = verdict.decide(np.full(16, 5.0), cal, scores=np.full(16, 5.0))
  assert hit.detected and hit.p_value < 1e-20  # the hits' binomial bound still decides
  assert cal.to_dict()["null_models"] == [24, 16]
  with pytest.raises(DeepwmError, match="models, images"):
    cal.with_model_null(np.zeros(5))


def test_null_models_that_differ_by_seed_share_one_compilation(tiny_cfg):
  # The model null's models differ by seed within 6 kinds (3 families x L1/L2): one jitted
  # step and predict function per kind, a new one for any other setting.
  spec = lambda seed, **kw: model_null.null_spec(tiny_cfg, kw.pop("arch", "unet"), seed, 4,
                                                 kw.pop("ngf", 4))
  step = imitation.make_step(spec(3000), tiny_cfg, 4)
  assert imitation.make_step(spec(3006), tiny_cfg, 4) is step  # same kind, another seed
  assert imitation.make_predict_fn(spec(3006), tiny_cfg) is imitation.make_predict_fn(
      spec(3000), tiny_cfg)
  others = [imitation.make_step(spec(3001), tiny_cfg, 4),  # L2 instead of L1
            imitation.make_step(spec(3000, arch="cnn"), tiny_cfg, 4),
            imitation.make_step(spec(3000, ngf=8), tiny_cfg, 4),
            imitation.make_step(spec(3000), tiny_cfg, 5)]  # another schedule length
  assert all(o is not step for o in others) and len(set(map(id, others))) == 4
  wide = tiny_cfg.copy_and_resolve_references()
  wide.data.image_size = 64
  assert imitation.make_step(spec(3000), wide, 4) is not step


@pytest.mark.slow
def test_model_null_kit_end_to_end(tiny_run, tmp_path):
  kit_path = os.path.join(tiny_run[0], "kit")
  out = str(tmp_path / "kit")
  path = model_null_tool.add_model_null(kit_path, str(tmp_path / "work"), out, models=2, images=8,
                                   steps=2, ngf=4, log=lambda *_: None)
  kit = kit_lib.load_kit(path)
  assert kit.calibration.model_null.shape == (2, 8)
  assert kit_lib.provenance(path)["calibration_model_null"]["n_models"] == 2
  held = np.random.default_rng(0).uniform(size=(8, 32, 32, kit.channels)).astype(np.float32)
  assert kit.verify(held).p_method == "calibrated over models"
  assert kit.verify(np.concatenate([held, held])).p_method == "calibrated per source"
  original = kit_lib.load_kit(kit_path)  # only read
  assert original.calibration.model_null is None
  # --append widens the population: the kit's rows kept, new models (own seeds) after them.
  wider = model_null_tool.add_model_null(path, str(tmp_path / "work"), str(tmp_path / "wider"),
                                    models=1, images=8, steps=2, ngf=8, append=True,
                                    log=lambda *_: None)
  rows = kit_lib.load_kit(wider).calibration.model_null
  assert rows.shape == (3, 8)
  np.testing.assert_array_equal(rows[:2], kit.calibration.model_null)
  with pytest.raises(DeepwmError, match="no model-level null to append"):
    model_null_tool.add_model_null(kit_path, str(tmp_path / "work"), str(tmp_path / "k2"), models=1,
                              images=8, steps=2, ngf=4, append=True, log=lambda *_: None)
  with pytest.raises(DeepwmError, match="--images 8"):
    model_null_tool.add_model_null(path, str(tmp_path / "work"), str(tmp_path / "k3"), models=1,
                              images=4, steps=2, ngf=4, append=True, log=lambda *_: None)
  with pytest.raises(DeepwmError, match="already exists"):
    model_null_tool.add_model_null(kit_path, str(tmp_path / "work"), out, models=2, images=8,
                              steps=2, ngf=4, log=lambda *_: None)
  # A kit.json that no longer matches null_models.npy is refused, with what to do.
  info = kit_lib.read_info(path, kit_lib.KIT_KIND, kit_lib.KIT_FORMAT)
  info["calibration_model_null"]["n_models"] = 3
  kit_lib.republish(path, str(tmp_path / "bad"), info, lambda folder: None)
  with pytest.raises(DeepwmError, match="model-level null does not match"):
    kit_lib.load_kit(str(tmp_path / "bad"))
  assert model_null_tool.main(["--kit", kit_path, "--workdir", str(tmp_path / "w2"), "--out", out,
                          "--models", "1"]) == 2
  with open(os.path.join(out, "kit.json")) as f:
    assert json.load(f)["calibration_model_null"]["n_images"] == 8  # untouched by the refusal


@pytest.mark.slow
def test_deepwm_run_builds_the_model_null_with_the_kit(tiny_run, tiny_cfg, tmp_path):
  # `evaluate.model_null.models` > 0: the run trains the null models and writes the kit with
  # them. A finished run resumed with it only adds them (nothing else trains again), and
  # api.save_kit keeps the model null with its record.
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run[0], workdir)
  cfg = tiny_cfg.copy_and_resolve_references()
  cfg.evaluate.model_null.update(models=2, images=8, steps=2, ngf=4)
  lines = []
  rep = pipeline.run(cfg, workdir, log=lines.append)
  assert [l for l in lines if "] step " in l] == []  # the run's own stages: all reused
  assert sorted(n for n in os.listdir(os.path.join(workdir, "checkpoints"))
                if n.startswith("model_null")) == [f"model_null_{i}_crops{30000 + i}_w4_s2"
                                                    for i in range(2)]
  kit = kit_lib.load_kit(os.path.join(workdir, "kit"))
  assert kit.calibration.model_null.shape == (2, 8) and rep["calibration"]["null_models"] == [2, 8]
  how = kit.info["calibration_model_null"]["how"]
  assert how.startswith("built by deepwm run: 2 null models") and "width 4" in how
  x = np.random.default_rng(1).uniform(size=(8, 32, 32, kit.channels)).astype(np.float32)
  assert kit.verify(x).p_method == "calibrated over models"
  saved = kit_lib.load_kit(api.save_kit(kit, str(tmp_path / "saved")))
  np.testing.assert_array_equal(saved.calibration.model_null, kit.calibration.model_null)
  assert saved.info["calibration_model_null"]["how"] == how
  bad = tiny_cfg.copy_and_resolve_references()
  bad.evaluate.model_null.models = -1
  with pytest.raises(DeepwmError, match="evaluate.model_null"):
    pipeline.run(bad, workdir, log=lambda *_: None)
