"""Bit payloads: messages, Reed-Solomon, the layout, the calibrated bit decision, payload kits."""
import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

from deepwm_jax import cli, config, payload, verdict
from deepwm_jax import kit as kit_lib
from deepwm_jax.errors import DeepwmError


def _payload(message="text:ACME", bits=64, ecc=8, key=7, size=32):
  return payload.make_payload(message, bits, ecc, key, size, owner="alice", config={"a": 1})


def _noisy(p, n, amplitude, noise, seed):
  """Extractions: blank + amplitude (w - blank) + Gaussian noise."""
  w = p.render(3)
  rng = np.random.default_rng(seed)
  r = 1.0 + amplitude * (w - 1.0) + rng.normal(0, noise, (n, *w.shape))
  return np.clip(r, 0, 1).astype(np.float32)


@pytest.mark.parametrize("message,shown", [
    ("text:ACME", "text:ACME"), ("hex:00ff17", "hex:" + "00" * 5 + "00ff17"),
    ("int:123456789", "int:123456789"), ("owner", None)])
def test_round_trip_every_format(message, shown):
  p = _payload(message)
  soft = p.soft_bits(p.render(3)[None])
  np.testing.assert_array_equal(payload.per_image(p, soft)["bit_accuracy"], [1.0])
  d = payload.decode(p, soft)
  assert d["decoded"] and d["matches"] and d["erasures"] == 0
  if shown:
    assert d["message"] == shown
  assert len(p.data) == 8 and p.n_coded == 128 and p.cell == 2


def test_layout_sizes_and_limits():
  assert _payload(bits=32, ecc=4).cell == 2
  big = _payload("int:1", bits=256, ecc=32)
  assert big.n_coded == 512 and big.cell == 1
  assert np.isclose(big.render(1).mean(), 0.5)  # balanced: half the cells are dark
  with pytest.raises(DeepwmError, match="holds"):
    _payload("int:1", bits=256, ecc=32, size=16)
  for bad in ("ACME", "rot13:ACME", "text:", "hex:xyz", "int:-1", "text:" + "x" * 9,
              "hex:" + "11" * 9, "int:" + str(2 ** 64)):
    with pytest.raises(DeepwmError):
      _payload(bad)
  for bits, ecc in ((30, 8), (24, 8), (264, 8), (64, 0)):
    with pytest.raises(DeepwmError):
      _payload("int:1", bits=bits, ecc=ecc)


def test_key_changes_the_layout_and_all_zero_messages_are_balanced():
  a, b = _payload("int:0", key=1), _payload("int:0", key=2)
  assert not np.array_equal(a.cells, b.cells)
  assert 0.3 < a.channel_bits.mean() < 0.7


def test_error_correction_and_erasures():
  p = _payload()
  soft = p.soft_bits(p.render(1)[None])[0].copy()
  soft[:32] *= -1  # 4 wrong bytes: exactly what 8 parity bytes correct
  d = payload.decode(p, soft[None])
  assert d["decoded"] and d["matches"] and d["vote_bit_accuracy"] == pytest.approx(0.75)
  soft[32:48] *= -1  # 6 wrong bytes: beyond the code
  assert not payload.decode(p, soft[None])["matches"]
  blank = p.soft_bits(np.ones((3, 32, 32, 1), np.float32))
  assert not payload.decode(p, blank)["decoded"]  # a blank reads as erasures, not a message
  assert payload.per_image(p, blank)["confident"].max() == 0


def test_majority_vote_over_noisy_images():
  p = _payload()
  r = _noisy(p, 16, 0.6, 0.6, 0)
  pi = payload.per_image(p, p.soft_bits(r))
  assert pi["bit_accuracy"].mean() < 0.99  # single images are wrong somewhere ...
  assert payload.decode(p, p.soft_bits(r))["matches"]  # ... 16 soft votes are not


