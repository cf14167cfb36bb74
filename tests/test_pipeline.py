"""The whole method on the tiny config: every stage runs, report and kit are complete, and a
re-run resumes instead of training again."""
import json
import os
import time

import numpy as np
import pytest

from deepwm_jax import config, pipeline
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import common, evaluate, harden


def test_report_has_the_contract_keys(tiny_run, tiny_cfg):
  workdir, rep, _ = tiny_run
  with open(os.path.join(workdir, "report.json")) as f:
    on_disk = json.load(f)
  for key in ("psnr", "ssim"):
    assert isinstance(on_disk["fidelity"][key], float)
  n_val = tiny_cfg.data.n_val
  assert on_disk["watermarked"]["n_images"] == n_val and on_disk["clean"]["n_images"] == 3 * n_val
  for group in ("watermarked", "clean"):  # a fraction of that many images
    hits = on_disk[group]["success_rate"] * on_disk[group]["n_images"]
    assert hits == pytest.approx(round(hits))
  assert on_disk["watermarked"]["nc_mean"] == pytest.approx(rep["watermarked"]["nc_mean"])
  for group in ("surrogates", "null"):
    assert len(on_disk[group]) >= 1
    for member in on_disk[group]:
      assert {"name", "arch", "loss", "success_rate", "nc_mean"} <= set(member)
  stages = {"task", "stage1", "surrogate", "surrogate_resnet", "null_protector_unet",
            "null_protector_resnet", "stage2", "eval_surrogate", "eval_null"}
  assert stages <= set(on_disk["timing"])
  assert on_disk["timing"]["total"] > 0
  # The largest stage-2 negative per source, one of which is the calibration's maximum.
  by_source = on_disk["calibration_max_negative_by_source"]
  assert {"clean_A", "M_A", "clean_B", "null_unet", "null_resnet", "flat"} <= set(by_source)
  assert max(by_source.values()) == pytest.approx(on_disk["calibration"]["max_negative"])
  # The kit's self-checks, also at the top of report.md when there are any.
  cal = [w for w in on_disk["warnings"] if "threshold is above 1" in w]
  assert bool(cal) == (on_disk["calibration"]["threshold"] > 1.0)
  assert on_disk["warnings"] == cal + evaluate.kit_warnings(tiny_cfg, on_disk)
  with open(os.path.join(workdir, "report.md")) as f:
    md = f.read()
  assert all(w in md for w in on_disk["warnings"]) and ("## Warnings" in md) == bool(
      on_disk["warnings"])


def test_per_image_fpr_is_validated():
  c = config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  c.evaluate.per_image_fpr = 0.5
  with pytest.raises(DeepwmError, match="per_image_fpr"):
    config.validate(c)


def test_weak_copies_are_null_outputs_plus_part_of_the_residual():
  c = config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  rng = np.random.default_rng(0)
  m = rng.uniform(0.2, 0.8, (6, 8, 8, 3)).astype(np.float32)
  wm = (m + 0.01 * rng.choice([-1.0, 1.0], m.shape)).astype(np.float32)
  sources = {"clean_A": m + 0.1, "M_A": m, "null_unet": m + 0.02, "null_resnet": m - 0.03}
  assert harden.weak_copies(c, sources, wm, m).shape == (0, 8, 8, 3)  # off by default
  c.stage2.weak_copies = 0.25
  weak = harden.weak_copies(c, sources, wm, m)
  assert weak.shape == (12, 8, 8, 3) and weak.dtype == np.float32
  # Each copy is one null model's output plus alpha times the residual, alpha in [0.25, 1].
  for base, copies in ((sources["null_unet"], weak[:6]), (sources["null_resnet"], weak[6:])):
    alpha = np.mean((copies - base) / (wm - m), axis=(1, 2, 3))
    assert np.all(alpha >= 0.25 - 1e-4) and np.all(alpha <= 1 + 1e-4)
    np.testing.assert_allclose(copies, base + alpha[:, None, None, None] * (wm - m), atol=1e-6)
  assert np.ptp(alpha) > 0  # drawn per image
  for bad in (-0.1, 1.0):
    c.stage2.weak_copies = bad
    with pytest.raises(DeepwmError, match="weak_copies"):
      config.validate(c)


