"""Study: the band kit (configs/quickstart_band.py) with its embedder trained on crops seen
with 8 px of their surroundings, as it sees a large image.

  deepwm run --config configs/studies/quickstart_context.py --workdir runs/qs_context

The band kit's plain-CNN H sees zero padding within its 8 px receptive field of every crop's
edge and hides much of its watermark there; at full size there is no such edge. With
stage1.context=8, H works on 48 px crops of which the centre 32 px are kept, so it never sees
an edge that a large image does not have. docs/results/log.md has what it measured.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # quickstart_band.py's settings (its comments say why), then the context.
  c.embedder.update(arch="cnn", ngf=32, depth=8)
  c.attack.extra_surrogate_archs = ("cnn",)
  c.stage1.fidelity_band.update(weight=1.0, psnr=(40.0, 42.0), ssim=(0.997, 0.9985))
  c.stage1.weights.update(fidelity=0.025, fidelity_ssim=2.0)
  c.stage2.weak_copies = 0.25
  c.stage2.steps = 1600
  c.evaluate.per_image_fpr = 0.001
  c.stage1.context = 8
  return c
