"""The band kit: the quickstart with a CNN embedder, stage 2 against a U-Net and a CNN
surrogate, and the watermark's strength held in a PSNR/SSIM band; read in every plain zoo member.

  deepwm run --config configs/quickstart_band.py --workdir runs/qs_band

About 21 minutes on a 2-core CPU. Attack it with
`deepwm attack --kit runs/qs_band/kit --config configs/zoo_plain.py --workdir runs/zoo_band`.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # H: 8 plain 3x3 convs that see neither the watermark nor the position, so the residual
  # follows the local content and imitators of every convolutional family copy it.
  c.embedder.update(arch="cnn", ngf=32, depth=8)
  # Stage 2 also trains R on a plain-CNN surrogate, whose weaker copy teaches R to read weak
  # copies. Add only families whose surrogate copies the watermark (not ResNets).
  c.attack.extra_surrogate_archs = ("cnn",)
  # Each image's PSNR(B', B) held in [40, 42] dB and its SSIM in [0.997, 0.9985], a cost of 1
  # per dB outside, none inside: the watermark's strength no longer depends on the seed.
  c.stage1.fidelity_band.update(weight=1.0, psnr=(40.0, 42.0), ssim=(0.997, 0.9985))
  # The quickstart's fidelity weights at a quarter, a small pull that does not fight the band.
  c.stage1.weights.update(fidelity=0.025, fidelity_ssim=2.0)
  # Weak copies: R also learns to read w in null outputs plus 0.25-1x the watermark residual,
  # like an imitator that copies part of it.
  c.stage2.weak_copies = 0.25
  c.stage2.steps = 1600         # quickstart: 800
  c.evaluate.per_image_fpr = 0.001  # weak copies need it: one stray negative no longer decides
  return c