def test_kit_warnings_name_a_kit_that_misses_its_own_surrogates():
  c = config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  sur = lambda name, rate: {"name": name, "success_rate": rate, "detected": rate >= 0.5,
                            "seen_in_stage2": True}
  rep = {"calibration": {"threshold": 0.99}, "watermarked": {"detected": True, "success_rate": 1.0},
         "calibration_max_negative_by_source": {"M_A": 0.98, "flat": 0.09},
         "surrogates": [sur("surrogate-stage2", 0.0), sur("surrogate-stage2-cnn", 0.03),
                        sur("surrogate-unseen", 0.0)]}
  (msg,) = evaluate.kit_warnings(c, rep)
  assert "surrogate-stage2 0%" in msg and "surrogate-stage2-cnn 3%" in msg
  assert "unseen" not in msg  # the evaluation surrogate is not one stage 2 trained against
  assert "0.980 from M_A" in msg and "stage2.weak_copies=0.25 and evaluate.per_image_fpr" in msg
  c.stage2.weak_copies = 0.25  # then weak copies are the suspect: the hint says so
  assert "stage2.weak_copies=0.25 can make R read" in evaluate.kit_warnings(c, rep)[0]
  # One stage-2 surrogate detected is enough; an undetected unseen one is the zoo's business.
  rep["surrogates"][1] = sur("surrogate-stage2-cnn", 0.9)
  assert evaluate.kit_warnings(c, rep) == []
  # The absorbed strategy deploys M': its outputs and its surrogates are what is checked.
  spec = {"watermarked": {"detected": True, "success_rate": 1.0},
          "surrogates": [sur("surrogate-stage2-spec", 0.2), sur("surrogate-unseen-spec", 1.0)]}
  (msg,) = evaluate.kit_warnings(c, {**rep, "specific": spec})
  assert "surrogate-stage2-spec 20%" in msg and "surrogate-stage2-cnn" not in msg
  spec["surrogates"][0] = sur("surrogate-stage2-spec", 1.0)
  assert evaluate.kit_warnings(c, {**rep, "specific": spec}) == []
  spec["watermarked"] = {"detected": False, "success_rate": 0.0}
  assert "the M' outputs" in evaluate.kit_warnings(c, {**rep, "specific": spec})[0]
  # A kit that claims innocent held-out images says so first, whatever else it detects.
  rep["surrogates"][1] = sur("surrogate-stage2-cnn", 0.9)
  rep["clean"] = {"detected": True, "success_rate": 0.44}
  rep["null"] = [sur("null-independent", 0.42), sur("null-protector-unet", 0.62)]
  warns = evaluate.kit_warnings(c, rep)
  assert len(warns) == 1, warns
  msg = warns[0]
  assert "innocent" in msg and "clean images 44%" in msg and "null-protector-unet 62%" in msg
  assert "null-independent" not in msg  # 42%: not detected as a set
  del rep["clean"], rep["null"]
  rep["watermarked"] = {"detected": False, "success_rate": 0.2}
  (msg,) = evaluate.kit_warnings(c, rep)
  assert "the protected outputs" in msg and "threshold 0.990" in msg and "weak_copies=0.25" in msg
  rep["calibration"]["threshold"] = 1.2  # logged at calibration already
  assert evaluate.kit_warnings(c, rep) == []


def test_report_judges_every_group_after_serving(tiny_run, tiny_cfg):
  """evaluate.served: each group of the evaluation again after each post-processing, judged
  by the kit's own decision in sets (the tiny run's 8 held-out images: one set each)."""
  workdir, rep, _ = tiny_run
  sv = rep["served"]
  assert sv["specs"] == list(tiny_cfg.evaluate.served) and sv["set_size"] == 16
  assert sv["groups"]["watermarked"]["role"] == "carries the watermark"
  assert sv["groups"]["clean M(A)"]["role"] == "innocent"
  assert sv["groups"]["surrogate (unseen)"]["role"] == "imitates B'"
  n_innocent = sum(g["role"] == "innocent" for g in sv["groups"].values())
  assert sv["innocent"]["sets"] == n_innocent * len(sv["specs"])
  for g in sv["groups"].values():
    for r in g["rows"].values():
      assert r["sets"] == 1 and r["sets_detected"] in (0, 1) and 0 < r["median_set_p"] <= 1
  assert "served" in rep["timing"]
  assert "## After serving (sets of 16)" in open(os.path.join(workdir, "report.md")).read()
  assert os.path.getsize(os.path.join(workdir, "figures", "served.png")) > 1000


