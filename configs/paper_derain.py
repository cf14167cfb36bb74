"""Paper scale, deraining (Zhang et al., TPAMI 2022): RGB 256 px, reference widths, for
accelerators. The paper used 6000 / 6000 / 100 PASCAL VOC images with synthetic rain.

  deepwm run --config configs/paper_derain.py --workdir runs/derain \
      --config.data.source=folder:/data/voc_jpegs
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "paper_debone", os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_debone.py"))
_debone = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_debone)


def get_config():
  c = _debone.get_config()
  c.data.update(channels=3, task="rain", n_protect=6000, n_attack=6000, n_val=100)
  steps = 200 * 6000 // 16
  c.stage1.steps, c.stage2.steps = steps, steps // 4
  for spec in (c.task, c.attack.surrogate, c.attack.null, c.evaluate.surrogate, c.evaluate.null):
    spec.steps = steps
  return c
