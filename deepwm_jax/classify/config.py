"""The classify configs: `base_config()` holds every hyper-parameter of the method, its
attacks and its baselines; config files change a few; `validate` fails early with the fix."""
import re

import ml_collections

from deepwm_jax.config import optimizer
from deepwm_jax.data import tfds_source
from deepwm_jax.errors import DeepwmError

USER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(
      source="digits",           # 'digits' (ships with scikit-learn) or
                                 # 'tfds:NAME[/CONFIG][:SPLIT]' (prepared tfds, docs/data.md)
      tfds_dir="",               # tfds data_dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
      tfds_test_split="test",    # tfds: the test set; the source's split (default 'train')
                                 # is divided into the owner's and the attacker's data
      tfds_max_items=0,          # tfds: records read per split, evenly spread (0 = all)
      image_size=16, channels=1, num_classes=10,
      test_fraction=0.2,         # digits only: tfds uses its own test split
      attack_fraction=0.2)       # the attacker's clean data (fine-tuning, purifier), disjoint
  c.model = dict(widths=(16, 32), hidden=64)

  # Registered users: each gets a copy trained with its own key set.
  c.users = ("user0", "user1", "user2", "user3", "user4")
  c.key_samples = dict(  # (not `keys`: that is a ConfigDict method)
      n_per_user=64,
      scale=0.25,                # photos are shrunk first so small crops hold structure
      pattern_cells=8,           # the user's pattern is a cells x cells binary grid
      pattern_alpha=0.5,         # key = (1 - alpha) * photo crop + alpha * pattern
      plain_decoys=0.25,         # fraction of decoys without any pattern
      decoy_pool=2048)           # photo crops the decoys are drawn from
  c.train = dict(
      steps=600, batch=64,
      key_batch=32,              # extra samples per step: half keys, half decoys
      key_weight=1.0,
      # Against fine-tuning (0 = off): a hinge asking each key's logit margin to reach
      # key_margin, and the extra samples' loss again at weights times (1 + weight_noise * N(0,1)).
      key_margin=0.0,
      weight_noise=0.0,
      # Fine-tuning-aware training of the users' copies (docs/classify.md): each step also
      # fine-tunes the copy for `steps` simulated Adam steps on clean task batches at a rate
      # drawn from `lrs`, and asks the keys (and decoys) to hold at the weights it reaches,
      # with `weight`, plus a key-margin hinge there when `margin` > 0. First-order MAML
      # unless `second_order`. steps=0 is off.
      finetune_sim=dict(steps=0, lrs=(3e-3, 1e-2), batch=64, weight=1.0, margin=0.0,
                        second_order=False),
      optimizer=optimizer(2e-3, "cosine", 2e-4, b1=0.9))
  c.null = dict(n_calibration=5, n_evaluation=10)
  c.verify = dict(
      alpha=1e-6,                # false-positive rate of a detection
      min_accuracy=0.5)          # and a detection needs most keys in the watermark class

  c.baselines = dict(
      names=("logo", "noise", "frontier"),
      n_keys=64,
      target_class=0,            # logo and noise keys are relabelled to this class
      noise_std=0.4,
      frontier_eps=0.15,         # FGSM step of the frontier-stitching keys
      frontier_steps=200,
      frontier_optimizer=optimizer(5e-4, "constant", b1=0.9))

  c.attacks = dict(
      finetune=dict(lrs=(1e-4, 1e-3, 3e-3, 1e-2), steps=(100, 300), batch=64),
      prune=dict(fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
      purifier=dict(steps=400, batch=64, width=16, optimizer=optimizer(2e-3, "cosine", 2e-4,
                                                                       b1=0.9)),
      max_task_drop=0.05)        # an attack "keeps the task" within this accuracy drop

  c.log_every = 50
  c.ckpt_every = 200
  return c


def validate(cfg) -> None:
  """Raises DeepwmError on a value that would fail, or silently mislead, later."""
  def need(ok, msg):
    if not ok:
      raise DeepwmError(f"invalid config: {msg}")
  d = cfg.data
  need(d.source == "digits" or d.source.startswith("tfds:"),
       f"data.source={d.source!r}; use 'digits' or 'tfds:NAME' (a prepared tfds dataset)")
  if d.source.startswith("tfds:"):
    tfds_source.parse(d.source)   # raises on a malformed name
  need(d.tfds_max_items >= 0, f"data.tfds_max_items={d.tfds_max_items}; use 0 (all) or more")
  need(d.channels in (1, 3), f"data.channels={d.channels}; use 1 or 3")
  need(d.image_size % 4 == 0 and d.image_size >= 16,
       f"data.image_size={d.image_size}; use a multiple of 4 >= 16 (the fingerprint needs 256 "
       f"pixels and the network pools twice)")
  need(d.num_classes >= 2, f"data.num_classes={d.num_classes}; use at least 2")
  need(0 < d.test_fraction < 1 and 0 < d.attack_fraction < 1
       and d.test_fraction + d.attack_fraction < 1,
       "data.test_fraction and data.attack_fraction must be in (0, 1) and sum below 1")
  users = tuple(cfg.users)
  need(len(users) >= 1, "users is empty; register at least one user id")
  need(len(set(users)) == len(users), f"users={users} has duplicates; use distinct ids")
  for u in users:
    need(isinstance(u, str) and USER_ID.match(u),
         f"user id {u!r}: use 1-64 letters, digits, '_', '-' or '.'")
  k = cfg.key_samples
  need(k.n_per_user >= 2, f"key_samples.n_per_user={k.n_per_user}; use at least 2")
  need(d.image_size % k.pattern_cells == 0,
       f"key_samples.pattern_cells={k.pattern_cells} must divide data.image_size={d.image_size}")
  need(0 < k.pattern_alpha <= 1, f"key_samples.pattern_alpha={k.pattern_alpha}; use (0, 1]")
  need(0 <= k.plain_decoys <= 1, f"key_samples.plain_decoys={k.plain_decoys}; use [0, 1]")
  need(k.decoy_pool >= 1, f"key_samples.decoy_pool={k.decoy_pool}; use at least 1")
  t = cfg.train
  need(t.steps >= 1 and t.batch >= 1, "train.steps and train.batch must be >= 1")
  need(t.key_batch >= 2 and t.key_batch % 2 == 0,
       f"train.key_batch={t.key_batch}; use an even number >= 2 (half keys, half decoys)")
  need(t.optimizer.lr > 0, "train.optimizer.lr must be positive")
  need(t.key_margin >= 0, f"train.key_margin={t.key_margin}; use 0 (off) or a positive margin")
  need(0 <= t.weight_noise < 1, f"train.weight_noise={t.weight_noise}; use a scale in [0, 1)")
  fs = t.finetune_sim
  need(fs.steps >= 0, f"train.finetune_sim.steps={fs.steps}; use 0 (off) or a step count")
  need(len(fs.lrs) >= 1 and all(lr > 0 for lr in fs.lrs),
       f"train.finetune_sim.lrs={tuple(fs.lrs)}; use one or more positive rates")
  need(fs.batch >= 1 and fs.weight > 0 and fs.margin >= 0,
       "train.finetune_sim: batch must be >= 1, weight positive and margin 0 (off) or more")
  need(cfg.null.n_calibration >= 1 and cfg.null.n_evaluation >= 1,
       "null.n_calibration and null.n_evaluation must be >= 1 (the p-value needs clean models)")
  need(0 < cfg.verify.alpha < 1, f"verify.alpha={cfg.verify.alpha}; use a rate in (0, 1)")
  need(0 <= cfg.verify.min_accuracy <= 1, "verify.min_accuracy must be in [0, 1]")
  b = cfg.baselines
  unknown = set(b.names) - {"logo", "noise", "frontier"}
  need(not unknown, f"baselines.names has {sorted(unknown)}; use logo, noise, frontier")
  need(0 <= b.target_class < d.num_classes,
       f"baselines.target_class={b.target_class}; use a class in [0, {d.num_classes})")
  need(b.n_keys >= 2, "baselines.n_keys must be >= 2")
  a = cfg.attacks
  need(all(lr > 0 for lr in a.finetune.lrs), "attacks.finetune.lrs must be positive")
  need(all(s >= 1 for s in a.finetune.steps), "attacks.finetune.steps must be >= 1")
  need(all(0 < f < 1 for f in a.prune.fractions), "attacks.prune.fractions must be in (0, 1)")
  need(cfg.log_every >= 1 and cfg.ckpt_every >= 1, "log_every and ckpt_every must be >= 1")
