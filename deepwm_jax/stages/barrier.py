"""Stage 1: the barrier. Embedder H, extractor R and discriminator D trained together on the
owner's outputs B = M(A), so that B' = H(B, w) looks like B and R(B') draws the watermark w.

The step and its losses are deepwm_jax/train/stage1.py; this module picks the watermark, trains
the stage (resumable, with a divergence guard on PSNR) and watermarks images with the result.
"""
import dataclasses

import jax
import numpy as np

from deepwm_jax import payload as payload_lib
from deepwm_jax.data import watermarks
from deepwm_jax.stages import common
from deepwm_jax.train import loop, stage1


@dataclasses.dataclass
class Watermark:
  """What R must draw (`w`) and what it draws for innocent images (`blank`); with a bit
  payload (watermark.spec='payload') `w` renders the owner's message and `payload` decodes it."""
  w: np.ndarray
  blank: np.ndarray
  owner: str
  payload: "payload_lib.Payload | None"


def watermark(cfg) -> Watermark:
  d = cfg.data
  owner = payload_lib.owner_of(cfg)
  pay = payload_lib.from_config(cfg, owner)  # None unless watermark.spec == 'payload'
  w = (pay.render(d.channels) if pay is not None
       else watermarks.watermark_image(cfg.watermark.spec, d.image_size, d.channels))
  return Watermark(w, watermarks.blank_image(d.image_size, d.channels), owner, pay)


@dataclasses.dataclass
class Barrier:
  """The trained barrier: H's and R's variables and the jitted B -> B'."""
  embedder: dict
  extractor: dict
  embed_fn: object

  def embed(self, b: np.ndarray) -> np.ndarray:
    return common.predict(self.embed_fn, self.embedder, b)


def train(r: common.Runner, a: np.ndarray, b: np.ndarray, wm: Watermark) -> Barrier:
  """Stage 'stage1' on the protect split's inputs `a` and the owner's outputs `b` = M(a)."""
  cfg = r.cfg
  state = stage1.init_state(cfg, jax.random.fold_in(r.key, 1), wm.w)
  step = stage1.make_step(cfg, wm.w, wm.blank)
  batches = common.sampler({"a": a, "b": b}, cfg.stage1.batch, (cfg.seed, 21), r.mesh)
  state = r.train("stage1", step, state, batches, cfg.stage1.steps,
                  guard=loop.Guard(metric="psnr", drop=10.0, warmup=cfg.stage1.steps // 10))
  return Barrier(state["embedder"], {"params": state["extractor"]["params"]},
                 stage1.make_embed_fn(cfg, wm.w))
