"""Paper scale, deraining (Zhang et al., TPAMI 2022): RGB 256 px, the reference widths, for
accelerators. The paper used 6000 / 6000 / 100 PASCAL VOC images with synthetic rain.

  deepwm run --config configs/paper_derain.py --workdir runs/derain \
      --config.data.source=folder:/data/voc_jpegs [--config.compute_dtype=bfloat16]

Same networks, losses and optimizers as configs/paper_debone.py (read its docstring for the
schedules and the device settings), with RGB images, the rain degradation, and 200 epochs of
6000 images at batch 16 (75,000 steps; the learning-rate plateau is measured per epoch of 375
steps).
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "paper_debone", os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_debone.py"))
_debone = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_debone)

IMAGES = 6000


def get_config():
  c = _debone.get_config()
  c.data.update(channels=3, task="rain", n_protect=IMAGES, n_attack=IMAGES, n_val=100)
  _debone.set_scale(c, IMAGES)
  return c
