"""Study: the band kit (configs/quickstart_band.py) with a framed embedder, whose residual
cannot hide in the frame of the 32 px crops.

  deepwm run --config configs/studies/quickstart_frame.py --workdir runs/qs_frame

H leaves the outer 4 px of every crop unchanged (embedder.frame), so the watermark lies in the
content, where blended windows of a large image keep it. docs/results/log.md has what it
measured: no watermark in the frame any more, but read in only 13% of full-size windows.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # quickstart_band.py's settings (its comments say why), then the frame.
  c.embedder.update(arch="cnn", ngf=32, depth=8, frame=4)
  c.attack.extra_surrogate_archs = ("cnn",)
  c.stage1.fidelity_band.update(weight=1.0, psnr=(40.0, 42.0), ssim=(0.997, 0.9985))
  c.stage1.weights.update(fidelity=0.025, fidelity_ssim=2.0)
  c.stage2.weak_copies = 0.25
  c.stage2.steps = 1600
  c.evaluate.per_image_fpr = 0.001
  return c
