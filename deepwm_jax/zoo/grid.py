"""The zoo as a grid: the config's sweeps expanded into members, and members into groups.

A zoo config declares
  archs     name -> network spec (arch family and its widths/depths), see zoo/archs.py
  defaults  one member's settings: arch, loss, augmentation, n_attack, lr, steps, batch, seed,
            null, overwrite, truth
  sweeps    a list of {axis: [values]}: each sweep is the Cartesian product of its axes, every
            other axis at its default; the zoo is the union of the sweeps (duplicates once)
  removal   attacks: post-processing specs (deepwm_jax.zoo.removal) evaluated on the outputs of
            the trained members named in `members` (and of every null member): they cost no
            training, each is one more row of the report

A member's name lists its arch and loss, then every axis that differs from the defaults, so a
name means the same member in every run of the config. Members that share an architecture,
step count, batch, whether they carry a discriminator and whether their loss is perceptual
form one group: one stacked state, one vmapped step.
"""
import dataclasses
import hashlib
import itertools
import json

from deepwm_jax.zoo import augment, removal
from deepwm_jax.errors import DeepwmError

AXES = ("arch", "loss", "augmentation", "n_attack", "lr", "steps", "batch", "seed", "null",
        "overwrite", "truth")
PIXEL_LOSSES = ("l1", "l2", "ssim", "perceptual")
ADVERSARIAL = ("lsgan", "gan")


@dataclasses.dataclass(frozen=True)
class Member:
  """One surrogate attacker of the zoo."""
  name: str
  arch: str            # a key of config.archs
  loss: str            # 'l2', 'l1+lsgan', 'perceptual+gan', ...
  augmentation: str    # deepwm_jax.zoo.augment spec
  n_attack: int        # how many (A, B') pairs the attacker has
  lr: float
  steps: int
  batch: int
  seed: int
  null: bool           # trained on clean outputs M(A): must never be detected
  overwrite: bool      # trained on B' re-watermarked by the attacker's own embedder
  # With null: trained on the data's clean targets B (the ground truth of the task), not on
  # the owner's outputs: an innocent model that learned from other data.
  truth: bool = False

  @property
  def pixel_loss(self) -> str:
    return self.loss.split("+")[0]

  @property
  def adversarial(self) -> str | None:
    parts = self.loss.split("+")
    return parts[1] if len(parts) > 1 else None

  @property
  def group_key(self) -> tuple:
    # A perceptual member gets a group of its own kind: under vmap every member computes every
    # loss term of its group, and VGG16 features cost more than the surrogate itself. Members
    # trained on the ground truth form groups of their own, so that adding them to a zoo
    # leaves its finished groups (and their names) as they are.
    return (self.arch, self.steps, self.batch, self.adversarial is not None,
            self.pixel_loss == "perceptual") + ((True,) if self.truth else ())


@dataclasses.dataclass(frozen=True)
class Group:
  """Members trained together by one vmapped step."""
  name: str
  arch: str
  steps: int
  batch: int
  adversarial: bool
  members: tuple[Member, ...]
  perceptual: bool = False


def parse_loss(loss: str) -> tuple[str, str | None]:
  parts = str(loss).split("+")
  if len(parts) > 2 or parts[0] not in PIXEL_LOSSES or (len(parts) == 2
                                                         and parts[1] not in ADVERSARIAL):
    raise DeepwmError(f"zoo loss {loss!r}: use one of {', '.join(PIXEL_LOSSES)}, optionally "
                      f"+lsgan or +gan (e.g. 'l1+lsgan')")
  return parts[0], parts[1] if len(parts) == 2 else None


def _name(m: dict, defaults: dict) -> str:
  parts = [m["arch"], m["loss"]]
  short = {"augmentation": "aug", "n_attack": "n", "lr": "lr", "steps": "steps",
           "batch": "b", "seed": "seed"}
  for axis, tag in short.items():
    if m[axis] != defaults[axis]:
      parts.append(f"{tag}{m[axis]}" if axis != "augmentation" else f"aug={m[axis]}")
  if m["overwrite"]:
    parts.append("overwrite")
  if m["null"]:
    parts.append("null")
  if m["truth"]:
    parts.append("truth")
  return "-".join(str(p) for p in parts)


