"""Study: configs/studies/keyed_robust.py's distortion layer on 64 px crops with 8 px key cells,
whose key survives JPEG, R asked only for each cell's sign, the fidelity held at 40 dB.

  deepwm run --config configs/studies/keyed_robust_64.py --workdir runs/keyed_robust_64

Still 64 key bits (8 x 8 cells of 8 px). A cell as large as a JPEG block sits in the block's
low frequencies, which the codec keeps. docs/robustness.md has what it measured: 40 dB on
crops and at full size; JPEG 75, resizes to a quarter, blur 2 and noise 0.05 survived on one
photo alone, JPEG 50 in sets. Stage 1 takes about four times as long as at 32 px.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # configs/keyed.py's settings (its comments say why), then keyed_robust.py's layer.
  c.protect.method = "keyed"
  c.stage1.weights.update(fidelity=0.025, fidelity_ssim=2.0)
  c.attack.surrogate.n_blocks = 3
  c.stage1.distortions = ("none, jpeg:50:95, rescale:0.5:0.9, blur:0.3:1.2, noise:0:0.04, "
                          "rescale:0.6:0.9+jpeg:60:90, shift:0:1")
  c.embedder.residual_scale = 0.02
  c.data.image_size = 64
  c.protect.keyed.cell = 8
  # The MSE to the key's black-and-white drawing asks R for full amplitude, and H's residual
  # grows to give it: with the band at weight 5 the kit sat at 35 dB. A hinge of 0.05 on each
  # cell's reading asks only for the sign the test counts, and a band of weight 50 then
  # holds 40-42 dB.
  c.protect.keyed.update(reading_loss="hinge", margin=0.05)
  c.stage1.fidelity_band.update(weight=50.0, psnr=(40.0, 42.0), ssim=(0.99, 0.995))
  # Imitators at 64 px take four times as long: two surrogates and one null model.
  c.protect.keyed.update(surrogate_archs=("unet", "resnet"), null_archs=("cnn",))
  return c
