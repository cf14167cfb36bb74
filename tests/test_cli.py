"""The `deepwm` commands: kit round trip, embed/verify exit codes, and bad input (exit 2, one
line, nothing already written lost)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import deepwm_jax
from deepwm_jax import cli, kit as kit_lib, verdict
from deepwm_jax.data import imageio
from deepwm_jax.errors import DeepwmError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def deepwm(*args):
  return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def kit_dir(tiny_run):
  return os.path.join(tiny_run[0], "kit")


@pytest.fixture
def images_dir(tmp_path):
  rng = np.random.default_rng(0)
  d = tmp_path / "in"
  imageio.write_images(str(d), rng.uniform(size=(4, 32, 32, 3)).astype(np.float32),
                       [f"img{i}.png" for i in range(4)])
  return d


def _always_detecting_kit(kit_dir, path):
  """A copy of the kit whose calibration counts every image as a hit: exercises the 'detected'
  branch of verify's plumbing (exit 0) independently of how well the tiny networks trained."""
  k = deepwm_jax.load_kit(kit_dir)
  cal = verdict.Calibration(threshold=0.0, n_negatives=999, n_negatives_above=0, p0=1e-3,
                            max_negative=-1.0, method="test: every image is a hit")
  kit_lib.write_kit(path, k.config, k.embedder_vars, k.extractor_vars, k.watermark, k.blank, cal)
  return path


def test_kit_round_trip(kit_dir, tiny_run):
  k = deepwm_jax.load_kit(kit_dir)
  assert (k.image_size, k.channels) == (32, 3)
  x = np.random.default_rng(1).uniform(size=(3, 32, 32, 3)).astype(np.float32)
  y = k.embed(x)
  assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
  assert k.extract(y).shape == x.shape
  v = k.verify(x)
  # Random images through the barely trained tiny kit: not detected, at a p-value above alpha.
  assert v.n_images == 3 and not v.detected and v.p_value > v.alpha and v.nc_mean is not None
  assert k.info["calibration"]["threshold"] == tiny_run[1]["calibration"]["threshold"]
  # verify on extractions made once (the zoo's path) decides exactly as verify on images
  again = k.verify_extracted(k.extract(x))
  assert (again.p_value, again.success_rate, again.nc_mean) == (v.p_value, v.success_rate,
                                                                v.nc_mean)
  with pytest.raises(DeepwmError, match="extractions have shape"):
    k.verify_extracted(k.extract(x)[..., :1])


def test_kit_loads_on_four_devices(kit_dir):
  code = ("import deepwm_jax, jax, numpy as np; assert jax.device_count() == 4; "
          f"k = deepwm_jax.load_kit({kit_dir!r}); print(k.extract(np.zeros((4,32,32,3),"
          "np.float32)).shape)")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "(4, 32, 32, 3)" in out.stdout


def test_embed_then_verify_exit_codes(kit_dir, images_dir, tmp_path, capsys):
  out = tmp_path / "out"
  assert deepwm("embed", "--kit", kit_dir, "--input", images_dir, "--output", out) == 0
  assert sorted(os.listdir(out)) == [f"img{i}.png" for i in range(4)]
  # Random images through the (barely trained) tiny kit: not detected -> exit 1.
  report = tmp_path / "v.json"
  assert deepwm("verify", "--kit", kit_dir, "--input", images_dir, "--json", report) == 1
  result = json.loads(report.read_text())
  assert result["detected"] is False
  for key in ("detected", "n_images", "success_rate", "nc_mean", "p_value"):
    assert key in result
  assert result["n_images"] == 4
  # The tiny kit keeps its null per source: each kind's p-value alone, in the JSON and printed.
  assert {"clean_A", "clean_B", "M_A", "flat"} <= set(result["p_by_kind"])
  assert "against each kind of innocent alone: clean_A" in capsys.readouterr().out
  # The alignment search is a keyed kit's: a deep kit refuses it in one line.
  assert deepwm("verify", "--kit", kit_dir, "--input", images_dir, "--search", "shift") == 2
  assert "--search is for keyed kits" in capsys.readouterr().err
  detecting = _always_detecting_kit(kit_dir, str(tmp_path / "kit_all"))
  assert deepwm("verify", "--kit", detecting, "--input", out, "--json", report) == 0
  result = json.loads(report.read_text())
  assert result["detected"] is True and result["p_value"] < 1e-6
  assert "DETECTED" in capsys.readouterr().out


