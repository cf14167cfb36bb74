"""A tiny config for tests and smoke runs: every stage of the deep method runs, on a few
32 px images with 4-wide networks, in seconds; its numbers mean nothing.

  deepwm run --config configs/tiny.py --workdir runs/tiny
"""
from deepwm_jax.config import base_config


def get_config():
  c = base_config()
  c.data.image_size = 32
  c.data.n_protect = c.data.n_attack = 64
  c.data.n_val = 8
  c.embedder.ngf = 4
  c.extractor.channels = 4
  c.extractor.dilations = (2, 1)
  c.discriminator.widths = (4, 8)
  for spec in (c.task, c.attack.surrogate, c.attack.null, c.evaluate.surrogate, c.evaluate.null):
    spec.ngf, spec.steps, spec.batch, spec.n_blocks = 4, 3, 4, 1
  c.attack.extra_surrogate_archs = ("resnet",)  # exercises stage 2 against several surrogates
  c.stage1.steps = c.stage2.steps = 4
  c.evaluate.model_null.models = 0  # tests build their own tiny model nulls where they need one
  c.stage1.batch = c.stage2.batch = 4
  c.log_every = 2
  c.ckpt_every = 2
  return c