def test_stage2_trains_against_every_listed_surrogate(tiny_run, tiny_cfg):
  # tiny.py adds a ResNet surrogate to the U-Net one: both are trained, with their own seeds,
  # and reported as seen in stage 2; so is the evaluation surrogate, whose family (ResNet) was.
  _, rep, _ = tiny_run
  specs = config.stage2_surrogates(tiny_cfg)
  assert [s.arch for s in specs.values()] == ["unet", "resnet"]
  assert len({s.seed for s in specs.values()}) == 2
  seen = {s["name"]: (s["arch"], s["seen_in_stage2"]) for s in rep["surrogates"]}
  assert seen == {"surrogate-stage2": ("unet", True), "surrogate-stage2-resnet": ("resnet", True),
                  "surrogate-unseen": ("resnet", True)}
  assert tiny_cfg.evaluate.surrogate.arch == "resnet"


def test_extra_surrogate_archs_are_validated(tiny_cfg):
  for bad in (("vgg",), ("resnet", "resnet"), ("unet",)):  # unknown, twice, the main one again
    c = config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
    c.attack.extra_surrogate_archs = bad
    with pytest.raises(DeepwmError, match="extra_surrogate_archs"):
      config.validate(c)


def test_workdir_written_before_extra_surrogates_resumes(tmp_path, tiny_cfg):
  # config.json of a run made before attack.extra_surrogate_archs existed: the default () is
  # what it ran with, so a config with the default resumes it and any other value is refused.
  c = config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  c.attack.extra_surrogate_archs = ()
  saved = json.loads(c.to_json_best_effort())
  del saved["attack"]["extra_surrogate_archs"]
  del saved["embedder"]["arch"], saved["embedder"]["depth"]  # older still: the U-Net H only
  (tmp_path / "config.json").write_text(json.dumps(saved))
  pipeline.check_workdir_config(c, str(tmp_path))
  with pytest.raises(DeepwmError, match="attack.extra_surrogate_archs"):
    pipeline.check_workdir_config(tiny_cfg, str(tmp_path))
  c.embedder.arch = "cnn"
  with pytest.raises(DeepwmError, match="embedder.arch"):
    pipeline.check_workdir_config(c, str(tmp_path))


def test_report_markdown_and_figures(tiny_run):
  workdir, _, _ = tiny_run
  md = open(os.path.join(workdir, "report.md")).read()
  for fig in ("grid.png", "curves.png", "stats_hist.png", "nc_hist.png", "full_size.png"):
    assert f"figures/{fig}" in md
    assert os.path.getsize(os.path.join(workdir, "figures", fig)) > 1000


def test_the_report_shows_the_kit_on_whole_held_out_photos(tiny_run):
  """The four held-out photos at their own size (at most 512 px a side), each verdict on one
  image."""
  workdir, rep, _ = tiny_run
  fs = rep["full_size"]
  assert fs["window"] == 32 and len(fs["photos"]) == 4
  for r in fs["photos"]:
    assert 32 < r["height"] <= 512 and 32 < r["width"] <= 512 and r["windows"] > 1
    assert 0 <= r["frame_share"] <= 1 and 0 < r["frame_area"] < 1
    assert not r["clean"]["detected"]
    # Beside it, the photo under the embed-time floor of 40 dB: never below it, and never
    # lower than the photo as the kit embeds it.
    f = r["floor"]
    assert f["psnr_floor"] == 40 and f["psnr"] >= min(40.0, r["psnr"]) - 0.01
    assert f["psnr"] >= r["psnr"] - 0.01
  md = open(os.path.join(workdir, "report.md")).read()
  assert "## Full size" in md and "floor 40 dB: PSNR / SSIM" in md


def test_clean_images_are_never_detected(tiny_run):
  # Whatever the tiny networks learned in a few steps, the calibrated decision must not call
  # unwatermarked images watermarked.
  _, rep, _ = tiny_run
  assert rep["clean"]["success_rate"] == 0.0
  assert all(not n["detected"] for n in rep["null"])


def test_every_stage_logged_metrics(tiny_run):
  workdir, _, _ = tiny_run
  for stage in ("task", "stage1", "stage2", "surrogate"):
    rows = [json.loads(l) for l in open(os.path.join(workdir, "logs", f"{stage}.jsonl"))]
    assert rows and rows[-1]["step"] > 0 and "loss" in rows[-1]
    assert len({r["step"] for r in rows}) == len(rows)
  assert os.listdir(os.path.join(workdir, "tensorboard", "stage1"))


def test_rerun_resumes_and_skips_finished_stages(tiny_run, tiny_cfg):
  workdir, rep, first = tiny_run
  # The pattern that marks a training step in the log (not vacuous: the first run shows it).
  assert any("[stage1] step " in l for l in first)
  lines = []
  again = pipeline.run(tiny_cfg, workdir, log=lines.append)
  trained = [l for l in lines if "] step " in l]
  assert trained == [], f"finished stages trained again: {trained}"
  assert again["fidelity"] == rep["fidelity"]
  assert again["watermarked"]["stat_mean"] == pytest.approx(rep["watermarked"]["stat_mean"])


