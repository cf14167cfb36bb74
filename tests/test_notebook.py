"""The quickstart notebook runs top to bottom and draws its figures; `deepwm_jax.api` gives the
very arrays and models of a finished run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.py")
NOTEBOOK = os.path.join(REPO, "notebooks", "quickstart.ipynb")
GENERATOR = os.path.join(REPO, "notebooks", "make_quickstart.py")


def test_api_gives_the_runs_arrays_and_models(tiny_run, tiny_cfg, tmp_path):
  import deepwm_jax
  from deepwm_jax import api, metrics
  workdir, report, _ = tiny_run
  kit = deepwm_jax.load_kit(os.path.join(workdir, "kit"))
  val = api.pairs(tiny_cfg, "val")
  b = api.task_model(tiny_cfg, workdir)(val.a)
  # The report's numbers, recomputed from api's pairs and model: the same images and network.
  assert float(np.mean(metrics.psnr(b, val.b))) == pytest.approx(report["task"]["psnr_M_vs_B"],
                                                                 abs=1e-4)
  assert float(np.mean(metrics.psnr(kit.embed(b), b))) == pytest.approx(
      report["fidelity"]["psnr"], abs=1e-4)
  assert api.pairs(tiny_cfg, "attack").a.shape[0] == tiny_cfg.data.n_attack
  with pytest.raises(deepwm_jax.DeepwmError, match="unknown split"):
    api.pairs(tiny_cfg, "train")
  with pytest.raises(deepwm_jax.DeepwmError, match="no finished 'task' model"):
    api.task_model(tiny_cfg, str(tmp_path / "empty"))
  with pytest.raises(deepwm_jax.DeepwmError, match="unknown spec field"):
    api.train_imitator(tiny_cfg, str(tmp_path), "x", val.a, b, wings=2)
  # save_kit never replaces a folder; a saved kit decides exactly like the original.
  with pytest.raises(deepwm_jax.DeepwmError, match="already exists"):
    api.save_kit(kit, workdir)
  saved = deepwm_jax.load_kit(api.save_kit(kit, str(tmp_path / "kit")))
  assert saved.verify(val.a).to_dict() == kit.verify(val.a).to_dict()
  assert saved.info["owner"] == kit.info["owner"]


def test_committed_notebook_matches_its_generator_and_has_no_outputs():
  import nbformat
  done = subprocess.run([sys.executable, GENERATOR, "--check"], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_runs_on_the_tiny_config(tmp_path, monkeypatch):
  import nbformat
  from nbclient import NotebookClient
  sys.path.insert(0, os.path.dirname(GENERATOR))
  try:
    from make_quickstart import FIGURE_TAGS
  finally:
    sys.path.pop(0)
  # The kernel inherits this environment: the tiny config, a fresh workdir, and conftest's
  # CPU platform and XLA compilation cache.
  monkeypatch.setenv("DEEPWM_NOTEBOOK_CONFIG", TINY)
  monkeypatch.setenv("DEEPWM_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  # A kernel spec of this very interpreter (JUPYTER_PATH comes first in Jupyter's search), so
  # that a user-level 'python3' spec of another Python cannot run the notebook instead.
  spec = tmp_path / "jupyter" / "kernels" / "deepwm-test"
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "deepwm test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Raises CellExecutionError, naming the cell, on the first error.
  NotebookClient(nb, timeout=300, kernel_name="deepwm-test",
                 resources={"metadata": {"path": REPO}}).execute()

  def pngs(cell):
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)

  tagged = {t: c for c in nb.cells for t in c.metadata.get("tags", [])}
  for tag in FIGURE_TAGS:
    assert pngs(tagged[tag]) >= 1, f"the cell tagged {tag} drew no figure"
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.outputs for c in code), [c.source[:40] for c in code if not c.outputs]
  text = "\n".join(o.get("text", "") for c in code for o in c.outputs)
  assert "same verdict from the saved kit" in text and "damaged copy refused" in text
  assert os.path.isdir(tmp_path / "run" / "kit")
