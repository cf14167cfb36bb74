"""Paper scale, deraining (Zhang et al., TPAMI 2022): paper_debone.py's networks, losses and
optimizers on RGB 256 px with the rain degradation and 6000 training images, for accelerators.

  deepwm run --config configs/paper_derain.py --workdir runs/derain \
      --config.data.source=folder:/data/voc_jpegs [--config.compute_dtype=bfloat16]

The paper used 6000 / 6000 / 100 PASCAL VOC images with synthetic rain. Hardware and devices:
see paper_debone.py.
"""
from deepwm_jax.configs import paper_debone

IMAGES = 6000


def get_config():
  c = paper_debone.get_config()
  c.data.update(channels=3, task="rain", n_protect=IMAGES, n_attack=IMAGES, n_val=100)
  # 200 epochs of 6000 images at batch 16: 75,000 steps, the plateau measured per 375 steps.
  paper_debone.set_scale(c, IMAGES)
  return c
