"""The shipped configs. Run one with `--config NAME` or `--config configs/NAME.py`.

Each file's get_config() builds on its package's base_config() or loads at most one parent
(`from deepwm_jax.configs import quickstart`), then writes out every change it makes.
Studies (configs kept to reproduce a measurement) are in studies/.

  quickstart: protect a small deraining U-Net on the builtin photos, 2-core CPU, ~20 minutes
  quickstart_band: the strongest kit: CNN H, stage 2 on two families, a PSNR/SSIM band
  quickstart_band_specific: the band kit with H absorbed into the task model M'
  quickstart_payload: the quickstart with a 64-bit owner message instead of the logo
  quickstart_specific: the quickstart with H absorbed into the task model M'
  quickstart_traditional: the quickstart with a DCT spread-spectrum watermark instead of H/R
  protect_classical: the quickstart protecting a classical algorithm (scikit-image TV denoiser)
  protect_dataset: the quickstart protecting a data set: its targets are watermarked
  notebook: the quickstart with fewer steps, the notebook's default (~10 minutes)
  tiny: every stage in seconds, for tests and smoke runs
  paper_debone: paper scale, grayscale 256 px bone suppression, reference networks (accelerators)
  paper_derain: paper scale, RGB 256 px deraining (accelerators)
  zoo_quick: the quick surrogate zoo (18 attackers, removal attacks), 2-core CPU
  zoo_plain: the quick zoo's plain members and nulls only, for comparing kits
  zoo_strategies: a subset of the quick zoo for comparing protection strategies
  zoo_paper: a paper-scale zoo of 86 attackers (80 GB GPUs)
  zoo_tiny: a zoo in seconds, for tests and smoke runs
  classify_digits: classifier fingerprinting on the scikit-learn digits, 2-core CPU
  classify_fashion_mnist: classifier fingerprinting on Fashion-MNIST from prepared tfds
  classify_cifar10: classifier fingerprinting on CIFAR-10 from prepared tfds
"""