def expand(cfg) -> list[Member]:
  """Every member of the zoo, in sweep order, duplicates removed."""
  defaults = dict(cfg.defaults)
  unknown = set(defaults) - set(AXES)
  if unknown or set(AXES) - set(defaults):
    raise DeepwmError(f"zoo defaults must set exactly the axes {', '.join(AXES)} (unknown: "
                      f"{sorted(unknown)}, missing: {sorted(set(AXES) - set(defaults))})")
  members, seen = [], set()
  for i, sweep in enumerate(cfg.sweeps):
    sweep = dict(sweep)
    bad = set(sweep) - set(AXES)
    if bad:
      raise DeepwmError(f"zoo sweep {i} has unknown axes {sorted(bad)}; use {', '.join(AXES)}")
    axes = list(sweep)
    values = [list(v) if isinstance(v, (list, tuple)) else [v] for v in sweep.values()]
    for combo in itertools.product(*values):
      m = {**defaults, **dict(zip(axes, combo))}
      _check(m, cfg, i)
      name = _name(m, defaults)
      if name in seen:
        continue
      seen.add(name)
      members.append(Member(name=name, arch=m["arch"], loss=m["loss"],
                            augmentation=m["augmentation"], n_attack=int(m["n_attack"]),
                            lr=float(m["lr"]), steps=int(m["steps"]), batch=int(m["batch"]),
                            seed=int(m["seed"]), null=bool(m["null"]),
                            overwrite=bool(m["overwrite"]), truth=bool(m["truth"])))
  if not members:
    raise DeepwmError("the zoo config has no members; add at least one sweep")
  return members


def _check(m: dict, cfg, sweep: int) -> None:
  where = f"zoo sweep {sweep}"
  if m["arch"] not in cfg.archs:
    raise DeepwmError(f"{where}: arch {m['arch']!r} is not in config.archs "
                      f"({', '.join(cfg.archs)}); declare it there")
  parse_loss(m["loss"])
  augment.parse(m["augmentation"])
  if m["n_attack"] < 1 or m["steps"] < 1 or m["batch"] < 2 or m["lr"] <= 0:
    raise DeepwmError(f"{where}: n_attack and steps must be >= 1, batch >= 2 and lr > 0 "
                      f"(got {m['n_attack']}, {m['steps']}, {m['batch']}, {m['lr']})")
  if m["null"] and m["overwrite"]:
    raise DeepwmError(f"{where}: a member cannot be both null and overwrite")
  if m["truth"] and not m["null"]:
    raise DeepwmError(f"{where}: truth=True trains an innocent model on the data's ground "
                      f"truth; set null=True with it")


def groups(members: list[Member], salt: str = "", max_members: int = 0) -> list[Group]:
  """Members sharing (arch, steps, batch, discriminator, perceptual loss) stacked together, in
  first-seen order.

  With `max_members` > 0 a larger set is split into ceil(K / max_members) groups of nearly
  equal size (they differ by at most one member), trained one after another: a vmapped
  step's memory grows with its member count, and a paper-scale set of 16 ResNet-9s at 256 px
  does not fit one accelerator at once (docs/zoo.md). Splitting changes nothing a member
  learns (its initialisation, data and step are its own under vmap; up to float rounding, and
  the loop's divergence guard acts on a whole group), only how many train at a time.

  The group's name carries a digest of its members' names and of `salt` (the settings that
  decide training besides the members), so adding a member to the config makes a new group
  (trained afresh) and leaves every other finished group as it is.
  """
  if max_members < 0:
    raise DeepwmError(f"max_members must be >= 0 (0: no limit), got {max_members}")
  by_key: dict[tuple, list[Member]] = {}
  for m in members:
    by_key.setdefault(m.group_key, []).append(m)
  out = []
  for (arch, steps, batch, adv, vgg, *_), ms in by_key.items():
    n = -(-len(ms) // max_members) if max_members else 1
    bounds = [len(ms) * i // n for i in range(n + 1)]
    for lo, hi in zip(bounds, bounds[1:]):
      chunk = ms[lo:hi]
      digest = hashlib.sha256("\n".join([salt] + [m.name for m in chunk]).encode()).hexdigest()
      name = (f"{arch}-steps{steps}-b{batch}{'-adv' if adv else ''}{'-vgg' if vgg else ''}-"
              f"{digest[:8]}")
      out.append(Group(name, arch, steps, batch, adv, tuple(chunk), vgg))
  return out


def salt(zcfg) -> str:
  """What besides member names decides a group's training: a change retrains the group."""
  keys = ("archs", "gan", "data", "conv_impl", "seed", "perceptual", "overwrite")
  d = zcfg.to_dict()
  settings = {k: d.get(k) for k in keys}
  if d.get("compute_dtype", "float32") != "float32":   # so float32 groups keep their names
    settings["compute_dtype"] = d["compute_dtype"]
  return json.dumps(settings, sort_keys=True, default=str)


def removal_rows(cfg, members: list[Member]) -> list[tuple[Member, str]]:
  """(member, removal spec) pairs evaluated without training: the named members and the nulls."""
  attacks = list(cfg.removal.attacks)
  for spec in attacks:
    removal.parse(spec)
  names = {m.name for m in members}
  wanted = list(cfg.removal.members)
  missing = [n for n in wanted if n not in names]
  if missing:
    raise DeepwmError(f"removal.members names {missing[0]!r}, which is not a member of the zoo;"
                      f" members are e.g. {', '.join(sorted(names)[:4])}")
  targets = [m for m in members if m.name in wanted or (m.null and cfg.removal.on_nulls)]
  return [(m, spec) for m in targets for spec in attacks]
