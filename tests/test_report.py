"""write_report on small random data: report.json, report.md and the figures."""
import json
import os

import numpy as np

from deepwm_jax import report


def test_write_report(tmp_path):
  rng = np.random.default_rng(0)
  rep = {
      "fidelity": {"psnr": np.float32(41.5), "ssim": 0.98},
      "watermarked": {"success_rate": 1.0, "nc_mean": np.float64(0.97),
                      "paper_success_rate": 0.9, "p_value": 1e-20, "detected": True},
      "clean": {"success_rate": 0.0, "nc_mean": float("nan")},
      "surrogates": [{"name": "unet_l2", "arch": "unet", "loss": "l2",
                      "success_rate": 0.8, "nc_mean": 0.95}],
      "null": [{"name": "null_unet", "arch": "unet", "loss": "l2",
                "success_rate": 0.0, "nc_mean": 0.93, "paper_success_rate": 0.1}],
      "timing": {"stage1": 12.5, "stage2": np.float32(3.0)},
      "config": {"size": 16, "steps": np.arange(3)},
  }
  grid = {name: rng.uniform(size=(3, 16, 16, 1)).astype(np.float32)
          for name in ("A", "B", "B'", "|B'-B| x10", "R(B')")}
  grid["RGB"] = rng.uniform(size=(3, 16, 16, 3))
  curves = {"stage1": [{"step": i, "loss": 1.0 / (i + 1), "psnr": 20 + i} for i in range(10)],
            "stage2": [{"step": i, "loss_r": 0.5 / (i + 1)} for i in range(5)]}
  stats = {"watermarked": rng.normal(0.9, 0.05, 30), "clean A": rng.normal(0, 0.02, 30),
           "nc:watermarked": rng.normal(0.97, 0.01, 30), "nc:clean A": rng.normal(0.93, 0.01, 30)}
  report.write_report(str(tmp_path), rep, grid=grid, curves=curves, stats=stats, threshold=0.3)

  with open(tmp_path / "report.json") as f:
    loaded = json.load(f)
  assert loaded["clean"]["nc_mean"] is None
  assert loaded["fidelity"]["psnr"] == 41.5
  assert loaded["config"]["steps"] == [0, 1, 2]
  md = (tmp_path / "report.md").read_text()
  for name in ("grid.png", "curves.png", "stats_hist.png", "nc_hist.png"):
    assert f"figures/{name}" in md
    assert os.path.getsize(tmp_path / "figures" / name) > 1000
  assert "unet_l2" in md and "null_unet" in md and "stage1" in md
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_write_report_minimal(tmp_path):
  report.write_report(str(tmp_path), {"timing": {}})
  assert json.loads((tmp_path / "report.json").read_text()) == {"timing": {}}
  assert (tmp_path / "report.md").read_text().startswith("# ")


def test_markdown_table_escapes_pipes():
  table = report.markdown_table([{"a": 0.123456, "b|c": None}], ["a", "b|c"])
  lines = table.strip().split("\n")
  assert lines[0] == "| a | b\\|c |"
  assert lines[2] == "| 0.1235 | - |"


def test_timing_total_is_not_counted_twice(tmp_path):
  report.write_report(str(tmp_path), {"timing": {"stage1": 10.0, "stage2": 5.0, "total": 16.0}})
  md = (tmp_path / "report.md").read_text()
  assert "| **total** | 16.0 |" in md
  assert md.count("total") == 1
