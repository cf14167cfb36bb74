"""Losses of the method: pixel losses, LSGAN, the consistency term and the fidelity band."""
import jax
import jax.numpy as jnp

from deepwm_jax import metrics


def mse(x, y):
  return jnp.mean(jnp.square(x - y))


def l1(x, y):
  return jnp.mean(jnp.abs(x - y))


def lsgan_generator(logits_real_like):
  """The generator wants D to call its output real (1)."""
  return mse(logits_real_like, 1.0)


def lsgan_discriminator(logits_real, logits_fake):
  return 0.5 * (mse(logits_real, 1.0) + mse(logits_fake, 0.0))


def consistency(r_BxHxWxC):
  """Extractions from the two halves of a batch should agree (needs an even batch)."""
  half = r_BxHxWxC.shape[0] // 2
  return mse(r_BxHxWxC[:half], r_BxHxWxC[half:2 * half])


def pixel_loss(kind: str, x, y):
  if kind == "l2":
    return mse(x, y)
  if kind == "l1":
    return l1(x, y)
  if kind == "ssim":
    return 1.0 - jnp.mean(ssim_per_image(x, y))
  raise ValueError(f"unknown pixel loss {kind!r}; use l1, l2 or ssim")


def ssim_per_image(x, y):
  """SSIM of each image of x (clipped to [0, 1], as an output may overshoot) against y."""
  return metrics.ssim(jnp.clip(x, 0, 1), y)


def band(value_dB, lo, hi):
  """How far (dB) a value lies outside [lo, hi]; 0 inside, so the band costs nothing there."""
  return jax.nn.relu(lo - value_dB) + jax.nn.relu(value_dB - hi)


def ssim_dB(ssim):
  """-10 log10(1 - SSIM): SSIM on a dB scale like PSNR (0.998 -> 27.0, 0.9997 -> 35.2)."""
  return -10.0 * jnp.log10(jnp.maximum(1.0 - ssim, 1e-10))
