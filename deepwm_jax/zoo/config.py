"""The zoo's config: `base_config()` documents every option; configs/zoo_*.py change it.

A zoo config is a separate file from the protector's config: the attacker's choices
(architectures, losses, data, augmentation, removal attacks) are not the owner's.
"""
import ml_collections

from deepwm_jax.errors import DeepwmError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.conv_impl = "auto"            # see deepwm_jax.models.layers ('xla' or 'auto')
  # 'bfloat16' on accelerators: the surrogates' and discriminators' convolutions in bfloat16;
  # parameters, Adam, losses and outputs stay float32 (docs/zoo.md: not yet compared with
  # float32 on a GPU, so check a few members both ways before a sweep relies on it).
  c.compute_dtype = "float32"
  # Where the protector's `deepwm run` wrote checkpoints/task (the task model M): '' means the
  # folder that holds the kit. Without a finished M there, M is retrained from the kit's config.
  c.protector_workdir = ""
  # What the protected API returns, i.e. the attacker's B' and the held-out protected outputs:
  #   'auto'      'specific' when the kit's run used protect.strategy='specific', else 'kit'
  #   'kit'       the kit's embedding of M(A): H(M(A)) for a deep kit, the spread-spectrum
  #               watermark of M(A) for a traditional kit (protect.method='traditional')
  #   'specific'  M'(A): the absorbed model in the protector's run folder (checkpoints/absorb)
  c.protected = "auto"
  c.data = dict(
      seed_offset=41,             # the attacker's crops of the 'attack' split (deepwm run uses 2)
      n_eval=64,                  # held-out inputs ('val' split) every member is judged on
      eval_seed_offset=103,
      # What the attacker queries the protected API with: 'attack' (crops of the attack split's
      # photos, degraded as the task degrades) or 'deadleaves' (synthetic dead-leaves images,
      # data/synthetic.py, degraded alike: a thief with no data of its own).
      queries="attack")
  # Architectures by name: `arch` is the family (unet, resnet, cnn, edsr; zoo/archs.py).
  c.archs = dict(
      unet=dict(arch="unet", ngf=16, num_downs=0),
      resnet6=dict(arch="resnet", ngf=16, n_blocks=6))
  # One member's settings; every key is a grid axis.
  #   loss: l1 | l2 | ssim | perceptual, optionally +lsgan or +gan (e.g. 'l1+lsgan')
  #   augmentation: deepwm_jax.zoo.augment spec ('none', 'flip', 'rot90', 'rotate:15', 'crop:0.7',
  #     'rescale:0.7', joined by '+'), the same transform on A and B'
  #   n_attack: (A, B') pairs the attacker has; lr: Adam lr (cosine decay to lr/10)
  #   null: train on clean M(A) (must never be detected)
  #   overwrite: train on B' re-watermarked by the attacker's own embedder
  #   truth: with null, train on the data's clean targets B instead of M(A) (for a degradation
  #     task the photos themselves): an innocent model that learned from other data
  c.defaults = dict(arch="unet", loss="l2", augmentation="none", n_attack=1024, lr=1e-3,
                    steps=1500, batch=16, seed=0, null=False, overwrite=False, truth=False)
  # The zoo: the union of these Cartesian products (each axis not named is at its default).
  c.sweeps = [dict(arch=("unet", "resnet6")), dict(null=(True,))]
  # Post-processing removal attacks (deepwm_jax.zoo.removal specs) on the held-out outputs of the
  # named members and, with on_nulls, of every null member; no training needed.
  c.removal = dict(attacks=("jpeg:50", "blur:1.0"), members=("unet-l2",), on_nulls=True)
  # Adversarial loss: PatchGAN widths, generator weight (pix2pix's 1:100), its Adam lr.
  c.gan = dict(widths=(16, 32, 64), weight=0.01, lr=2e-4)
  # Perceptual loss: path to a .npz of torchvision VGG16 `features` weights (docs/zoo.md).
  # Empty: perceptual members are skipped and listed as skipped in the report.
  c.perceptual = dict(weights="")
  # The overwriting attack's own barrier (stage 1 of the method, the attacker's watermark).
  c.overwrite = dict(watermark="text:ATK", steps=300, embedder_ngf=8, extractor_channels=8)
  c.mesh = dict(devices=0)        # devices on the member axis; 0 = all
  # At most this many members per device in one vmapped step (0: a whole group at once). A
  # step's memory grows with its members; a larger group is split into near-equal parts
  # trained one after another (each member learns the same either way, up to float rounding).
  # `deepwm attack --plan-steps 0` prints each group's compiled memory on this machine and the
  # largest value that fits.
  c.max_members_per_device = 0
  # Benchmark mode (`deepwm attack --benchmark`): vmapped vs one-after-another, one arch.
  c.bench = dict(arch="unet", members=4, steps=10, batch=16, image_size=32, channels=3)
  c.log_every = 50
  c.ckpt_every = 500
  return c


def load(path: str, overrides=()) -> ml_collections.ConfigDict:
  from deepwm_jax import config as config_lib
  cfg = config_lib.load(path)
  if "sweeps" not in cfg or "archs" not in cfg:
    raise DeepwmError(f"config '{path}' is not a zoo config (no archs/sweeps); use "
                      f"configs/zoo_quick.py or a file built on deepwm_jax.zoo.config")
  config_lib.apply_overrides(cfg, list(overrides))
  return cfg
