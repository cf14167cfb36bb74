"""The owner's own model and data: a callable fed the owner's inputs, or paired folders of
inputs and collected outputs, each through the tiny pipeline end to end (deepwm_jax.protect and
`deepwm protect`); bad models and folders get one-line errors and lose nothing."""
import os

import numpy as np
import pytest

import deepwm_jax
from deepwm_jax import cli, config as config_lib, owner
from deepwm_jax.data import imageio, pairs, sources
from deepwm_jax.errors import DeepwmError
from deepwm_jax.stages import full_size, task


def photos(n=6):
  """Crops of the held-out photos at several sizes: the owner's inputs."""
  val = sources.builtin_images("val", 3)
  sizes = [(40, 48), (48, 40), (64, 64), (40, 56), (56, 40), (48, 48)]
  return [val[i % len(val)][60 * i:60 * i + h, 90:90 + w] for i, (h, w) in enumerate(sizes[:n])]


def darken(x):
  """The owner's model: any function of NHWC float32 images in [0, 1]."""
  return np.asarray(x, np.float32) * 0.8 + 0.1


def test_callable_model_on_an_array_of_inputs_end_to_end(tmp_path):
  calls = []

  def model(x):
    calls.append(x.shape)
    return darken(x)

  kit = deepwm_jax.protect(model, photos(), str(tmp_path / "w"), config="tiny",
                           overrides={"data.n_protect": 16, "data.n_attack": 16},
                           log=lambda *_: None)
  assert os.path.isfile(tmp_path / "w" / "report.json")
  # Batched by the package, on the real inputs (crops, no synthetic degradation).
  assert calls and all(s[0] <= task.CALL_BATCH and s[1:] == (32, 32, 3) for s in calls)
  cfg = kit.config
  assert cfg.data.task == "none" and cfg.task.source.startswith("callable:")
  p = pairs.make_pairs(cfg, "val", 4, pairs.VAL)
  np.testing.assert_array_equal(p.a, p.b)  # inputs are not degraded
  marked = kit.embed(photos()[:2])
  assert [m.shape for m in marked] == [(40, 48, 3), (48, 40, 3)]
  # Resuming in a new process without the callable: a one-line error, not a crash.
  src = cfg.task.source
  task._CALLABLES.clear()
  with pytest.raises(DeepwmError, match="protect\\(model=...\\) again"):
    task.model_callable(src)


def test_a_keyed_kit_with_a_texture_mask_protects_a_callable_model(tmp_path):
  """The owner's path with the keyed method (configs/keyed.py's choices at tiny scale)."""
  workdir = tmp_path / "w"
  kit = deepwm_jax.protect(darken, photos(), str(workdir), config="tiny",
                           overrides={"data.n_protect": 16, "data.n_attack": 16,
                                      "protect.method": "keyed",
                                      "embedder.texture_mask": 0.04},
                           log=lambda *_: None)
  assert kit.method == "keyed" and kit.config.embedder.texture_mask == 0.04
  rep = __import__("json").loads((workdir / "report.json").read_text())
  assert rep["method"] == "keyed" and rep["key"]["bits"] == kit.key.size
  assert not any(g["detected"] for g in rep["groups"].values() if g["role"] == "innocent")
  # The report's models also serve the owner's held-out inputs whole (squares of the crop).
  sus = rep["full_size"]["suspects"]
  assert sus and all(g["height"] == g["width"] and g["height"] % kit.image_size == 0
                     for g in sus.values())
  assert not any(g["set"]["detected"] for g in sus.values() if g["role"] == "innocent")
  x = photos()[:2]
  marked = kit.embed(x)
  assert [m.shape for m in marked] == [(40, 48, 3), (48, 40, 3)]
  v = kit.verify(marked)
  assert 0 < v.p_value <= 1 and len(v.p_per_image) == 2


def test_a_filter_kit_protects_paired_folders(tmp_path, capsys):
  """The filter method on the owner's collected outputs: no model to call, so the whole-photo
  suspects are read alone, and the kit reads the owner's outputs against themselves."""
  inputs, outputs = _pair_folders(tmp_path)
  workdir = tmp_path / "w"
  assert cli.main(["protect", "--config", "tiny", "--inputs", inputs, "--outputs", outputs,
                   "--workdir", str(workdir), "--config.data.n_protect=16",
                   "--config.data.n_attack=16", "--config.protect.method=filter"]) == 0
  kit = deepwm_jax.load_kit(str(workdir / "kit"))
  rep = __import__("json").loads((workdir / "report.json").read_text())
  assert kit.method == "filter" and rep["groups"]["watermarked"]["detected"]
  assert not any(g["detected"] for g in rep["groups"].values() if g["role"] == "innocent")
  assert not any(g["against_owner_outputs"] for g in rep["full_size"]["suspects"].values())
  x = photos()[2:4]
  assert kit.verify(kit.embed(x), references=x).detected


def _pair_folders(tmp_path, n=6):
  x = photos(n)
  inputs, outputs = tmp_path / "in", tmp_path / "out"
  names = [f"im{i}.png" for i in range(n)]
  imageio.write_images(str(inputs), x, names)
  imageio.write_images(str(outputs), [darken(i) for i in x], names)
  return str(inputs), str(outputs)


