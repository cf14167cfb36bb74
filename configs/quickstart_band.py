"""The zoo's kit with the watermark's strength held in a fidelity band: every plain zoo member.

  deepwm run --config configs/quickstart_band.py --workdir runs/qs_band
  deepwm attack --kit runs/qs_band/kit --config configs/zoo_plain.py --workdir runs/zoo_band

configs/quickstart_cnn_s2.py with
- `stage1.fidelity_band`: each image's PSNR(B', B) held in [40, 42] dB and its SSIM in
  [0.997, 0.9985] (a cost of 1 per dB outside, none inside). With fixed fidelity weights
  the seed decided how strong the watermark came out (40.9 and 45.7 dB at the same weights),
  and with it whether the weaker imitators (ResNet-6, an SSIM-loss U-Net) copied enough of
  it to be read; the band fixes the strength and leaves the fixed weights a small pull;
- fidelity weights at a quarter (MSE 0.025, SSIM 2), so that they do not fight the band;
- weak copies (`stage2.weak_copies=0.25`) and a stage 2 twice as long (1600 steps);
- `evaluate.per_image_fpr=0.001`, which weak copies need (README, docs/verdicts.md).
Measured per seed in docs/zoo.md ("A fidelity band"); about 21 minutes on the 2-core CPU.
"""
import os

from deepwm_jax import config as config_lib


def get_config():
  c = config_lib.load(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "quickstart_cnn_s2.py"))
  c.stage1.weights.update(fidelity=0.025, fidelity_ssim=2.0)
  c.stage1.fidelity_band.weight = 1.0
  c.stage2.update(weak_copies=0.25, steps=1600)
  c.evaluate.per_image_fpr = 0.001
  return c
