"""The strategies x the zoo: `deepwm attack` against a traditional (spread-spectrum) kit and against
the absorbed model M' (the attacker's B' come from the protected model, not from H)."""
import json
import os
import shutil
import types

import ml_collections
import numpy as np
import pytest

from deepwm_jax import cli, verdict
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.kit import traditional as traditional_kit
from deepwm_jax.stages import common, traditional
from deepwm_jax.errors import DeepwmError
from deepwm_jax.zoo import config as zoo_config, data as zoo_data, run as zoo_run

_ZOO = """
from deepwm_jax.zoo.config import base_config

def get_config():
  c = base_config()
  c.conv_impl = "xla"
  c.protector_workdir = {protector!r}
  c.data.n_eval = 8
  c.archs = dict(unet=dict(arch="unet", ngf=4, num_downs=3))
  c.defaults.update(n_attack=32, steps=2, batch=4)
  c.sweeps = [dict(null=(False, True))]
  c.removal.update(attacks=("jpeg:50",), members=("unet-l2",))
  c.log_every = 1
  c.ckpt_every = 1
  return c
"""


def _fake_kit(strategy="agnostic", method="deep"):
  cfg = ml_collections.ConfigDict({"protect": {"strategy": strategy}})
  return types.SimpleNamespace(config=cfg, method=method, path="K")


def test_protected_mode_follows_the_kits_strategy():
  z = zoo_config.base_config()
  assert zoo_data.protected_mode(_fake_kit("agnostic"), z) == "kit"
  assert zoo_data.protected_mode(_fake_kit("specific"), z) == "specific"
  assert zoo_data.protected_mode(_fake_kit("agnostic", "traditional"), z) == "kit"
  z.protected = "kit"   # an explicit choice wins over the kit's strategy
  assert zoo_data.protected_mode(_fake_kit("specific"), z) == "kit"
  z.protected = "specific"
  with pytest.raises(DeepwmError, match="traditional kit"):
    zoo_data.protected_mode(_fake_kit("agnostic", "traditional"), z)
  z.protected = "absorbed"
  with pytest.raises(DeepwmError, match="not one of"):
    zoo_data.protected_mode(_fake_kit(), z)


@pytest.mark.slow
def test_zoo_attacks_a_traditional_kit(tiny_run, tiny_cfg, tmp_path, capsys):
  workdir = tiny_run[0]   # read only: M comes from its checkpoints/task
  photos = pairs_lib.make_pairs(tiny_cfg, "val", 48, 3).b
  ss = traditional.SpreadSpectrum(7, 32, 3)
  calibration = verdict.calibrate(ss.statistic(photos), margin=1.0)   # max clean z + 1
  kit = traditional_kit.write_kit(str(tmp_path / "kit"), tiny_cfg, ss, calibration)
  cfg = tmp_path / "zoo.py"
  cfg.write_text(_ZOO.format(protector=workdir))
  w = str(tmp_path / "zoo")
  argv = ["attack", "--kit", kit, "--config", str(cfg), "--workdir", w]
  assert cli.main(argv) == 0
  with open(os.path.join(w, "report.json")) as f:
    rep = json.load(f)
  assert rep["method"] == "traditional" and rep["protected"] == "kit"
  rows = {r["name"]: r for r in rep["members"]}
  assert set(rows) == {"unet-l2", "unet-l2-null", "unet-l2@jpeg:50", "unet-l2-null@jpeg:50"}
  # The reference rows are the spread-spectrum kit's z-scores: its own embedding of M's
  # outputs is detected, the clean outputs are not.
  assert rep["reference"]["watermarked"]["success_rate"] >= 0.75
  assert rep["reference"]["clean"]["success_rate"] <= 0.1
  null = rows["unet-l2-null"]
  assert not null["detected"] and null["n_images"] == 8
  assert abs(null["centered_nc_mean"]) < 0.2   # the pattern's correlation is centred at 0
  # The same workdir cannot be reused for M' outputs: a traditional kit has no M'.
  assert cli.main(argv + ["--config.protected=specific"]) == 2
  assert "traditional kit" in capsys.readouterr().err


@pytest.mark.slow
def test_zoo_attacks_the_absorbed_model(tiny_run, tiny_cfg, tmp_path):
  """B' = M'(A) from the protector's checkpoints/absorb, with the run's own absorb.steps
  (config.json) even when the kit carries another."""
  import deepwm_jax
  from deepwm_jax.stages import absorb
  kit = deepwm_jax.load_kit(os.path.join(tiny_run[0], "kit"))
  protector = str(tmp_path / "run")
  shutil.copytree(os.path.join(tiny_run[0], "checkpoints", "task"),
                  os.path.join(protector, "checkpoints", "task"))
  cfg = ml_collections.ConfigDict(tiny_cfg.to_dict())
  cfg.protect.strategy = "specific"
  cfg.protect.absorb.steps, cfg.protect.absorb.batch = 1, 4
  assert kit.config.protect.absorb.steps != 1
  with open(os.path.join(protector, "config.json"), "w") as f:
    json.dump(json.loads(cfg.to_json_best_effort()), f)
  r = common.Runner(cfg, protector, log=lambda *_: None)
  pairs = pairs_lib.make_pairs(cfg, "protect", 8, 1)
  task_vars = r.imitate("task", cfg.task, pairs.a, pairs.b)   # restored, not trained
  absorb.train(r, task_vars, kit.extractor_vars, kit.watermark, pairs.a, pairs.b, pairs.b)

  z = zoo_config.base_config()
  z.protector_workdir, z.data.n_eval = protector, 8
  via_h = zoo_data.load(kit, z, str(tmp_path / "zoo"), 16, False)
  assert via_h.protected == "kit"
  z.protected = "specific"
  d = zoo_data.load(kit, z, str(tmp_path / "zoo"), 16, False)
  fn, mp = absorb.deployed_model(cfg, protector)
  assert d.protected == "specific"
  np.testing.assert_allclose(d.wm, common.predict(fn, mp, d.a), atol=1e-6)
  np.testing.assert_allclose(d.eval_wm, common.predict(fn, mp, d.eval_a), atol=1e-6)
  np.testing.assert_array_equal(d.eval_clean, via_h.eval_clean)   # the same M(A) ...
  assert not np.allclose(d.eval_wm, via_h.eval_wm, atol=1e-6)      # ... but not H(M(A))
  # A workdir measured against one kind of protected output refuses the other.
  w = str(tmp_path / "zoo")
  zoo_run._check_workdir(w, kit, "specific")
  with pytest.raises(DeepwmError, match="protected='specific'"):
    zoo_run._check_workdir(w, kit, "kit")
