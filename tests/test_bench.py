"""`deepwm bench`: a tiny case runs and writes its record; bad selections are clear errors."""
import dataclasses
import json
import os

import pytest

from deepwm_jax import cli
from deepwm_jax.tools import bench

TINY = ["--only", "surrogate-64", "--image-size", "16", "--ngf", "4", "--batch", "2",
        "--reps", "1", "--peak-size", "256"]


def test_tiny_case_writes_json_record(tmp_path, capsys):
  out = tmp_path / "bench.json"
  assert cli.main(["bench", *TINY, "--json", str(out)]) == 0
  (rec,) = json.loads(out.read_text())
  for key in ("name", "image_size", "channels", "ngf", "extractor_channels", "batch",
              "steps_per_s", "flops", "peak_flops", "compile_s", "images_per_s",
              "fraction_of_peak", "conv_impl", "load_avg_before"):
    assert key in rec, key
  assert (rec["name"], rec["image_size"], rec["ngf"], rec["batch"]) == ("surrogate-64", 16, 4, 2)
  assert rec["conv_impl"] == "auto" and rec["params"]["model"] > 0
  assert rec["steps_per_s"] > 0 and rec["flops"] > 0 and rec["peak_flops"] > 1e8
  assert rec["flops_source"] == "compiled"  # on the CPU; 'lowered' where cuDNN hides convs
  assert rec["images_per_s"] == pytest.approx(2 * rec["steps_per_s"])
  assert 0 < rec["fraction_of_peak"] < 1
  assert "surrogate-64" in capsys.readouterr().out
  assert not os.path.exists(str(out) + ".tmp")


def test_distorted_stage1_case_runs_with_the_codec_callback(tmp_path):
  """The real JPEG codec leaves the jitted step through a host callback; its case still
  compiles, runs and is timed (its cost is the difference to stage1-quickstart)."""
  out = tmp_path / "bench.json"
  assert cli.main(["bench", "--only", "stage1-jpeg-codec", "--image-size", "16", "--ngf", "4",
                   "--extractor-channels", "4", "--batch", "2", "--reps", "1",
                   "--peak-size", "256", "--json", str(out)]) == 0
  (rec,) = json.loads(out.read_text())
  assert rec["name"] == "stage1-jpeg-codec" and rec["steps_per_s"] > 0


def test_bad_selection_is_a_clear_error(capsys):
  assert cli.main(["bench", "--only", "nope"]) == 2
  assert "no bench case matches" in capsys.readouterr().err
  assert cli.main(["bench", *TINY, "--conv-impl", "fast"]) == 2
  assert "--conv-impl" in capsys.readouterr().err
  assert cli.main(["bench", *TINY, "--batch", "0"]) == 2


def test_list_and_overrides_select_cases(capsys):
  args = bench.add_arguments(__import__("argparse").ArgumentParser()).parse_args(
      ["--only", "stage1", "--all", "--ngf", "8"])
  cases = bench.select_cases(args)
  assert {c.name for c in cases} >= {"stage1-quickstart", "stage1-64", "stage1-128-ref"}
  assert all(c.ngf == 8 and c.kind == "stage1" for c in cases)
  assert cli.main(["bench", "--list"]) == 0
  assert "stage1-64" in capsys.readouterr().out


def test_torch_case_describes_the_same_networks():
  """The PyTorch description carries the JAX config's architecture (what the ratio compares)."""
  case = next(c for c in bench.CASES if c.name == "stage1-quickstart")
  cfg = bench.case_config(case, "auto")
  t = bench.torch_case(case, cfg)
  assert t["kind"] == "stage1" and t["batch"] == cfg.stage1.batch
  assert t["extractor"]["dilations"] == list(cfg.extractor.dilations)
  assert t["disc_widths"] == list(cfg.discriminator.widths)
  assert t["optimizer"]["agc"] == cfg.stage1.optimizer.agc
  zoo = next(c for c in bench.CASES if c.name == "zoo-64")
  z = bench.torch_case(zoo, bench.case_config(zoo, "auto"))
  assert z["members"] == zoo.members and z["model"]["loss"] == "l2"


def test_compute_dtype_reaches_every_case(capsys):
  args = bench.add_arguments(__import__("argparse").ArgumentParser()).parse_args(
      ["--all", "--compute-dtype", "bfloat16"])
  cases = bench.select_cases(args)
  assert any(c.kind == "zoo" for c in cases)
  assert all(c.compute_dtype == "bfloat16" for c in cases)
  assert bench.case_config(cases[0], "auto").compute_dtype == "bfloat16"
  # The zoo case's group step convolves in bfloat16 (traced only, not compiled).
  zoo = dataclasses.replace(next(c for c in cases if c.kind == "zoo"), members=2)
  step, step_args, _ = bench.jax_step(zoo, bench.case_config(zoo, "xla"))
  assert "bf16" in str(step.trace(*step_args).jaxpr)
  assert cli.main(["bench", "--only", "nope"]) == 2
  assert "no bench case matches" in capsys.readouterr().err


def test_kit_cases_report_megapixels_per_second(tmp_path, capsys):
  """The embed/verify cases time a kit on one image of the case's size (here 64 px: four
  windows of the default config's untrained networks)."""
  out = tmp_path / "kit.json"
  assert cli.main(["bench", "--only", "-512", "--image-size", "64", "--reps", "1",
                   "--peak-size", "256", "--json", str(out)]) == 0
  recs = json.loads(out.read_text())
  assert [r["kind"] for r in recs] == ["embed", "verify"]
  for r in recs:
    assert r["image_size"] == 64 and r["window"] == 32 and r["megapixels_per_s"] > 0
    assert r["megapixels_per_s"] == pytest.approx(64 * 64 / 1e6 / r["s_per_image"])
  # Without --kit: the default config's kit, keyed, whose windows tile (2 x 2 at 64 px).
  assert all(r["kit"] == "(untrained keyed)" for r in recs)
  assert recs[0]["windows"] == 4 and recs[1]["windows"] == 4
  assert "MP/s" in capsys.readouterr().out
  assert cli.main(["bench", "--only", "embed-512", "--image-size", "16", "--reps", "1",
                   "--peak-size", "256"]) == 2
  assert "smaller than the kit's crop" in capsys.readouterr().err
