"""The notebook's default: the quickstart with fewer steps, so that notebooks/quickstart.ipynb
(this run, an attack and the kit round trip) finishes in about 10 minutes on a 2-core CPU.

  deepwm run --config configs/notebook.py --workdir runs/notebook
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.stage1.steps = 600           # quickstart: 800
  c.stage2.steps = 400           # quickstart: 800
  c.attack.surrogate.steps = 1200
  c.attack.null.steps = 1000
  c.evaluate.surrogate.steps = 800
  c.evaluate.null.steps = 400
  # Per-source p-values only (24 null models would add ~3.5 minutes on 2 cores);
  # `--config.evaluate.model_null.models=24` adds them (docs/verdicts.md).
  c.evaluate.model_null.models = 0
  return c