def test_paired_folders_end_to_end_through_the_cli(tmp_path, capsys):
  inputs, outputs = _pair_folders(tmp_path)
  workdir = tmp_path / "w"
  assert cli.main(["protect", "--config", "tiny", "--inputs", inputs, "--outputs", outputs,
                   "--workdir", str(workdir), "--config.data.n_protect=16",
                   "--config.data.n_attack=16"]) == 0
  assert '"fidelity"' in capsys.readouterr().out
  kit = deepwm_jax.load_kit(str(workdir / "kit"))
  assert kit.config.data.source.startswith("pairs:") and kit.config.task.source == "dataset"
  rep = __import__("json").loads((workdir / "report.json").read_text())
  assert rep["full_size"]["photos"][0]["windows"] >= 1  # the held-out outputs at their size
  # Crops of a pair are cut at the same place: B is the model's output of A.
  p = pairs.make_pairs(kit.config, "protect", 8, pairs.PROTECT)
  np.testing.assert_allclose(p.b, darken(p.a), atol=1.5 / 255)


def test_unmatched_pair_names_exit_2_and_keep_the_workdir(tmp_path, capsys):
  inputs, outputs = _pair_folders(tmp_path, 3)
  os.rename(os.path.join(outputs, "im2.png"), os.path.join(outputs, "other.png"))
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine")
  assert cli.main(["protect", "--config", "tiny", "--inputs", inputs, "--outputs", outputs,
                   "--workdir", str(workdir)]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "only in" in err, err
  assert (workdir / "notes.txt").read_text() == "mine"
  assert cli.main(["protect", "--config", "tiny", "--inputs", inputs, "--outputs",
                   str(tmp_path / "nope"), "--workdir", str(workdir)]) == 2
  assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("model, needle", [
    (lambda x: x[:, :4], "returned shape"),
    (lambda x: np.full_like(x, np.nan), "NaN"),
    (lambda x: x * 255.0, "outside"),
    (lambda x: 2 * x - 1, "outside"),
    (lambda x: 1 / 0, "ZeroDivisionError"),
])
def test_a_misbehaving_callable_gets_a_one_line_error(model, needle):
  x = np.random.default_rng(0).uniform(size=(70, 8, 8, 3)).astype(np.float32)
  with pytest.raises(DeepwmError, match=needle) as e:
    task.call_model(model, x, "callable:m")
  assert "\n" not in str(e.value)


def test_owner_config_refuses_bad_models_and_inputs(tmp_path):
  with pytest.raises(DeepwmError, match="not a folder"):
    owner.owner_config(darken, str(tmp_path / "none"), "tiny")
  with pytest.raises(DeepwmError, match="neither"):
    owner.owner_config(42, str(tmp_path), "tiny")
  with pytest.raises(DeepwmError, match="unknown config key"):
    owner.owner_config(darken, str(tmp_path), "tiny", {"data.nope": 1})


def test_an_importable_model_is_named_not_registered(tmp_path):
  """`deepwm protect --model python:module:function`: the config names the function, so a
  resumed run in a new process imports it again."""
  (tmp_path / "in").mkdir()
  cfg = owner.owner_config("python:test_owner:darken", str(tmp_path / "in"), "tiny")
  assert cfg.task.source == "python:test_owner:darken" and cfg.data.task == "none"
  assert cfg.data.source == f"folder:{tmp_path / 'in'}" and cfg.data.scale == 1.0
  assert task.model_callable(cfg.task.source) is darken


def test_protect_starts_from_the_keyed_config_by_default(tmp_path, capsys):
  """An owner who names no config gets the kit whose verdict holds for suspects of any family."""
  cfg = owner.owner_config(darken, str(tmp_path))
  assert owner.DEFAULT_CONFIG == "keyed" and cfg.protect.method == "keyed"
  assert cfg.data.source == f"folder:{tmp_path}"
  # `deepwm protect --help` names the same default (the CLI does not import owner to build it).
  from deepwm_jax import cli
  with pytest.raises(SystemExit):
    cli.main(["protect", "--help"])
  assert f"(default: {owner.DEFAULT_CONFIG})" in " ".join(capsys.readouterr().out.split())


def test_whole_photo_inputs_of_a_pair_source_are_the_collected_inputs(tmp_path):
  """The report's suspects serve whole held-out photos: for collected pairs their inputs are
  the owner's own inputs (cut to one square), never a synthetic degradation."""
  inputs, outputs = _pair_folders(tmp_path)
  cfg = config_lib.load("tiny")
  cfg.data.source = f"pairs:{inputs}:{outputs}"
  a = full_size.suspect_inputs(cfg)
  held_out = [img[..., :3] for img in pairs.load_split(cfg, "val")]
  side = min(min(img.shape[:2]) for img in held_out) // cfg.data.image_size * cfg.data.image_size
  assert a.shape == (len(held_out), side, side, 3)
  np.testing.assert_array_equal(a[0], full_size.photos_for(held_out[:1], 1, side)[0])
