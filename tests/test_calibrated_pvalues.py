"""Calibrated p-values (rank among the kit's null, Cauchy combination), the message p-value,
and kits that carry their null (written with it, or given it later by deepwm_jax/recalibrate.py)."""
import json
import os
import shutil

import numpy as np
import pytest
from scipy import stats as scipy_stats

from deepwm_jax import kit as kit_lib
from deepwm_jax import payload, verdict
from deepwm_jax.tools import recalibrate
from deepwm_jax.errors import DeepwmError


def test_score_orders_like_the_statistic_and_breaks_its_ties():
  rng = np.random.default_rng(0)
  w = np.ones((16, 16, 1), np.float32)
  w[4:12, 6:10] = 0.0
  blank = np.ones_like(w)
  r = np.clip(1.0 + rng.uniform(-0.3, 0.3, (200, 1, 1, 1)) * (w - 1.0)
              + rng.normal(0, 0.05, (200, *w.shape)), 0, 1).astype(np.float32)
  stat = np.asarray(verdict.watermark_statistic(r, w, blank))
  score = np.asarray(verdict.watermark_score(r, w, blank))
  assert np.mean(stat == 0) > 0.3  # the ties the score breaks
  np.testing.assert_allclose(score[stat > 0], stat[stat > 0], rtol=1e-6)
  assert np.all(score[stat == 0] <= 0) and np.unique(score[stat == 0]).size == np.sum(stat == 0)


def _calibration(null):
  return verdict.calibrate(null, margin=0.05).with_null(null)


def test_innocent_set_pvalues_are_close_to_uniform_and_valid():
  # Innocent sets exchangeable with a calibration null of 2000: the old bound is always 1,
  # the calibrated p-value is spread over (0, 1] like a uniform, never more often small.
  rng = np.random.default_rng(1)
  cal = _calibration(rng.normal(size=2000))
  p = np.array([verdict.decide(s, cal, scores=s).p_value for s in rng.normal(size=(400, 16))])
  assert scipy_stats.kstest(p, "uniform").statistic < 0.08
  for x in (0.01, 0.05, 0.2, 0.5):
    assert np.mean(p <= x) <= x + 0.03
  v = verdict.decide(np.zeros(16), cal)  # no scores given: the bound alone
  assert v.p_value == 1.0 and v.p_method == "bound"
  hit = verdict.decide(np.full(16, 5.0), cal, scores=np.full(16, 5.0))
  assert hit.p_method == "calibrated" and hit.p_value <= hit.p_bound < 1e-40 and hit.detected


def test_calibrated_pvalues_stay_valid_with_a_small_shared_calibration():
  # Rank p-values that share one small calibration set are dependent; the combination must
  # still not give small p-values more often than nominal (calibration redrawn per trial).
  rng = np.random.default_rng(2)
  p = []
  for _ in range(600):
    null = rng.normal(size=100)
    cal = _calibration(null)
    s = rng.normal(size=8)
    p.append(verdict.decide(s, cal, scores=s).p_value)
  p = np.asarray(p)
  for x in (0.01, 0.05, 0.1):
    assert np.mean(p <= x) <= x + 0.02, (x, np.mean(p <= x))


def test_set_pvalue_keeps_the_bound_when_images_clear_the_threshold():
  p0 = 1 / 10497
  assert verdict.set_pvalue(16, 16, p0, 1e-44) == pytest.approx(p0 ** 16)
  assert verdict.set_pvalue(16, 16, p0, None) == pytest.approx(p0 ** 16)
  assert verdict.set_pvalue(0, 16, p0, None) == 1.0
  assert verdict.set_pvalue(0, 16, p0, 0.3) == pytest.approx(0.3 + 1 - (1 - p0) ** 16)
  # Images that all lean the same way are one piece of evidence, not sixteen.
  assert verdict.cauchy_pvalue(np.full(16, 0.01), 10000) == pytest.approx(0.01, rel=1e-3)
  assert verdict.cauchy_pvalue(np.ones(16), 10000) == pytest.approx(1.0, abs=1e-3)
  with pytest.raises(DeepwmError, match="scores"):
    verdict.decide(np.zeros(4), _calibration(np.zeros(10)), scores=np.zeros(3))


