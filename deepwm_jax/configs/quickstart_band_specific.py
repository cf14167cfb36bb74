"""The band kit with the model-specific strategy: the barrier H absorbed into the task model
M', whose own outputs carry the watermark; quickstart_band.py's changes plus the absorb stage.

  deepwm run --config configs/quickstart_band_specific.py --workdir runs/qs_band_spec

About 22 minutes on a 2-core CPU, of which the absorb stage and the M' surrogates take 3.
Attack it with `deepwm attack --kit runs/qs_band_spec/kit --config configs/zoo_strategies.py
--workdir runs/zoo_band_spec`.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # The band kit (quickstart_band.py, which explains each change):
  c.embedder.update(arch="cnn", ngf=32, depth=8)
  c.attack.extra_surrogate_archs = ("cnn",)
  c.stage1.fidelity_band.update(weight=1.0, psnr=(40.0, 42.0), ssim=(0.997, 0.9985))
  c.stage1.weights.update(fidelity=0.025, fidelity_ssim=2.0)
  c.stage2.weak_copies = 0.25
  c.stage2.steps = 1600
  c.evaluate.per_image_fpr = 0.001
  # Then M is fine-tuned into M' that emits H(M(A)) itself (train/absorb.py); the agnostic kit
  # and report come first.
  c.protect.strategy = "specific"
  c.protect.absorb.steps = 250   # M' settles by about step 125
  return c
