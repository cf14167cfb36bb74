"""Paper scale, X-ray bone suppression (Zhang et al., TPAMI 2022): grayscale 256 px, the
reference networks (H 41,823,873 / R 3,366,145 / D 1,554,433 parameters), for accelerators.

  deepwm run --config configs/paper_debone.py --workdir runs/debone \
      --config.data.source=folder:/data/chestxray

Faithful to the reference code: sigmoid embedder output, ReLU extractor output, fidelity weight
1 on the 1e4-scaled MSE, GAN weight 0.01, Adam 2e-4 (0.5, 0.999), batch 16, 200 epochs of 3000
images (37,500 steps). The builtin photos stand in when no X-ray folder is given; bone
suppression pairs need the user's own (A, B) data, so the default task here is a blur.
"""
from deepwm_jax.config import base_config, optimizer, surrogate


def get_config():
  c = base_config()
  c.data.update(image_size=256, channels=1, scale=1.0, task="blur", n_protect=3000,
                n_attack=3000, n_val=100)
  c.embedder.update(ngf=64, num_downs=0, norm="batch", output="sigmoid")
  c.extractor.update(channels=128, dilations=(2, 2, 2, 2, 4, 4, 4, 4, 1), output="relu")
  c.discriminator.widths = (64, 128, 256, 512)
  steps = 200 * 3000 // 16
  c.stage1.update(steps=steps, batch=16)
  c.stage1.weights.update(fidelity=1.0, gan=0.01, watermark=1.0, clean=1.0, consistency=1.0)
  c.stage1.optimizer = optimizer(2e-4, b1=0.5)
  c.stage1.discriminator_optimizer = optimizer(2e-4, b1=0.5)
  c.stage2.update(steps=steps // 4, batch=16)
  c.stage2.optimizer = optimizer(1e-4, b1=0.5)
  c.task = surrogate("unet", ngf=64, loss="l1", steps=steps, batch=16, lr=2e-4)
  c.task.source = "train"
  c.attack.surrogate = surrogate("unet", ngf=64, loss="l2", steps=steps, batch=16, lr=1e-4, seed=1)
  c.attack.null = surrogate("unet", ngf=64, loss="l2", steps=steps, batch=16, lr=1e-4, seed=2)
  c.evaluate.surrogate = surrogate("resnet", ngf=64, n_blocks=9, loss="l1", steps=steps,
                                   batch=16, lr=1e-4, seed=3)
  c.evaluate.null = surrogate("resnet", ngf=64, n_blocks=9, loss="l1", steps=steps, batch=16,
                              lr=1e-4, seed=4)
  c.log_every = 100
  c.ckpt_every = 2000
  return c
