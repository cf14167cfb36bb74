"""Configs: the single source of hyper-parameters.

A config file is Python with `get_config()` returning an `ml_collections.ConfigDict`, usually
`base_config()` with changes. The CLI applies `--config.a.b=value` overrides and `validate`s
the result so a bad value fails before any work starts.
"""
import ast
import importlib.util
import math
import os

import ml_collections

from deepwm_jax.errors import DeepwmError


def optimizer(lr, schedule="constant", lr_end=None, b1=0.5, b2=0.999, agc=0.0):
  return dict(lr=lr, schedule=schedule, lr_end=lr_end if lr_end is not None else lr * 0.1,
              b1=b1, b2=b2, agc=agc)


def surrogate(arch="unet", ngf=16, loss="l2", steps=400, batch=16, lr=1e-3, seed=0, **extra):
  """An image-to-image network trained by imitation (a surrogate, or the task model)."""
  spec = dict(arch=arch, ngf=ngf, num_downs=0, n_blocks=6, depth=8, norm="batch",
              output="residual", residual_scale=0.5, loss=loss, steps=steps, batch=batch,
              seed=seed, optimizer=optimizer(lr, "cosine", lr * 0.1, b1=0.5))
  spec.update(extra)
  return spec


def stage2_surrogates(cfg) -> dict:
  """The surrogates stage 2 trains R against, by checkpoint name: 'surrogate' (attack.surrogate),
  then 'surrogate_<arch>' for each of attack.extra_surrogate_archs (the same spec with that arch
  and a seed of its own, fixed per arch so that the list's order changes nothing)."""
  specs = {"surrogate": cfg.attack.surrogate}
  for arch in cfg.attack.get("extra_surrogate_archs", ()):
    spec = ml_collections.ConfigDict(cfg.attack.surrogate.to_dict())
    spec.arch, spec.seed = arch, spec.seed + 100 * (1 + ("unet", "resnet", "cnn").index(arch))
    specs[f"surrogate_{arch}"] = spec
  return specs


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.conv_impl = "xla"            # 'xla' everywhere; 'auto' picks faster CPU paths when present
  c.compute_dtype = "float32"    # or 'bfloat16' on accelerators

  c.data = dict(
      source="builtin",          # 'builtin' (scikit-image photos), 'folder:PATH',
                                 # 'pairs:INPUTS_DIR:OUTPUTS_DIR' (deepwm_jax/owner.py) or
                                 # 'tfds:NAME[/CONFIG][:SPLIT]' (prepared tfds, docs/data.md)
      image_size=64, channels=3,
      scale=0.25,                # downscale photos first so small crops hold structure
      task="rain", strength=1.0, # degradation that makes the task input A from B
      n_protect=2048, n_attack=2048, n_val=64,
      tfds_dir="",               # tfds data_dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
      tfds_max_images=512)       # tfds photos read per split, evenly spread (0 = all)
  # spec: 'logo', 'text:ABC', an image file, or 'payload': an owner message drawn as bits
  # (deepwm_jax/payload.py documents message formats, the layout and the error correction).
  c.watermark = dict(spec="logo", message="owner", bits=64, ecc_bytes=8, key=0, owner="")

  # The target model M: trained on (A, B) here unless `source` names a callable.
  c.task = surrogate("unet", ngf=16, loss="l1", steps=300, batch=16, lr=1e-3)
  # 'train', 'identity', 'dataset' (the outputs are the data set's targets B: protecting a
  # data set, docs/strategies.md), 'python:module:function' or 'callable:NAME' (a callable
  # given to deepwm_jax.protect)
  c.task.source = "train"

  # arch 'unet' (the reference) or 'cnn' (depth 3x3 convs, no condition: models.embedder)
  # frame: H leaves the outer `frame` px of each crop unchanged, so the watermark cannot hide
  # in the crop's frame and reads the same in blended windows of a large image (windows.py);
  # at most half the windows' overlap (image_size / 8).
  # texture_mask: > 0 scales H's residual by the local contrast of B (the std of its luminance
  # in a 2 px Gaussian window) over this value, capped at 1 (models.texture_mask): smooth areas
  # of large photos, where SSIM counts any change, are left nearly alone. 0: off.
  # start (a U-Net H with a watermark to embed): > 0 adds the watermark itself, (2 w - 1) times
  # a learnt gain that starts here (0.01: about 40 dB), to H's residual, so that R can read it
  # from the first step and H shapes it from there. 0: H starts from B' = B.
  # psnr_floor: > 0 scales each image's (each window's) residual down to this PSNR in dB where
  # it is stronger (models.floor_gain), a hard budget H trains within. 0: off.
  c.embedder = dict(arch="unet", ngf=16, num_downs=0, depth=8, norm="batch", output="residual",
                    residual_scale=0.1, frame=0, texture_mask=0.0, start=0.0, psnr_floor=0.0)
  c.extractor = dict(channels=16, dilations=(2, 2, 4, 1), output="linear")
  c.discriminator = dict(widths=(16, 32, 64, 128))

  c.stage1 = dict(
      steps=1500, batch=16, loss_scale=1e4,
      # fidelity on the s-scaled MSE; fidelity_l1 and fidelity_ssim (on 1 - SSIM) unscaled.
      weights=dict(fidelity=50.0, fidelity_l1=0.0, fidelity_ssim=0.0, gan=0.01, watermark=1.0,
                   clean=1.0, consistency=1.0, discriminator=1.0),
      # A fidelity band (weight 0 = off): weight * (dB below lo + dB above hi), per image,
      # on PSNR(B', B) and on SSIM(B', B) as -10 log10(1 - SSIM). Fixed weights leave the
      # watermark's strength to the seed (40.9 vs 45.7 dB, docs/zoo.md); the band holds it
      # where every plain zoo imitator copied it on the CPU, and costs nothing inside it.
      # ramp (start, end): the band's weight is 0 until the fraction `start` of the steps, then
      # grows linearly to `weight` at `end`; (0, 0): full from the first step. H that must
      # learn a hard watermark (fine key cells read through turns) first needs room to embed.
      fidelity_band=dict(weight=0.0, psnr=(40.0, 42.0), ssim=(0.997, 0.9985), ramp=(0.0, 0.0)),
      # context > 0 (a plain-CNN embedder only): H sees this many px of real content around
      # each training crop and only the crop is kept, as H sees a large image at full size;
      # crops without context (stage 2, the report) are mirrored out by as much.
      context=0,
      # The distortion layer (deepwm_jax/distortions.py): R reads B', A and B through
      # distortions drawn per example, e.g. 'none, jpeg:50:95, blur:0.3:1, noise:0:0.03';
      # '' = off. H then learns a watermark that survives them.
      distortions="",
      # The share of distorted examples: 0 until this fraction of the steps, then growing
      # linearly to 1 at the second: H learns a watermark first, then to make it survive.
      distortion_ramp=(0.25, 0.75),
      # Keyed kits with the hinge: the mean reading loss of the layer's hardest entry in the
      # batch, added with this weight, so that no distortion is given up for fidelity.
      hardest_distortion=0.0,
      optimizer=optimizer(1e-3, "cosine", 1e-4, agc=0.01),
      discriminator_optimizer=optimizer(2e-4))

  c.attack = dict(
      # The surrogate the extractor is fine-tuned against in stage 2.
      surrogate=surrogate("unet", ngf=16, loss="l2", steps=400, seed=1),
      # The protector's own null models (trained on clean pairs), one per architecture in
      # `null_archs`: stage-2 and calibration negatives, so that the extractor learns the
      # watermark rather than the look of one architecture's outputs.
      null=surrogate("unet", ngf=16, loss="l2", n_blocks=3, steps=400, seed=2),
      null_archs=("unet", "resnet"),
      # More architectures stage 2 trains R against, each the `surrogate` spec with that arch
      # (and its own seed): R then reads the watermark through several ways of imitating it.
      # () = the one surrogate above. Only the deep method has a stage 2 (traditional: unused).
      extra_surrogate_archs=())

  c.stage2 = dict(
      steps=400, batch=8, loss_scale=1e4,
      weights=dict(surrogate=1.0, watermark=1.0, clean=1.0, consistency=1.0),
      optimizer=optimizer(1e-4, "cosine", 1e-5),
      # Weak copies (0 = off): R is also trained to read w in the protector's null models'
      # outputs plus `alpha` times the watermark residual H(M(A)) - M(A), alpha ~ U[this, 1]
      # per image: an imitator that copies only part of the watermark, with a real imitator's
      # error around it (stages/harden.py).
      weak_copies=0.0,
      # The distortion layer on everything R reads in stage 2 (the grammar of
      # stage1.distortions): surrogates' outputs distorted as served images are.
      distortions="")

  c.evaluate = dict(
      # Trained after stage 2, never seen by the extractor.
      surrogate=surrogate("resnet", ngf=16, loss="l1", n_blocks=3, steps=400, seed=3),
      null=surrogate("resnet", ngf=16, loss="l1", n_blocks=3, steps=400, seed=4),
      nc_threshold=0.95,         # the papers' success threshold on NC (reported beside ours)
      alpha=1e-6,                # false-positive rate of a verify decision
      # Every group of the report judged again in sets of `set_size` after each of these
      # post-processings (zoo/removal.py's grammar; () = none), stages/served.py.
      served=("jpeg:90", "jpeg:75", "jpeg:50", "rescale:0.5", "crop:0.6", "blur:1.0",
              "noise:0.03", "rescale:0.75+jpeg:75"),
      set_size=16,
      min_success_rate=0.5,      # and at least this fraction of images must be hits
      margin=0.05,               # safety margin of the per-image threshold over negatives
      # Fraction of the stage-2 calibration negatives the per-image threshold may leave at or
      # above it (0: above every one). One stray negative then no longer decides the threshold;
      # the kit's p0 still counts those above it (verdict.calibrate).
      per_image_fpr=0.0,
      # A model-level null built with the kit (deepwm_jax/model_null.py, docs/verdicts.md):
      # `models` null models trained on clean pairs of their own; verify then ranks a suspect
      # set of up to `images` images among them. On by default because it is what keeps an
      # innocent model's p-value valid: with per-source p-values alone (models=0) a null
      # model's one stray image over the threshold was called a 3e-3 event in 4% of the
      # false-claim study's sets. 24 models take about 3.5 minutes on a 2-core CPU
      # at quickstart scale.
      model_null=dict(models=24, images=64, steps=300, ngf=8))

  # How the outputs are protected (docs/strategies.md).
  c.protect = dict(
      # 'deep' (the H/R barrier, verdict calibrated on negatives), 'keyed' (the H/R barrier
      # trained over random keys; the owner's key is secret and the verdict is an exact
      # test, docs/verdicts.md), 'filter' (a keyed filter of the content, no networks, the
      # same exact test; docs/filter.md) or 'traditional' (stages/traditional.py)
      method="deep",
      # 'agnostic': H after M (the barrier is a separate network); 'specific': stage 1 and 2
      # as usual, then M is fine-tuned into one network M' whose outputs carry the watermark
      # (train/absorb.py). Needs task.source='train'.
      strategy="agnostic",
      absorb=dict(
          steps=600, batch=16, loss_scale=1e4,
          # fidelity: MSE(M'(A), H(M(A))); watermark: MSE(R(M'(A)), w) through the frozen R;
          # task: MSE(M'(A), B), small, since H(M(A)) already carries M's task quality.
          weights=dict(fidelity=1.0, watermark=1.0, task=0.01),
          # R reads M'(A) through these distortions (the grammar of stage1.distortions).
          distortions="",
          optimizer=optimizer(3e-4, "cosine", 3e-5, agc=0.01)),
      traditional=dict(
          key=1234,                # seeds the spread-spectrum pattern: keep it secret
          psnr=40.0,               # embedding strength as the PSNR of B' vs B (before clipping)
          band=(0.1, 0.7),         # DCT band: (u+v)/(2(size-1)) in [lo, hi), no DC
          whiten=2.0,              # detector weight (u+v)^whiten per coefficient (1/f images)
          margin=1.0),             # threshold margin over the largest null z-score
      keyed=dict(
          cell=4,                  # px per key cell: (image_size / cell)^2 key bits
          # 'none', 'flips' or 'dihedral': cells that mirror each other share a bit, so the
          # pattern survives an imitator's flip or rotation augmentation, with fewer bits
          # (data/watermarks.py); the alignment search needs 'none'.
          symmetry="none",
          # What stage 1 asks of R on B': 'drawing' (MSE to the key's 0/1 cell pattern) or
          # 'hinge' (each cell's mean reading on the key's side of mid-grey by `margin`, and
          # nothing more: the test reads signs, ranked by strength, so H may embed more weakly).
          reading_loss="drawing", margin=0.1,
          # -1: the owner's key comes from the operating system's entropy (keep the kit
          # private: it holds the key); >= 0 seeds it, for reproducible studies only.
          key_seed=-1,
          # Imitators the report trains after the kit is made, on (A, B') with the owner's key,
          # and innocent ones on clean (A, M(A)) of each architecture: the report's evidence.
          surrogate_archs=("unet", "resnet", "cnn"),
          # Stage 2: one surrogate per arch here, each trained on outputs watermarked with a
          # training key of its own (never the owner's); R is fine-tuned to read them.
          # () = no stage 2.
          stage2_archs=(),
          null_archs=("unet", "resnet", "cnn")),
      filter=dict(
          radius=3,                # offsets within 3 px: 24 per channel, 72 key bits on RGB
          # The filter's gain. With the floor below: 40.6 dB / SSIM 0.987 on the builtin
          # photos' crops, 40-52 dB / SSIM 0.992-0.997 on whole held-out photos.
          eps=0.04,
          # No image's residual stronger than this PSNR (dB) at embedding; 0 = none.
          psnr_floor=40.0,
          key_seed=-1,             # as protect.keyed.key_seed
          # The report's imitators of B' and innocent models, as protect.keyed's.
          surrogate_archs=("unet", "resnet", "cnn"),
          null_archs=("unet", "resnet", "cnn")))

  # Devices and processes (deepwm_jax/parallel.py, docs/scale_out.md). Neither changes results
  # beyond float rounding, so a run may resume with other values here.
  c.mesh = dict(
      data=0,                    # devices on the data axis (the batch is split); 0 = all
      fsdp=False,                # split large parameters / optimizer moments over that axis
      fsdp_min_size=2 ** 18)     # arrays with fewer elements stay replicated
  c.distributed = dict(
      mode="auto",               # 'auto': coordinator if given, else SLURM / TPU-pod detection
      coordinator="",            # host:port of process 0 (env DEEPWM_COORDINATOR overrides)
      num_processes=0, process_id=-1,
      timeout=300)               # seconds to wait for the coordinator / the other processes

  c.log_every = 25
  c.ckpt_every = 250
  return c


CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def shipped_configs() -> list[str]:
  """Names of the configs that ship with the package (`--config NAME`), studies/ included."""
  names = []
  for root, _, files in os.walk(CONFIGS_DIR):
    rel = os.path.relpath(root, CONFIGS_DIR)
    names += [os.path.normpath(os.path.join(rel, f[:-3])) for f in files
              if f.endswith(".py") and not f.startswith("_")]
  return sorted(names)


def resolve(name_or_path: str) -> str:
  """The file of a config given as a path, or as a shipped config's name ('quickstart',
  'studies/quickstart_cnn', with or without '.py')."""
  if os.path.isfile(name_or_path):
    return name_or_path
  name = name_or_path[:-3] if name_or_path.endswith(".py") else name_or_path
  for candidate in (name, name[len("configs/"):] if name.startswith("configs/") else None):
    if candidate and not os.path.isabs(candidate):
      path = os.path.join(CONFIGS_DIR, candidate + ".py")
      if os.path.isfile(path):
        return path
  if os.sep in name_or_path or name_or_path.endswith(".py"):
    raise DeepwmError(f"config file '{name_or_path}' not found; give a file with get_config() "
                      "or a shipped config's name, e.g. --config quickstart")
  raise DeepwmError(f"config '{name_or_path}' is neither a file nor a shipped config; give a "
                    f"file with get_config() or one of: {', '.join(shipped_configs())}")


