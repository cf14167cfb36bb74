"""The notebook's default: the quickstart with fewer steps, so that notebooks/quickstart.ipynb
(this run, an attack and the kit round trip) finishes in about 10 minutes on a 2-core CPU
runtime.

  deepwm run --config configs/notebook.py --workdir runs/notebook

Stage 1 and stage 2 train 600 / 400 steps instead of 800 / 800, and the attackers and null
models about two thirds of the quickstart's steps; everything else is the quickstart
(configs/quickstart.py explains its choices).
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "quickstart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.py"))
_quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_quickstart)


def get_config():
  c = _quickstart.get_config()
  c.stage1.steps = 600
  c.stage2.steps = 400
  c.attack.surrogate.steps = 1200
  c.attack.null.steps = 1000
  c.evaluate.surrogate.steps = 800
  c.evaluate.null.steps = 400
  # A first look: per-source p-values only (24 null models would add ~3.5 minutes on 2 cores);
  # `--config.evaluate.model_null.models=24` or model_null.py adds them (docs/verdicts.md).
  c.evaluate.model_null.models = 0
  return c
