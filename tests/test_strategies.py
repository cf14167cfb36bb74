"""The model-specific (absorbed) strategy, protecting a classical algorithm and a data
set. The end-to-end cases reuse the test session's tiny run: a copy of its workdir resumes every
finished stage, so only the new stages train."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from deepwm_jax import config, pipeline
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import common, evaluate, task
from deepwm_jax.data import pairs as pairs_lib


def _copy_run(tiny_run, tmp_path, edit):
  """A copy of the tiny run's workdir whose config.json says `edit`ed config (resumable)."""
  workdir = str(tmp_path / "run")
  shutil.copytree(tiny_run[0], workdir)
  shutil.rmtree(os.path.join(workdir, "kit"))
  cfg = config.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                                 "tiny.py"))
  edit(cfg)
  config.validate(cfg)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(json.loads(cfg.to_json_best_effort()), f)
  return cfg, workdir


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("edit, words", [
    (dict(strategy="absorbed"), "protect.strategy"),
    (dict(method="dct"), "protect.method"),
    (dict(method="traditional", strategy="specific"), "method=deep"),
])
def test_bad_protect_values_fail_early(tiny_cfg, edit, words):
  cfg = ml_collections.ConfigDict(tiny_cfg.to_dict())
  cfg.protect.update(edit)
  with pytest.raises(DeepwmError, match=words):
    config.validate(cfg)


def test_specific_needs_a_trainable_task_model(tiny_cfg):
  cfg = ml_collections.ConfigDict(tiny_cfg.to_dict())
  cfg.protect.strategy = "specific"
  cfg.task.source = "identity"
  with pytest.raises(DeepwmError, match="task.source=train"):
    config.validate(cfg)


def test_workdirs_written_before_protect_still_resume(tmp_path, tiny_cfg):
  workdir = str(tmp_path / "old")
  os.makedirs(workdir)
  saved = json.loads(tiny_cfg.to_json_best_effort())
  del saved["protect"]
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(saved, f)
  pipeline.check_workdir_config(tiny_cfg, workdir)  # the default protect: no complaint
  cfg = ml_collections.ConfigDict(tiny_cfg.to_dict())
  cfg.protect.strategy = "specific"
  with pytest.raises(DeepwmError, match="protect"):
    pipeline.check_workdir_config(cfg, workdir)


# ----------------------------------------------------------------------------- absorb

def test_absorb_step_learns_the_watermark_through_frozen_R(tiny_cfg):
  """Steps on one batch lower MSE(R(M'(A)), w); R is frozen (an input, not state)."""
  from deepwm_jax import models
  from deepwm_jax.data import watermarks
  from deepwm_jax.train import absorb, imitation
  cfg = ml_collections.ConfigDict(tiny_cfg.to_dict())
  cfg.protect.absorb.optimizer.lr = 1e-2
  cfg.protect.absorb.steps = 8
  s, c = cfg.data.image_size, cfg.data.channels
  w = watermarks.watermark_image("logo", s, c)
  x = jnp.zeros((2, s, s, c), jnp.float32)
  task = models.init_variables(imitation.model_for(cfg.task, cfg), jax.random.PRNGKey(0), x)
  ext = models.init_variables(models.extractor(cfg), jax.random.PRNGKey(1), x)
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.uniform(0, 1, (4, s, s, c)), jnp.float32)
  batch = {"a": a, "target": a, "b": a, "extractor": ext}
  state, step = absorb.init_state(cfg, task), absorb.make_step(cfg, ext, w)
  wm = []
  for i in range(8):
    state, m = step(state, batch, jax.random.PRNGKey(i))
    wm.append(float(m["wm_mse"]))
  # A freshly initialised R barely responds to its input, so the descent is small, but it
  # must be steady: the watermark gradient reaches M' through R.
  assert wm[-1] < wm[0] - 5e-4, wm
  assert all(np.isfinite(wm))
  assert "extractor" not in state  # R is an input of the step, never trained