def test_per_source_pvalues_stay_valid_for_every_source():
  # Two kinds of innocent image whose scores differ (clean crops low, a null architecture's
  # outputs high). Pooled, the high kind gets small p-values far too often; per source, the
  # largest per-source rank p-value is valid for each kind, whichever it is.
  rng = np.random.default_rng(5)
  low, high = rng.normal(0, 1, 3000), rng.normal(2, 1, 300)
  pooled = verdict.rank_pvalues(rng.normal(2, 1, 4000), np.sort(np.concatenate([low, high])))
  assert np.mean(pooled <= 0.01) > 0.05
  null = {"clean": np.sort(low), "null_resnet": np.sort(high)}
  for mean in (0, 2):
    p = verdict.rank_pvalues(rng.normal(mean, 1, 4000), null)
    for x in (0.01, 0.05, 0.2):
      assert np.mean(p <= x) <= x + 0.01, (mean, x)
  assert verdict.null_size(null) == 300
  s = np.full(16, 9.0)  # far above every source: the smallest possible p-value of the coarsest
  np.testing.assert_allclose(verdict.rank_pvalues(s, null), 1 / 301)
  cal = verdict.calibrate(np.concatenate([low, high]), margin=0.05)
  cal = cal.with_heldout({"clean": low[:100], "null_resnet": high[:50] + 10},
                         {"clean": low, "null_resnet": high})
  # The held-out negatives over the threshold raise p0: (50 + 1) / (150 + 1).
  assert cal.n_heldout == 150 and cal.n_heldout_above == 50
  assert cal.p0 == pytest.approx(51 / 151) and cal.max_heldout == pytest.approx(high[:50].max() + 10)
  v = verdict.decide(np.zeros(16), cal, scores=rng.normal(0, 1, 16))
  assert v.p_method == "calibrated per source"
  again = verdict.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
  assert again.n_heldout == 150 and again.p0 == cal.p0 and again.null is None
  assert cal.to_dict()["null_sources"] == {"clean": 3000, "null_resnet": 300}


def test_each_kind_alone_is_uniform_for_its_own_innocents():
  # Verdict.p_by_kind: sets of clean-like images (scores like the 'clean' source) get uniform
  # p-values against 'clean' alone, where the deciding per-source p-value, which must also hold
  # for the higher 'null_resnet' kind, is conservative for them and never below any kind's.
  rng = np.random.default_rng(6)
  null = {"clean": np.sort(rng.normal(0, 1, 3000)), "null_resnet": np.sort(rng.normal(2, 1, 3000))}
  cal = verdict.calibrate(np.concatenate(list(null.values())), margin=0.05)
  cal = cal.with_heldout(null, null)  # p0 ~ 1 / 6000: B(1) adds little to a set without hits
  own, decided = [], []
  for _ in range(300):
    s = rng.normal(0, 1, 16)
    v = verdict.decide(np.zeros(16), cal, scores=s)  # no image over the threshold
    assert set(v.p_by_kind) == {"clean", "null_resnet"}
    assert v.p_value >= max(v.p_by_kind.values()) - 1e-12
    own.append(v.p_by_kind["clean"])
    decided.append(v.p_value)
  own, decided = np.array(own), np.array(decided)
  assert scipy_stats.kstest(own, "uniform").statistic < 0.1
  assert np.mean(own <= 0.1) <= 0.1 + 0.04 and np.mean(own <= 0.5) > 0.4
  assert np.mean(decided <= 0.5) < 0.1  # conservative for this kind: the price of validity
  # A set of the high kind is judged small against 'clean' but not against its own kind.
  v = verdict.decide(np.zeros(16), cal, scores=rng.normal(2, 1, 16))
  assert v.p_by_kind["clean"] < 0.05 and v.p_by_kind["null_resnet"] > 0.1
  assert verdict.decide(np.zeros(16), verdict.calibrate(null["clean"], margin=0.05),
                        scores=np.zeros(16)).p_by_kind is None  # no null stored: nothing to say


def _message_payload():
  return payload.make_payload("text:ACME", 64, 8, 7, 32)


def test_message_pvalue_is_the_decoding_ball_over_all_words():
  p = _message_payload()
  code = bytearray(p.codec.encode(p.data))
  assert payload.message_pvalue(p, bytes(code), []) == pytest.approx(256.0 ** -16)
  code[3] ^= 0xFF
  code[9] ^= 0x01
  want = (1 + 16 * 255 + 120 * 255 ** 2) / 256.0 ** 16  # radius 2 among 16 bytes
  assert payload.message_pvalue(p, bytes(code), []) == pytest.approx(want)
  assert payload.message_pvalue(p, bytes(code), [3]) == pytest.approx(
      (1 + 15 * 255) / 256.0 ** 15)  # byte 3 erased: radius 1 among the other 15
  soft = 2.0 * p.channel_bits[None].astype(np.float64) - 1.0
  d = payload.decode(p, 0.4 * soft)
  assert d["matches"] and d["p_value"] == pytest.approx(256.0 ** -16)
  assert payload.decode(p, -soft)["p_value"] == 1.0


def _bits(p, soft):
  cal = verdict.Calibration(threshold=0.5, n_negatives=999, n_negatives_above=0, p0=1e-3,
                            max_negative=0.0)
  return payload.decide(p, soft, cal, 1e-6, 0.5)