def load(name_or_path: str) -> ml_collections.ConfigDict:
  """The ConfigDict of a config file's get_config(), or of a shipped config by name."""
  path = resolve(name_or_path)
  spec = importlib.util.spec_from_file_location("deepwm_user_config", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except DeepwmError:
    raise
  except Exception as e:
    raise DeepwmError(f"config file '{path}' failed to load ({type(e).__name__}: {e}); "
                      f"fix the file") from None
  if not hasattr(module, "get_config"):
    raise DeepwmError(f"config file '{path}' has no get_config(); define one returning a "
                      f"ConfigDict")
  return module.get_config()


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """`--config.a.b=v` / `--config.a.b v` are config overrides; the rest goes to argparse."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      item = arg[len("--config."):]
      if "=" not in item and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        item, i = f"{item}={argv[i + 1]}", i + 1
      overrides.append(item)
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: list[str]):
  """Applies `a.b=value` strings; values are parsed like the field they replace."""
  for item in overrides:
    if "=" not in item:
      raise DeepwmError(f"override '--config.{item}' has no value; write --config.{item}=VALUE")
    path, raw = item.split("=", 1)
    parent, key = _parent(cfg, path)
    old = parent[key]
    parent[key] = _parse(raw, old, path)
  return cfg


def _parent(cfg, path):
  keys = path.split(".")
  node = cfg
  for i, k in enumerate(keys):
    if not isinstance(node, (dict, ml_collections.ConfigDict)) or k not in node:
      raise DeepwmError(f"unknown config key '{path}' (no '{'.'.join(keys[:i + 1])}'); "
                        f"see the config file for valid keys")
    if i == len(keys) - 1:
      return node, k
    node = node[k]


def _parse(raw: str, old, path: str):
  try:
    if isinstance(old, bool):
      if raw.lower() in ("true", "1", "yes"):
        return True
      if raw.lower() in ("false", "0", "no"):
        return False
      raise ValueError
    if isinstance(old, int):
      return int(raw)
    if isinstance(old, float):
      return float(raw)
    if isinstance(old, (tuple, list)):
      value = ast.literal_eval(raw)
      return tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if isinstance(old, str) or old is None:
      return raw
  except (ValueError, SyntaxError):
    pass
  raise DeepwmError(f"config value '{raw}' for '{path}' is not a valid {type(old).__name__}; "
                    f"give e.g. {path}={old!r}")


def validate(cfg) -> None:
  """Fails early, with the fix, on values that would fail (or silently mislead) later."""
  d = cfg.data
  def need(ok, msg):
    if not ok:
      raise DeepwmError(f"invalid config: {msg}")
  need(d.channels in (1, 3), f"data.channels={d.channels}; use 1 (grayscale) or 3 (RGB)")
  need(d.image_size >= 16 and (d.image_size & (d.image_size - 1)) == 0,
       f"data.image_size={d.image_size}; use a power of two >= 16 (the U-Nets halve it per level)")
  for name in ("n_protect", "n_attack", "n_val"):
    need(d[name] >= 2, f"data.{name}={d[name]}; use at least 2")
  need(d.scale > 0, f"data.scale={d.scale}; use a positive factor")
  context = cfg.stage1.get("context", 0)
  need(context >= 0 and (context == 0 or cfg.embedder.get("arch", "unet") == "cnn"),
       f"stage1.context={context}; use 0, or a positive margin with embedder.arch='cnn' (a "
       f"U-Net embedder takes the watermark at the crop's size)")
  if context and cfg.task.source == "train" and cfg.task.arch == "unet":
    # The task U-Net runs on the larger crops: 0 levels means log2(size) - 1 (models.py).
    f = 2 ** (cfg.task.get("num_downs", 0) or int(math.log2(d.image_size)) - 1)
    need((d.image_size + 2 * context) % f == 0,
         f"stage1.context={context}: the task U-Net needs crops of a multiple of {f} px, and "
         f"{d.image_size} + 2 x {context} is not; use a context of a multiple of {f // 2}")
  tm = cfg.embedder.get("texture_mask", 0.0)
  need(isinstance(tm, (int, float)) and 0.0 <= tm <= 1.0,
       f"embedder.texture_mask={tm}; use 0 (off) or a local contrast in (0, 1], e.g. 0.02")
  floor = cfg.embedder.get("psnr_floor", 0.0)
  need(isinstance(floor, (int, float)) and (floor == 0 or 20.0 <= floor <= 80.0),
       f"embedder.psnr_floor={floor}; use 0 (off) or a PSNR in dB in [20, 80], e.g. 40")
  start = cfg.embedder.get("start", 0.0)
  need(isinstance(start, (int, float)) and 0.0 <= start <= 0.1,
       f"embedder.start={start}; use 0 (off) or a gain in (0, 0.1], e.g. 0.01")
  need(not start or cfg.embedder.get("arch", "unet") == "unet",
       f"embedder.start={start} needs a U-Net embedder, which sees the watermark; "
       f"embedder.arch={cfg.embedder.get('arch')!r} does not: use start=0")
  frame = cfg.embedder.get("frame", 0)
  need(0 <= frame <= d.image_size // 8,
       f"embedder.frame={frame}; use 0 to {d.image_size // 8} (half the windows' overlap, "
       f"image_size / 8)")
  need(d.get("tfds_max_images", 0) >= 0,
       f"data.tfds_max_images={d.get('tfds_max_images')}; use 0 (all) or a positive count")
  for section in ("stage1", "stage2"):
    s = cfg[section]
    need(s.steps >= 0, f"{section}.steps={s.steps}; use 0 or more")
    need(s.batch >= 2 and s.batch % 2 == 0,
         f"{section}.batch={s.batch}; use an even batch >= 2 (the consistency loss pairs halves)")
    need(s.optimizer.lr > 0, f"{section}.optimizer.lr={s.optimizer.lr}; use a positive rate")
  levels = int(math.log2(d.image_size))
  for name in ("task", "attack.surrogate", "attack.null", "evaluate.surrogate", "evaluate.null"):
    spec = cfg
    for k in name.split("."):
      spec = spec[k]
    need(spec.arch in ("unet", "resnet", "cnn"),
         f"{name}.arch={spec.arch!r}; use unet, resnet or cnn")
    need(spec.loss in ("l1", "l2", "ssim"), f"{name}.loss={spec.loss!r}; use l1, l2 or ssim")
    need(spec.steps >= 0 and spec.batch >= 1, f"{name}: steps and batch must be positive")
    need(spec.num_downs <= levels, f"{name}.num_downs={spec.num_downs} is too deep for "
                                   f"{d.image_size} px; use at most {levels}")
    need(spec.optimizer.lr > 0, f"{name}.optimizer.lr must be positive")
  need(cfg.embedder.num_downs <= levels, f"embedder.num_downs={cfg.embedder.num_downs} is too "
                                         f"deep for {d.image_size} px; use at most {levels}")
  need(cfg.embedder.arch in ("unet", "cnn"),
       f"embedder.arch={cfg.embedder.arch!r}; use unet or cnn")
  need(cfg.embedder.depth >= 2, f"embedder.depth={cfg.embedder.depth}; use at least 2")
  need(cfg.embedder.output in ("sigmoid", "residual", "tanh01"),
       f"embedder.output={cfg.embedder.output!r}; use sigmoid, residual or tanh01")
  need(cfg.extractor.output in ("relu", "linear", "sigmoid"),
       f"extractor.output={cfg.extractor.output!r}; use relu, linear or sigmoid")
  need(cfg.task.source in ("train", "identity", "dataset")
       or cfg.task.source.startswith(("python:", "callable:")),
       f"task.source={cfg.task.source!r}; use train, identity, dataset or python:module:function")
  need(0 < cfg.evaluate.alpha < 1, f"evaluate.alpha={cfg.evaluate.alpha}; use a rate in (0, 1)")
  need(0 <= cfg.stage2.get("weak_copies", 0.0) < 1,
       f"stage2.weak_copies={cfg.stage2.get('weak_copies')}; use 0 (off) or a smallest copy "
       "strength in (0, 1), e.g. 0.25")
  from deepwm_jax import distortions  # here: it loads jax, which reading a config does not need
  for name in ("stage1", "stage2", "protect.absorb"):
    section = cfg.protect.absorb if name == "protect.absorb" else cfg[name]
    try:
      distortions.parse(section.get("distortions", ""))
    except DeepwmError as e:
      need(False, f"{name}.{e}")
  from deepwm_jax.zoo import removal
  for spec in cfg.evaluate.get("served", ()):
    try:
      removal.parse(spec)
    except DeepwmError as e:
      need(False, f"evaluate.served: {e}")
  need(cfg.evaluate.get("set_size", 16) >= 1,
       f"evaluate.set_size={cfg.evaluate.get('set_size')}; use 1 or more images per set")
  ramp = tuple(cfg.stage1.get("distortion_ramp", (0.0, 0.0)))
  need(len(ramp) == 2 and 0 <= ramp[0] <= ramp[1] <= 1,
       f"stage1.distortion_ramp={ramp}; use (start, end), fractions of the steps with "
       "0 <= start <= end <= 1 ((0, 0): every example distorted from the first step)")
  hardest = cfg.stage1.get("hardest_distortion", 0.0)
  need(hardest >= 0, f"stage1.hardest_distortion={hardest}; use 0 (off) or a positive weight")
  need(not hardest or (cfg.protect.get("method") == "keyed" and cfg.stage1.distortions
                       and cfg.protect.keyed.get("reading_loss", "drawing") == "hinge"),
       f"stage1.hardest_distortion={hardest} acts on keyed kits with "
       "protect.keyed.reading_loss='hinge' and stage1.distortions set; set those or leave it 0")
  band = cfg.stage1.get("fidelity_band")
  if band is not None:
    need(band.weight >= 0, f"stage1.fidelity_band.weight={band.weight}; use 0 (off) or more")
    ramp = tuple(band.get("ramp", (0.0, 0.0)))
    need(len(ramp) == 2 and 0 <= ramp[0] <= ramp[1] <= 1, f"stage1.fidelity_band.ramp={ramp}; "
         f"use (start, end) with 0 <= start <= end <= 1, or (0, 0) for no ramp")
    need(len(band.psnr) == 2 and 0 < band.psnr[0] <= band.psnr[1],
         f"stage1.fidelity_band.psnr={tuple(band.psnr)}; use (lo, hi) in dB, 0 < lo <= hi")
    need(len(band.ssim) == 2 and 0 < band.ssim[0] <= band.ssim[1] < 1,
         f"stage1.fidelity_band.ssim={tuple(band.ssim)}; use (lo, hi) with 0 < lo <= hi < 1")
  need(0 <= cfg.evaluate.per_image_fpr < 0.5,
       f"evaluate.per_image_fpr={cfg.evaluate.per_image_fpr}; use a rate in [0, 0.5), e.g. 1e-3")
  mn = cfg.evaluate.get("model_null", None)
  need(mn is None or (mn.models >= 0 and min(mn.images, mn.steps, mn.ngf) >= 1),
       f"evaluate.model_null={None if mn is None else mn.to_dict()}; use models >= 0 (0 = "
       "none) and images, steps, ngf >= 1")
  need(0 <= cfg.evaluate.min_success_rate <= 1,
       f"evaluate.min_success_rate={cfg.evaluate.min_success_rate}; use a fraction in [0, 1]")
  need(len(cfg.attack.null_archs) >= 1 and all(a in ("unet", "resnet", "cnn")
                                               for a in cfg.attack.null_archs),
       f"attack.null_archs={cfg.attack.null_archs}; use one or more of unet, resnet, cnn")
  extra = tuple(cfg.attack.get("extra_surrogate_archs", ()))
  need(all(a in ("unet", "resnet", "cnn") for a in extra) and len(set(extra)) == len(extra)
       and cfg.attack.surrogate.arch not in extra,
       f"attack.extra_surrogate_archs={extra}; use distinct ones of unet, resnet, cnn other "
       f"than attack.surrogate.arch ({cfg.attack.surrogate.arch})")
  if cfg.watermark.spec == "payload":  # a bad message or a too-long payload fails here, early
    from deepwm_jax import payload
    payload.from_config(cfg, owner=cfg.watermark.get("owner") or "owner")
  need(cfg.compute_dtype in ("float32", "bfloat16"),
       f"compute_dtype={cfg.compute_dtype!r}; use float32 or bfloat16")
  need(cfg.log_every >= 1 and cfg.ckpt_every >= 1, "log_every and ckpt_every must be >= 1")
  if "mesh" in cfg:
    need(cfg.mesh.data >= 0, f"mesh.data={cfg.mesh.data}; use 0 (all devices) or a count")
  if "distributed" in cfg:
    need(cfg.distributed.mode in ("auto", "on", "off"),
         f"distributed.mode={cfg.distributed.mode!r}; use auto, on or off")
  _validate_protect(cfg, need)


def _validate_protect(cfg, need) -> None:
  """protect.*: the method and the strategy (docs/strategies.md)."""
  p = cfg.get("protect")
  if p is None:  # configs written before protect existed: the deep agnostic barrier
    return
  need(p.method in ("deep", "keyed", "filter", "traditional"),
       f"protect.method={p.method!r}; use deep, keyed, filter or traditional")
  need(not (p.strategy == "specific" and p.method == "filter"),
       "protect.strategy='specific' absorbs the deep barrier H into M; use protect.method=deep")
  need(p.strategy in ("agnostic", "specific"),
       f"protect.strategy={p.strategy!r}; use agnostic or specific")
  need(not (p.strategy == "specific" and p.method == "traditional"),
       "protect.strategy='specific' absorbs the deep barrier H into M; use protect.method=deep")
  need(not (p.strategy == "specific" and p.method == "keyed"),
       "protect.strategy='specific' is not built for keyed kits yet; use protect.method=deep")
  need(not (p.strategy == "specific" and cfg.task.source != "train"),
       f"protect.strategy='specific' fine-tunes the task network, but task.source="
       f"{cfg.task.source!r} is not one; use task.source=train or strategy=agnostic")
  a = p.absorb
  need(a.steps >= 0 and a.batch >= 2, "protect.absorb: steps >= 0 and batch >= 2")
  need(a.optimizer.lr > 0, "protect.absorb.optimizer.lr must be positive")
  t = p.traditional
  need(t.psnr > 0, f"protect.traditional.psnr={t.psnr}; use a positive PSNR in dB (e.g. 40)")
  lo, hi = t.band
  need(0 <= lo < hi <= 1, f"protect.traditional.band={tuple(t.band)}; use 0 <= lo < hi <= 1")
  need(t.margin >= 0, f"protect.traditional.margin={t.margin}; use 0 or more")
  need(t.whiten >= 0, f"protect.traditional.whiten={t.whiten}; use 0 (plain) or more")
  if "filter" in p:
    f = p.filter
    need(int(f.radius) >= 1 and 2 * int(f.radius) < cfg.data.image_size,
         f"protect.filter.radius={f.radius}; use 1 or more, under half of data.image_size")
    need(f.eps > 0, f"protect.filter.eps={f.eps}; use a positive gain (e.g. 0.025)")
    need(f.psnr_floor >= 0, f"protect.filter.psnr_floor={f.psnr_floor}; use 0 (none) or a PSNR "
         "in dB (e.g. 40)")
    for what in ("surrogate_archs", "null_archs"):
      bad = [a for a in f[what] if a not in ("unet", "resnet", "cnn")]
      need(not bad, f"protect.filter.{what} has {bad}; use unet, resnet or cnn")
  if "keyed" in p:
    k = p.keyed
    need(k.cell >= 1 and cfg.data.image_size % k.cell == 0,
         f"protect.keyed.cell={k.cell}; use a cell size that divides data.image_size "
         f"({cfg.data.image_size})")
    for what in ("surrogate_archs", "null_archs", "stage2_archs"):
      bad = [a for a in k[what] if a not in ("unet", "resnet", "cnn")]
      need(not bad, f"protect.keyed.{what} has {bad}; use unet, resnet or cnn")
    from deepwm_jax.data import watermarks  # only here: config imports no model code
    sym = k.get("symmetry", "none")
    need(sym in watermarks.SYMMETRIES, f"protect.keyed.symmetry={sym!r}; use "
         f"{', '.join(watermarks.SYMMETRIES[:-1])} or {watermarks.SYMMETRIES[-1]}")
    if sym != "none" and k.cell >= 1 and cfg.data.image_size % k.cell == 0:
      nb = watermarks.key_bits(cfg.data.image_size, k.cell, sym)
      need(nb >= 20, f"protect.keyed: {nb} key bits ({cfg.data.image_size} px crops, "
           f"{k.cell} px cells, symmetry {sym!r}) cannot reach a p-value of 1e-6 (20 bits "
           f"all read); use smaller cells or less symmetry")
    need(k.get("reading_loss", "drawing") in ("drawing", "hinge"),
         f"protect.keyed.reading_loss={k.get('reading_loss')!r}; use drawing or hinge")
    need(0 < k.get("margin", 0.1) <= 0.5,
         f"protect.keyed.margin={k.get('margin')}; use a value in (0, 0.5]")