def test_record_round_trip():
  p = _payload("owner")
  q = payload.Payload.from_record(json.loads(json.dumps(p.record())))
  np.testing.assert_array_equal(p.render(3), q.render(3))
  assert q.data == p.data
  with pytest.raises(DeepwmError):
    payload.Payload.from_record({"n_coded": 3})


def _calibrated(p):
  negatives = np.concatenate([_noisy(p, 200, 0.0, 0.05, 1), _noisy(p, 100, 0.1, 0.02, 2)])
  positives = _noisy(p, 100, 0.95, 0.05, 3)
  return payload.calibrate_bits(p, p.soft_bits(negatives), p.soft_bits(positives))


def test_decision_detects_copies_and_ignores_faint_traces():
  p = _payload()
  cal = _calibrated(p)
  assert cal.threshold > 0.5 and payload.fair_tail(round(cal.threshold * 128), 128) <= cal.p0
  strong = payload.decide(p, p.soft_bits(_noisy(p, 16, 0.9, 0.1, 4)), cal, 1e-6, 0.5)
  assert strong["detected"] and strong["p_value"] < 1e-9 and strong["decode_matches"]
  assert strong["p_value"] == max(strong["p_fair"], strong["p_calibrated"])
  # A faint trace of w (docs/verdicts.md): every raw bit right, none confident.
  faint = payload.decide(p, p.soft_bits(_noisy(p, 16, 0.1, 0.0, 5)), cal, 1e-6, 0.5)
  assert faint["bit_accuracy_mean"] == 1.0 and not faint["detected"] and faint["p_value"] == 1.0
  blank = payload.decide(p, p.soft_bits(_noisy(p, 16, 0.0, 0.05, 6)), cal, 1e-6, 0.5)
  assert not blank["detected"] and not blank["decode_decoded"]


def test_fair_bits_give_valid_p_values():
  p = _payload()
  cal = verdict.Calibration(threshold=0.0, n_negatives=10, n_negatives_above=10, p0=1.0,
                            max_negative=1.0)  # no calibration: the fair-bit bound alone
  rng = np.random.default_rng(8)
  ps = np.array([payload.decide(p, rng.normal(0, 1, (4, 128)), cal, 1e-6, 0.0)["p_fair"]
                 for _ in range(200)])
  for x in (0.05, 0.2, 0.5):
    assert np.mean(ps <= x) <= x + 0.05


def test_owner_binding_and_config_validation():
  cfg = config.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                 "quickstart_payload.py"))
  config.validate(cfg)
  p = payload.from_config(cfg, payload.owner_of(cfg))
  info = {"owner": payload.owner_of(cfg), "config": json.loads(cfg.to_json_best_effort()),
          "payload": p.record()}
  assert payload.binding(info) is True
  assert payload.binding({**info, "owner": "mallory"}) is False
  cfg.watermark.message = "base64:QUNNRQ=="
  with pytest.raises(DeepwmError, match="no known format"):
    config.validate(cfg)
  cfg.watermark.update(message="int:1", bits=256, ecc_bytes=64, spec="payload")
  cfg.data.image_size = 16
  with pytest.raises(DeepwmError, match="holds"):
    config.validate(cfg)


def make_payload_kit(tiny_run, path, owner="alice"):
  """A payload kit from the tiny run's networks (which never learned it: not detected)."""
  kit = kit_lib.load_kit(os.path.join(tiny_run[0], "kit"))
  cfg = ml_collections.ConfigDict(kit.config.to_dict())
  cfg.watermark.update(spec="payload", message="text:ACME", owner=owner)
  p = payload.from_config(cfg, owner)
  w = p.render(kit.channels)
  r_neg = kit.extract(np.random.default_rng(0).uniform(size=(64, 32, 32, kit.channels)))
  bit_cal = payload.calibrate_bits(p, p.soft_bits(r_neg))
  kit_lib.write_kit(path, cfg, kit.embedder_vars, kit.extractor_vars, w, kit.blank,
                    kit.calibration, owner=owner,
                    payload={**p.record(), "calibration": bit_cal.to_dict()})
  return path