def test_embed_refuses_to_overwrite(kit_dir, images_dir, tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "img0.png").write_bytes(b"precious")
  assert deepwm("embed", "--kit", kit_dir, "--input", images_dir, "--output", out) == 2
  assert (out / "img0.png").read_bytes() == b"precious"
  assert sorted(os.listdir(out)) == ["img0.png"]
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "already exists" in err


@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"),
    ("empty", "no images"),
    ("not_image", "notes.txt"),
    ("too_small", "at least 32x32"),
    ("wrong_channels", "channel"),
])
def test_bad_input_folders(kit_dir, tmp_path, capsys, case, needle):
  d = tmp_path / "suspect"
  rng = np.random.default_rng(0)
  if case != "missing":
    d.mkdir()
  if case == "not_image":
    imageio.write_images(str(d), rng.uniform(size=(2, 32, 32, 3)).astype(np.float32), ["a", "b"])
    (d / "notes.txt").write_text("hello")
  elif case == "too_small":  # larger images are read in windows; smaller ones refused
    imageio.write_images(str(d), rng.uniform(size=(2, 20, 48, 3)).astype(np.float32), ["a", "b"])
  elif case == "wrong_channels":
    imageio.write_images(str(d), rng.uniform(size=(2, 32, 32, 1)).astype(np.float32), ["a", "b"])
  assert deepwm("verify", "--kit", kit_dir, "--input", d) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and needle in err, err


def test_resize_flag_accepts_other_sizes(kit_dir, tmp_path, capsys):
  d = tmp_path / "big"
  imageio.write_images(str(d), np.random.default_rng(0).uniform(size=(2, 48, 48, 3)).astype(
      np.float32), ["a", "b"])
  assert deepwm("verify", "--kit", kit_dir, "--input", d, "--resize") == 1  # random: not detected
  assert "resized 2 images to 32x32" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["delete", "alter", "manifest"])
def test_damaged_kit_is_refused(kit_dir, images_dir, tmp_path, capsys, damage):
  bad = tmp_path / "kit"
  shutil.copytree(kit_dir, bad)
  if damage == "delete":
    os.remove(bad / "kit.json")
  elif damage == "alter":
    state_files = [os.path.join(dp, f) for dp, _, fs in os.walk(bad / "state") for f in fs]
    with open(max(state_files, key=os.path.getsize), "r+b") as f:
      f.seek(10)
      f.write(b"\x00\x01\x02")
  else:
    os.remove(bad / "manifest.json")
  assert deepwm("verify", "--kit", bad, "--input", images_dir) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert {"delete": "incomplete", "alter": "altered", "manifest": "manifest"}[damage] in err


def test_nan_and_wrong_shape_through_the_api(kit_dir):
  k = deepwm_jax.load_kit(kit_dir)
  with pytest.raises(DeepwmError, match="NaN"):
    k.verify(np.full((2, 32, 32, 3), np.nan, np.float32))
  with pytest.raises(DeepwmError, match="at least 32x32"):
    k.embed(np.zeros((2, 16, 16, 3), np.float32))
  with pytest.raises(DeepwmError, match="shape"):
    k.embed(np.zeros((32, 32, 3), np.float32))  # one image without its batch axis


@pytest.mark.parametrize("override, needle", [
    ("--config.data.nope=1", "unknown config key"),
    ("--config.data.channels=2", "data.channels"),
    ("--config.stage1.batch=3", "even batch"),
    ("--config.data.image_size=big", "not a valid int"),
    ("--config.stage1.hardest_distortion=-1", "stage1.hardest_distortion"),
    ("--config.stage1.hardest_distortion=1", "acts on keyed kits"),
])
def test_bad_config_exits_2_before_any_work(tmp_path, capsys, override, needle):
  workdir = tmp_path / "w"
  assert deepwm("run", "--config", os.path.join(REPO, "configs", "tiny.py"), "--workdir",
                workdir, override) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and needle in err, err
  assert not workdir.exists()


