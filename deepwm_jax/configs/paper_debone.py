"""Paper scale, X-ray bone suppression (Zhang et al., TPAMI 2022): grayscale 256 px, the reference
networks (H 41,823,873 / R 3,366,145 / D 1,554,433 parameters) and schedules, for accelerators.

  deepwm run --config configs/paper_debone.py --workdir runs/debone \
      --config.data.source=folder:/data/chestxray [--config.compute_dtype=bfloat16]

Hardware: GPUs/TPUs. The global batch of 16 is split over all devices and must divide by their
number; for more devices raise the batches (the paper's learning rates were tuned for 16).
Without an X-ray folder the builtin photos stand in, with a blur as the task.
"""
from deepwm_jax.config import base_config, optimizer, surrogate

EPOCHS, IMAGES, BATCH = 200, 3000, 16


def plateau(lr, steps_per_epoch, b1=0.5):
  """Adam at `lr`, x0.2 when the epoch-averaged loss stalls for 10 epochs (the reference's
  ReduceLROnPlateau; the papers give no patience, 10 is PyTorch's default)."""
  opt = optimizer(lr, "plateau", b1=b1)
  opt.update(factor=0.2, patience=10, accumulation=steps_per_epoch)
  return opt


def get_config():
  # As the reference code: sigmoid embedder output, ReLU extractor output, fidelity weight 1 on
  # the 1e4-scaled MSE, GAN weight 0.01, Adam 2e-4 (0.5, 0.999) with x0.2 on a plateau.
  c = base_config()
  c.data.update(image_size=256, channels=1, scale=1.0, task="blur", n_protect=IMAGES,
                n_attack=IMAGES, n_val=100)
  c.embedder.update(ngf=64, num_downs=0, norm="batch", output="sigmoid")
  c.extractor.update(channels=128, dilations=(2, 2, 2, 2, 4, 4, 4, 4, 1), output="relu")
  c.discriminator.widths = (64, 128, 256, 512)
  c.compute_dtype = "float32"  # 'bfloat16': convolutions in bf16, faster, about 1e-2 noisier
  c.mesh.update(data=0, fsdp=False)  # the batch split over every device; H fits one device
  set_scale(c, IMAGES)
  c.log_every = 100
  c.ckpt_every = 2000
  return c


def set_scale(c, images: int):
  """Steps and schedules for `images` training images per split, 200 epochs of batch 16."""
  epoch = images // BATCH
  steps = EPOCHS * images // BATCH
  c.stage1.update(steps=steps, batch=BATCH)
  c.stage1.weights.update(fidelity=1.0, gan=0.01, watermark=1.0, clean=1.0, consistency=1.0)
  c.stage1.optimizer = plateau(2e-4, epoch)
  c.stage1.discriminator_optimizer = plateau(2e-4, epoch)
  c.stage2.update(steps=steps // 4, batch=BATCH)  # the papers give no length: a quarter
  c.stage2.optimizer = optimizer(1e-4, b1=0.5)      # R fine-tuned with Adam 1e-4
  c.task = surrogate("unet", ngf=64, loss="l1", steps=steps, batch=BATCH, lr=2e-4)
  c.task.source = "train"
  # Surrogates and nulls: Adam 1e-4, beta1 0.5, as the reference.
  c.attack.surrogate = surrogate("unet", ngf=64, loss="l2", steps=steps, batch=BATCH, lr=1e-4,
                                 seed=1)
  c.attack.null = surrogate("unet", ngf=64, loss="l2", steps=steps, batch=BATCH, lr=1e-4, seed=2)
  c.evaluate.surrogate = surrogate("resnet", ngf=64, n_blocks=9, loss="l1", steps=steps,
                                   batch=BATCH, lr=1e-4, seed=3)
  c.evaluate.null = surrogate("resnet", ngf=64, n_blocks=9, loss="l1", steps=steps, batch=BATCH,
                              lr=1e-4, seed=4)
