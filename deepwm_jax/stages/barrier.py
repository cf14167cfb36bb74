"""Stage 1: the barrier. Embedder H, extractor R and discriminator D trained together on the
owner's outputs B = M(A), so that B' = H(B, w) looks like B and R(B') draws the watermark w.

The step and its losses are deepwm_jax/train/stage1.py; this module picks the watermark, trains
the stage (resumable, with a divergence guard on PSNR) and watermarks images with the result.
"""
import dataclasses

import jax
import ml_collections
import numpy as np

from deepwm_jax import payload as payload_lib
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.data import watermarks
from deepwm_jax.stages import common, task
from deepwm_jax.train import stage1


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


def context_pairs(r: common.Runner, cfg, protect: pairs_lib.Pairs
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """With stage1.context = c: the protect split's crops cut c px larger on each side, and M
  run on them (the task model is fully convolutional): (A, M(A), M(A) with context), the
  first two the centres."""
  c = cfg.stage1.context
  big = ml_collections.ConfigDict(cfg.to_dict())
  big.data.image_size = cfg.data.image_size + 2 * c
  p = pairs_lib.make_pairs(big, "protect", cfg.data.n_protect, pairs_lib.PROTECT)
  m_ctx = task.outputs(r, [p], train=protect)[0]  # M as trained on the protect split
  centre = lambda x: np.ascontiguousarray(x[:, c:-c, c:-c])
  return centre(p.a), centre(m_ctx), m_ctx


def train(r: common.Runner, a: np.ndarray, b: np.ndarray, wm: Watermark,
          b_ctx: np.ndarray | None = None) -> Barrier:
  """Stage 'stage1' on the protect split's inputs `a` and the owner's outputs `b` = M(a);
  with stage1.context, `b_ctx` holds each b with that many px of its surroundings."""
  cfg = r.cfg
  state = stage1.init_state(cfg, jax.random.fold_in(r.key, 1), wm.w)
  step = stage1.make_step(cfg, wm.w, wm.blank)
  arrays = {"a": a, "b": b} if b_ctx is None else {"a": a, "b": b, "b_ctx": b_ctx}
  batches = common.sampler(arrays, cfg.stage1.batch, (cfg.seed, 21), r.mesh)
  state = r.train("stage1", step, state, batches, cfg.stage1.steps,
                  guard=common.stage1_guard(cfg))
  return Barrier(state["embedder"], {"params": state["extractor"]["params"]},
                 stage1.make_embed_fn(cfg, wm.w))