def test_missing_config_file(tmp_path, capsys):
  assert deepwm("describe", "--config", tmp_path / "none.py") == 2
  assert "not found" in capsys.readouterr().err


def test_describe_paper_config_matches_reference_counts(capsys):
  assert deepwm("describe", "--config", os.path.join(REPO, "configs", "paper_debone.py")) == 0
  counts = json.loads(capsys.readouterr().out)
  assert counts["embedder"] == 41_823_873
  assert counts["extractor"] == 3_366_145
  assert counts["discriminator"] == 1_554_433
  assert counts["task"] > 0


def test_describe_kit(kit_dir, capsys):
  assert deepwm("describe", "--kit", kit_dir) == 0
  info = json.loads(capsys.readouterr().out)
  assert info["image_size"] == 32 and info["channels"] == 3 and info["extractor"] > 0


def test_a_kit_of_another_kind_is_refused_by_name(tmp_path, images_dir, capsys):
  kit_dir = tmp_path / "other"
  kit_dir.mkdir()
  (kit_dir / "kit.json").write_text(json.dumps({"kind": "classify", "format": 1}))
  (kit_dir / "manifest.json").write_text(json.dumps(kit_lib.digests(str(kit_dir))))
  assert deepwm("verify", "--kit", kit_dir, "--input", images_dir) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "'classify' kit, not a 'image' kit" in err
  assert "deepwm run" in err


def test_version_and_bare_command_print_help(capsys):
  with pytest.raises(SystemExit) as e:
    deepwm("--version")
  assert e.value.code == 0 and deepwm_jax.__version__ in capsys.readouterr().out
  assert deepwm() == 0  # a bare `deepwm` shows what it can do
  out = capsys.readouterr().out
  assert "usage: deepwm" in out and "verify" in out and "attack" in out


def test_usage_errors_are_one_line_and_exit_2(capsys):
  assert deepwm("verify", "--input", "x") == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--kit" in err and "deepwm verify --help" in err
  assert deepwm("no-such-command") == 2
  assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_every_option_has_help_text():
  """Every option of every command (and sub-command) says what it is for."""
  def walk(parser):
    for action in parser._actions:
      if action.choices and isinstance(action.choices, dict):  # sub-commands
        for sub in action.choices.values():
          yield from walk(sub)
      elif action.option_strings or action.dest not in ("help",):
        yield parser.prog, action
  missing = [f"{prog} {a.option_strings or a.dest}" for prog, a in walk(cli._parser())
             if not a.help]
  assert not missing, missing


def test_an_unexpected_error_in_verify_exits_2_with_the_traceback_logged(
    kit_dir, images_dir, capsys, monkeypatch):
  """A bug must never read as a verdict: exit 2 (not 1, 'not detected'), one line, a log."""
  def broken(self, *args, **kwargs):
    raise RuntimeError("simulated failure inside the extractor")
  monkeypatch.setattr(kit_lib.Kit, "verify", broken)
  assert deepwm("verify", "--kit", kit_dir, "--input", images_dir) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "unexpected error (RuntimeError" in err
  log = err.split("the traceback is in ")[1].split(":")[0]
  with open(log) as f:
    assert "simulated failure inside the extractor" in f.read()
  os.remove(log)


def test_kit_info_takes_kit_and_json_file_like_every_command(kit_dir, tmp_path, capsys):
  out = tmp_path / "info.json"
  assert deepwm("kit-info", "--kit", kit_dir, "--json", out) == 0
  assert "manifest" in capsys.readouterr().out  # the text record, and the JSON in the file
  rec = json.loads(out.read_text())
  assert rec["path"] == os.path.abspath(kit_dir) and rec["manifest"]
  assert deepwm("kit-info", kit_dir, "--json") == 0  # the older positional form, JSON alone
  assert json.loads(capsys.readouterr().out)["path"] == os.path.abspath(kit_dir)
  assert deepwm("kit-info") == 2


def test_a_shipped_config_by_name(capsys):
  assert deepwm("describe", "--config", "paper_debone") == 0
  assert json.loads(capsys.readouterr().out)["embedder"] == 41_823_873