@pytest.mark.slow
def test_specific_strategy_end_to_end(tiny_run, tmp_path):
  def edit(c):
    c.protect.strategy = "specific"
    c.protect.absorb.steps, c.protect.absorb.batch = 2, 4
  cfg, workdir = _copy_run(tiny_run, tmp_path, edit)
  lines = []
  rep = pipeline.run(cfg, workdir, log=lines.append)
  # The agnostic stages were resumed, not retrained: only the new stages logged steps.
  trained = {l.split("]")[0][1:] for l in lines if l.startswith("[") and "step" in l}
  assert "stage1" not in trained and "absorb" in trained
  sp = rep["specific"]
  assert {"task", "fidelity", "watermarked", "surrogates", "calibration_check"} <= set(sp)
  assert [s["name"] for s in sp["surrogates"]] == ["surrogate-stage2-spec",
                                                   "surrogate-unseen-spec"]
  assert all(s["trained_on"] == "M' outputs" for s in sp["surrogates"])
  with open(os.path.join(workdir, "report.json")) as f:
    on_disk = json.load(f)["specific"]
  # M' starts at M, which is close to H(M(A)) already: 2 steps cannot move it far.
  assert on_disk["fidelity"]["psnr_Mprime_vs_HM"] == pytest.approx(sp["fidelity"]["psnr_Mprime_vs_HM"])
  assert on_disk["fidelity"]["psnr_Mprime_vs_HM"] > 20.0
  md = open(os.path.join(workdir, "report.md")).read()
  assert md.count("## Model-specific strategy") == 1 and "| success rate on the protected" in md
  # The self-check is of M', what this strategy deploys; the tiny kit fails it, and says so.
  assert sp["warnings"] == evaluate.kit_warnings(cfg, rep) and sp["warnings"]
  assert rep["warnings"][-len(sp["warnings"]):] == sp["warnings"]
  assert all(f"**Warning: {w}**" in md.split("## Model-specific strategy")[1]
             for w in sp["warnings"])
  assert all(f"warning: {w}" in lines for w in sp["warnings"])
  # M' is one deployable network, and the run's kit verifies its outputs.
  from deepwm_jax.stages import absorb
  import deepwm_jax
  fn, variables = absorb.deployed_model(cfg, workdir)
  val = pairs_lib.make_pairs(cfg, "val", cfg.data.n_val, 3)
  out = common.predict(fn, variables, val.a)
  v = deepwm_jax.load_kit(os.path.join(workdir, "kit")).verify(out)
  assert v.n_images == cfg.data.n_val
  assert v.success_rate == pytest.approx(sp["watermarked"]["success_rate"])


def test_deployed_model_needs_a_finished_absorb(tmp_path, tiny_cfg):
  from deepwm_jax.stages import absorb
  with pytest.raises(DeepwmError, match="no finished M'"):
    absorb.deployed_model(tiny_cfg, str(tmp_path))


# ----------------------------------------------------------------------------- classical

def test_classical_examples_are_valid_task_sources(tiny_cfg):
  from deepwm_jax.examples import classical
  cfg = config.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                                 "protect_classical.py"))
  config.validate(cfg)
  cfg.data.image_size = 32
  pairs = pairs_lib.make_pairs(cfg, "val", 8, 3)
  out = task.outputs(common.Runner(cfg, "/nonexistent-not-used", log=lambda *_: None), [pairs])[0]
  assert out.shape == pairs.a.shape and out.dtype == np.float32
  mse = lambda x: float(np.mean((x - pairs.b) ** 2))
  assert mse(out) < 0.5 * mse(pairs.a)  # TV denoising removes most of the noise
  sharp = classical.unsharp_mask(pairs.b)
  assert sharp.shape == pairs.b.shape and np.all(np.isfinite(sharp))
  edges = lambda x: float(np.mean(np.abs(np.diff(x, axis=2))))
  assert edges(sharp) > edges(pairs.b)  # sharpening strengthens edges


# ----------------------------------------------------------------------------- data sets

def test_dataset_source_protects_the_targets(tiny_cfg):
  cfg = config.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                                 "protect_dataset.py"))
  config.validate(cfg)
  pairs = pairs_lib.make_pairs(tiny_cfg, "val", 4, 3)
  out = task.outputs(common.Runner(cfg, "/nonexistent-not-used", log=lambda *_: None), [pairs])[0]
  np.testing.assert_array_equal(out, pairs.b)


@pytest.mark.slow
def test_dataset_example_publishes_trains_and_verifies(tiny_run, tmp_path):
  from deepwm_jax.examples import dataset
  out = dataset.run(os.path.join(tiny_run[0], "kit"), str(tmp_path / "ds"), n_train=16,
                    n_test=8, log=lambda *_: None)
  assert len(os.listdir(tmp_path / "ds" / "published")) == 16
  assert out["fidelity_psnr_published_vs_clean"] > 30
  models = out["models"]
  assert set(models) == {"trained on the watermarked data set",
                         "control: trained on the clean data set"}
  assert not models["control: trained on the clean data set"]["detected"]
  with open(tmp_path / "ds" / "dataset_report.json") as f:
    assert json.load(f)["n_train"] == 16
