"""Study: configs/keyed.py with a key that looks the same after any flip or quarter turn, and R
trained to read it so: imitators trained with flip or rotation augmentation are read.

  deepwm run --config configs/studies/keyed_symmetric.py --workdir runs/keyed_symmetric

2 px cells on a 32 px crop: a 16 x 16 grid whose cells fall into 36 orbits under flips and
quarter turns, one key bit each (a grid of 4 px cells would hold only 10). docs/robustness.md
has what it measured.
"""
from deepwm_jax.configs import quickstart


def get_config():
  c = quickstart.get_config()
  # configs/keyed.py's settings (its comments say why), then the symmetric key.
  c.protect.method = "keyed"
  c.stage1.fidelity_band.update(weight=1.0, psnr=(42.0, 44.0), ssim=(0.995, 0.998))
  c.stage1.weights.update(fidelity=0.025, fidelity_ssim=2.0)
  c.attack.surrogate.n_blocks = 3
  c.protect.keyed.update(cell=2, symmetry="dihedral")
  # The key is the same after any flip or quarter turn; R learns to read H's cells that way
  # too (without this, an imitator's turned copy of H's texture is not read: rot90 0%). It
  # costs fidelity: PSNR fell to 29 dB while H learned and ended at 35 dB (a band of weight
  # 5 from the start held 42 dB but H never learned to embed).
  c.stage1.distortions = "none, dihedral"
  return c