def test_payload_kit_verify_cli_and_kit_info(tiny_run, tmp_path, capsys):
  path = make_payload_kit(tiny_run, str(tmp_path / "kit"))
  kit = kit_lib.load_kit(path)
  images = np.random.default_rng(1).uniform(size=(8, 32, 32, kit.channels)).astype(np.float32)
  v = kit.verify(images)
  assert not v.detected and v.payload["n_images"] == 8 and not v.payload["decode_matches"]
  assert v.p_value >= max(v.image_p_value, v.payload["p_value"])
  assert cli.main(["kit-info", path]) == 0
  out = capsys.readouterr().out
  assert "owner     alice" in out and "owner binding" not in out  # a text message binds nothing
  assert "payload   64 bits 'text:ACME'" in out and "SHA-256" in out
  assert "held-out ones" in out and "null per source: clean_A, M_A, clean_B" in out
  assert cli.main(["kit-info", path, "--json"]) == 0
  rec = json.loads(capsys.readouterr().out)
  assert rec["package_version"] and rec["payload"]["bits"] == 64 and "kit.json" in rec["manifest"]

  # verify from a folder: one line of verdict, one of payload, then the JSON
  from deepwm_jax.data import imageio
  imageio.write_images(str(tmp_path / "in"), images, [f"{i}.png" for i in range(8)])
  assert cli.main(["verify", "--kit", path, "--input", str(tmp_path / "in"), "--json", "-"]) == 1
  out = capsys.readouterr().out
  assert "not detected" in out and "payload: bit accuracy" in out and "not decoded" in out
  assert json.loads(out[out.index("{"):])["payload"]["bits"] == 64


def test_older_kits_are_refused_clearly(tiny_run, tmp_path, capsys):
  for drop in ("calibration", "payload.calibration"):
    path = make_payload_kit(tiny_run, str(tmp_path / drop))
    with open(os.path.join(path, "kit.json")) as f:
      info = json.load(f)
    if drop == "calibration":
      del info["calibration"]
    else:
      del info["payload"]["calibration"]
    with open(os.path.join(path, "kit.json"), "w") as f:
      json.dump(info, f)
    with open(os.path.join(path, "manifest.json"), "w") as f:  # a consistent (older) kit
      json.dump(kit_lib.digests(path), f)
    os.makedirs(tmp_path / "in", exist_ok=True)
    from deepwm_jax.data import imageio
    imageio.write_images(str(tmp_path / "in"), np.ones((2, 32, 32, 3), np.float32),
                         ["a.png", "b.png"], overwrite=True)
    assert cli.main(["verify", "--kit", path, "--input", str(tmp_path / "in")]) == 2
    assert "calibration" in capsys.readouterr().err
  assert cli.main(["kit-info", path]) == 0  # the record still shows
  shutil.rmtree(tmp_path / "in")


def test_report_has_a_payload_section():
  from deepwm_jax import report
  p = _payload()
  cal = _calibrated(p)
  groups = {"watermarked": payload.group_summary(p, p.soft_bits(_noisy(p, 20, 0.9, 0.1, 9)), cal,
                                                 1e-6, 0.5),
            "clean A": payload.group_summary(p, p.soft_bits(_noisy(p, 20, 0.0, 0.05, 10)), cal,
                                             1e-6, 0.5)}
  assert groups["watermarked"]["first_n_images"] == 16 and groups["watermarked"]["first_detected"]
  md = report.render_markdown({"payload": {"message": "text:ACME", "bits": 64, "ecc_bytes": 8,
                                           "n_coded": 128, "calibration": cal.to_dict(),
                                           "groups": groups}}, {})
  assert "## Payload (64 bits, 'text:ACME'" in md and "| watermarked | 100.0% |" in md
  assert "not decoded" in md  # the clean row
