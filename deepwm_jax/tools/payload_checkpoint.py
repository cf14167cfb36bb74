"""Bits read from a payload run's stage-1 checkpoint: does R decode the message yet?

  python -m deepwm_jax.tools.payload_checkpoint runs/qs_payload 250

Restores H and R from `WORKDIR/checkpoints/stage1/STEP`, embeds 64 held-out validation targets
(H on clean B: the task model is not restored) and prints, for the watermarked and the clean
images, the raw bit accuracy, the confident-bit rate, whether the message decodes from 16
images, and how many single images decode it. For a look at a run before it finishes.
"""
import json
import sys

import jax
import ml_collections
import numpy as np

from deepwm_jax import payload
from deepwm_jax.data import pairs as pairs_lib
from deepwm_jax.stages import common
from deepwm_jax.train import loop, stage1


def measure(workdir: str, step: int, n: int = 64) -> dict:
  cfg = ml_collections.ConfigDict(json.load(open(f"{workdir}/config.json")))
  pay = payload.from_config(cfg, payload.owner_of(cfg))
  w = pay.render(cfg.data.channels)
  like = stage1.init_state(cfg, jax.random.PRNGKey(0), w)
  st = loop.restore(loop.checkpoint_manager(f"{workdir}/checkpoints/stage1"), step, like)
  val = pairs_lib.make_pairs(cfg, "val", n, 3)
  emb, ext = st["embedder"], {"params": st["extractor"]["params"]}
  wm = common.predict(stage1.make_embed_fn(cfg, w), emb, val.b)
  extract = stage1.make_extract_fn(cfg)
  out = {"stage1_step": step, "psnr_Hb_vs_b": float(np.mean(
      10 * np.log10(1 / np.mean((wm - val.b) ** 2, axis=(1, 2, 3)))))}
  for name, x in {"watermarked H(B)": wm, "clean A": val.a, "clean B": val.b}.items():
    soft = pay.soft_bits(common.predict(extract, ext, x))
    pi = payload.per_image(pay, soft)
    d16 = payload.decode(pay, soft[:16])
    out[name] = {"bit_accuracy_mean": float(pi["bit_accuracy"].mean()),
                 "bit_accuracy_min": float(pi["bit_accuracy"].min()),
                 "confident_mean": float(pi["confident"].mean() / pay.n_coded),
                 "decoded_16": d16["decoded"], "matches_16": d16["matches"],
                 "single_image_matches": int(sum(payload.decode(pay, soft[i:i + 1])["matches"]
                                                 for i in range(len(soft))))}
  return out


if __name__ == "__main__":
  print(json.dumps(measure(sys.argv[1], int(sys.argv[2])), indent=1))