def test_one_image_cannot_make_the_message_evidence():
  # What the study measured on an innocent null model: one output on which R drew the whole
  # pattern faintly, the others blank. The vote decodes the message, but only thanks to it.
  p = _message_payload()
  sign = 2.0 * p.channel_bits.astype(np.float64) - 1.0
  soft = np.zeros((16, p.n_coded))
  soft[0] = 0.25 * sign
  one = _bits(p, soft)
  assert one["decode_matches"] and one["decode_single_image"]
  assert payload.combine(1.0, 0.0, one, 1e-6, 0.5, message_evidence=True) == (False, 1.0, "none")
  # Four images that each carry it faintly: not one image's doing, the message route decides.
  rng = np.random.default_rng(3)
  soft[:4] = 0.1 * sign + rng.normal(0, 0.03, (4, p.n_coded))
  four = _bits(p, soft)
  assert four["decode_matches"] and not four["decode_single_image"]
  detected, p_value, route = payload.combine(1.0, 0.0, four, 1e-6, 0.5, message_evidence=True)
  assert detected and route == "message" and p_value == pytest.approx(2 * four["decode_p_value"])
  # Off by default: the decision is the watermark test alone.
  assert payload.combine(1.0, 0.0, four, 1e-6, 0.5) == (False, 1.0, "none")


def _as_older_kit(kit_path, out, pooled=None):
  """A copy of a kit as an earlier version wrote it: without a null, or (`pooled`) with the
  stage-2 negatives' scores pooled in null.npy and p0 from those negatives alone."""
  tmp = out + ".tmp"
  shutil.copytree(kit_path, tmp)
  os.remove(os.path.join(tmp, kit_lib.NULL_SOURCES_FILE))
  os.remove(os.path.join(tmp, "manifest.json"))
  with open(os.path.join(tmp, "kit.json")) as f:
    info = json.load(f)
  info.pop("calibration_null")
  cal = info["calibration"]
  for k in ("n_null", "null_sources", "n_heldout", "n_heldout_above", "max_heldout"):
    cal.pop(k)
  cal["p0"] = (cal["n_negatives_above"] + 1) / (cal["n_negatives"] + 1)
  if pooled is not None:
    kit_lib.save_null(tmp, pooled)
    info["calibration_null"] = kit_lib.null_record(pooled)
    cal["n_null"] = int(pooled.size)
  kit_lib.publish(tmp, out, info)


def test_kits_store_their_null_and_older_kits_get_it_back(tiny_run, tmp_path):
  workdir = tiny_run[0]
  kit = kit_lib.load_kit(os.path.join(workdir, "kit"))
  cal = kit.calibration
  sources = {"clean_A", "M_A", "clean_B", "flat"} | {
      f"null_{a}" for a in kit.config.attack.null_archs}
  assert set(cal.null) == sources and cal.n_heldout == sum(v.size for v in cal.null.values())
  assert cal.p0 >= (cal.n_heldout_above + 1) / (cal.n_heldout + 1)
  images = np.random.default_rng(4).uniform(size=(8, 32, 32, kit.channels)).astype(np.float32)
  new = kit.verify(images)
  assert new.p_method == "calibrated per source" and 0 < new.p_value <= 1
  # An older kit: same decision rule, the bound alone; one of the version before: pooled.
  run = tmp_path / "run"
  os.makedirs(run)
  os.symlink(os.path.join(workdir, "checkpoints"), run / "checkpoints")
  _as_older_kit(os.path.join(workdir, "kit"), str(run / "kit"))
  old = kit_lib.load_kit(str(run / "kit"))
  assert old.calibration.null is None and old.verify(images).p_method == "bound"
  _as_older_kit(os.path.join(workdir, "kit"), str(tmp_path / "pooled"),
                pooled=np.concatenate(list(cal.null.values())))
  assert kit_lib.load_kit(str(tmp_path / "pooled")).verify(images).p_method == "calibrated"
  # recalibrate rebuilds the run's negatives from its checkpoints: the very same null and p0.
  out = recalibrate.recalibrate(str(run), str(tmp_path / "kit2"), log=lambda *_: None)
  again = kit_lib.load_kit(out)
  assert set(again.calibration.null) == sources
  for k in sources:
    np.testing.assert_allclose(again.calibration.null[k], cal.null[k], rtol=1e-5, atol=1e-6)
  assert again.calibration.p0 == pytest.approx(cal.p0)
  assert again.verify(images).p_value == pytest.approx(new.p_value, rel=1e-4)
  with pytest.raises(DeepwmError, match="already exists"):
    recalibrate.recalibrate(str(run), out)
  with pytest.raises(DeepwmError, match="already has a held-out"):
    recalibrate.upgrade(out, str(tmp_path / "kit3"), again.calibration, "test")
  with pytest.raises(DeepwmError, match="not the kit's"):
    recalibrate.check_reproduced(kit.calibration, np.zeros(3))


def test_a_tampered_null_is_refused(tiny_run, tmp_path):
  kit_path = os.path.join(tiny_run[0], "kit")
  info = kit_lib.read_info(kit_path, kit_lib.KIT_KIND, kit_lib.KIT_FORMAT)
  info["calibration_null"]["sources"]["clean_A"] += 1  # kit.json no longer matches null.npz
  tmp = str(tmp_path / "tmp")
  shutil.copytree(kit_path, tmp)
  os.remove(os.path.join(tmp, "manifest.json"))
  kit_lib.publish(tmp, str(tmp_path / "bad"), info)
  with pytest.raises(DeepwmError, match="does not match kit.json"):
    kit_lib.load_kit(str(tmp_path / "bad"))