def test_workdir_with_another_config_is_refused(tiny_run, tiny_cfg):
  workdir, _, _ = tiny_run
  before = open(os.path.join(workdir, "config.json")).read()
  other = config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  other.stage1.steps = 6
  with pytest.raises(DeepwmError, match="different config .*stage1.steps"):
    pipeline.run(other, workdir, log=lambda m: None)
  assert open(os.path.join(workdir, "config.json")).read() == before


def test_stage_resumes_after_interruption(tmp_path, tiny_cfg):
  """Interrupt stage 2 of a copy of the run mid-way: the re-run continues from its checkpoint
  and ends where an uninterrupted run ends."""
  import jax
  from deepwm_jax.train import loop
  cfg = config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  from deepwm_jax.train import imitation
  spec = cfg.task
  step = imitation.make_step(spec, cfg, 4)
  state = imitation.init_state(spec, cfg, jax.random.PRNGKey(0), 4)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(16, 32, 32, 3)).astype(np.float32)
  batches = common.sampler({"x": x, "y": x[::-1].copy()}, 4, (0,))

  def interrupted(s):
    if s == 2:
      raise KeyboardInterrupt
    return batches(s)

  key = jax.random.PRNGKey(1)
  full = loop.run("full", step, state, batches, 4, str(tmp_path), key, log_every=1,
                  ckpt_every=100, log=lambda m: None)
  with pytest.raises(KeyboardInterrupt):
    loop.run("cut", step, state, interrupted, 4, str(tmp_path), key, log_every=1,
             ckpt_every=100, log=lambda m: None)
  lines = []
  resumed = loop.run("cut", step, state, batches, 4, str(tmp_path), key, log_every=1,
                     ckpt_every=100, log=lines.append)
  assert any("resuming from step 2" in l for l in lines)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  steps = [json.loads(l)["step"] for l in open(tmp_path / "logs" / "cut.jsonl")]
  assert steps == [1, 2, 3, 4]


def test_a_stage_restored_again_keeps_its_training_time(tmp_path, tiny_cfg, monkeypatch):
  # heldout_negatives restores the finished task model a second time: the report's timing of
  # the task stage must stay the training's, not the reload's.
  durations = iter([0.2, 0.0])

  def fake_run(name, step_fn, state, *args, **kwargs):
    time.sleep(next(durations))
    return state

  monkeypatch.setattr(pipeline.loop, "run", fake_run)
  monkeypatch.setattr(pipeline.parallel, "state_shardings", lambda *a: None)
  r = common.Runner(tiny_cfg, str(tmp_path), log=lambda *_: None)
  for _ in range(2):
    r.train("task", None, {"w": np.zeros(2)}, None, 3)
  assert r.timing["task"] >= 0.2


def test_a_run_interrupted_mid_stage_ends_as_an_uninterrupted_one(tiny_run, tiny_cfg, tmp_path,
                                                                   monkeypatch):
  """Ctrl-C in the middle of stage 1, then the same command again: the run resumes stage 1 from
  its last checkpoint, retrains nothing that had finished, and its report equals the
  uninterrupted run's (tiny_run) number for number."""
  from deepwm_jax.train import loop
  real_run = loop.run

  def interrupt_stage1(name, step_fn, state, batch_fn, *args, **kwargs):
    def batches(step):
      if name == "stage1" and step == 3:
        raise KeyboardInterrupt
      return batch_fn(step)
    return real_run(name, step_fn, state, batches, *args, **kwargs)

  workdir = str(tmp_path / "w")
  monkeypatch.setattr(loop, "run", interrupt_stage1)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(tiny_cfg, workdir, log=lambda *_: None)
  monkeypatch.setattr(loop, "run", real_run)
  assert not os.path.exists(os.path.join(workdir, "report.json"))
  lines = []
  rep = pipeline.run(tiny_cfg, workdir, log=lines.append)
  # Ctrl-C saved the 3 steps done (of 4): stage 1 goes on from there.
  assert any("[stage1] resuming from step 3" in l for l in lines), lines
  assert not any(l.startswith("[task] step ") for l in lines)  # finished before the stop
  assert any(l.startswith("[stage2] step ") for l in lines)  # not reached before the stop
  strip = lambda r: {k: v for k, v in r.items() if k != "timing"}
  assert json.loads(json.dumps(strip(rep), default=str)) == json.loads(
      json.dumps(strip(tiny_run[1]), default=str))
