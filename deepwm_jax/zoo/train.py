"""Training one group of the zoo: K members stacked on a leading axis, one jitted vmapped step.

Each member has its own initialisation, data order, learning rate and loss weights; they live
in the stacked state, so members that differ in those train in the same compiled step. The
member axis is sharded over a 1-D device mesh ('zoo'), so K members on D devices train K / D
per device with no communication (the group is padded to a multiple of D with copies of its
last member, whose results are dropped).

State of one member (every leaf gets a leading member axis when stacked):
  model, opt            the surrogate's variables and Adam state
  disc, opt_d           the PatchGAN and its Adam state (adversarial groups only)
  hyper                 lr and the weights of l1, l2, ssim, perceptual, lsgan, gan
  step                  the step counter
The group's state is {'members': stacked member states, 'lr_scale': one scalar}: the loop's
divergence guard (train/loop.py) scales the whole group's learning rate when it rolls back.
"""
import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepwm_jax import losses, metrics, models
from deepwm_jax.errors import DeepwmError
from deepwm_jax.models import layers
from deepwm_jax.stages import common as stages_common
from deepwm_jax.train import common
from deepwm_jax.zoo import archs, augment, grid, perceptual

AXIS = "zoo"
LOSS_TERMS = ("l1", "l2", "ssim", "perceptual", "lsgan", "gan")


def make_mesh(n_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first n_devices devices (0: all of them)."""
  devices = jax.devices()
  if n_devices:
    devices = devices[:n_devices]
  return Mesh(np.array(devices), (AXIS,))


def member_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def members_per_step(cfg, mesh: Mesh) -> int:
  """The most members one vmapped step may hold: config.max_members_per_device on each device
  of the mesh (0: no limit)."""
  per_device = cfg.get("max_members_per_device", 0)
  if not isinstance(per_device, int) or per_device < 0:
    raise DeepwmError(f"max_members_per_device must be an integer >= 0 (0: no limit), got "
                      f"{per_device!r}")
  return per_device * mesh.devices.size


def groups(members, cfg, mesh: Mesh) -> list:
  """The groups `deepwm attack` trains and `--plan` lists (one place, so their names agree)."""
  return grid.groups(members, salt=grid.salt(cfg), max_members=members_per_step(cfg, mesh))


def padded(members, mesh: Mesh) -> list:
  """Members repeated at the end to a multiple of the mesh size (the copies are dropped)."""
  d = mesh.devices.size
  k = -(-len(members) // d) * d
  return list(members) + [members[-1]] * (k - len(members))


@dataclasses.dataclass
class GroupSetup:
  """What a group's step needs besides the state: networks, sizes, settings."""
  arch_spec: dict
  image_size: int
  channels: int
  steps: int
  adversarial: bool
  terms: tuple[str, ...]            # loss terms any member of the group uses
  gan_weight: float = 0.01
  gan_lr: float = 2e-4
  disc_widths: tuple = (16, 32, 64)
  lr_end_factor: float = 0.1        # cosine decay to lr * this
  conv_impl: str = "xla"
  vgg: list | None = None           # perceptual weights (perceptual.load_weights)
  compute_dtype: str = "float32"    # 'bfloat16': convolutions in bfloat16, the rest float32

  @property
  def _dtype(self):
    return models.compute_dtype(self.compute_dtype)

  @property
  def model(self):
    return archs.build(self.arch_spec, self.channels, self.image_size, self.conv_impl,
                       self._dtype)

  @property
  def disc(self):
    return models.Discriminator(tuple(self.disc_widths), self.conv_impl, dtype=self._dtype)


def setup_for(group: "grid.Group", cfg, image_size: int, channels: int, vgg=None) -> GroupSetup:
  dtype = cfg.get("compute_dtype", "float32")
  models.compute_dtype(dtype)   # refuses any other value before the group is built
  terms = set()
  for m in group.members:
    pix, adv = grid.parse_loss(m.loss)
    terms.add(pix)
    if adv:
      terms.add(adv)
  return GroupSetup(arch_spec=dict(cfg.archs[group.arch]), image_size=image_size,
                    channels=channels, steps=group.steps, adversarial=group.adversarial,
                    terms=tuple(t for t in LOSS_TERMS if t in terms),
                    gan_weight=float(cfg.gan.weight), gan_lr=float(cfg.gan.lr),
                    disc_widths=tuple(cfg.gan.widths), conv_impl=cfg.conv_impl, vgg=vgg,
                    compute_dtype=dtype)


def member_key(member, zoo_seed: int) -> int:
  """A member's own random stream (init and data order), from its name and seed."""
  return zlib.crc32(f"{zoo_seed}/{member.seed}/{member.name}".encode())


def _adam():
  return optax.scale_by_adam(b1=0.5, b2=0.999)   # the reference attack's betas


def init_member(setup: GroupSetup, member, zoo_seed: int) -> dict:
  key = jax.random.PRNGKey(member_key(member, zoo_seed))
  x = jnp.zeros((2, setup.image_size, setup.image_size, setup.channels), jnp.float32)
  variables = models.init_variables(setup.model, key, x)
  d_vars = (models.init_variables(setup.disc, jax.random.fold_in(key, 1), x)
            if setup.adversarial else None)
  return _member_state(setup, member, variables, d_vars)


def _member_state(setup, member, variables, d_vars) -> dict:
  pix, adv = grid.parse_loss(member.loss)
  hyper = {t: jnp.float32(t in (pix, adv)) for t in LOSS_TERMS}
  hyper["lr"] = jnp.float32(member.lr)
  state = {"model": variables, "opt": _adam().init(variables["params"]), "hyper": hyper,
           "step": jnp.zeros((), jnp.int32)}
  if setup.adversarial:
    state["disc"] = d_vars
    state["opt_d"] = _adam().init(d_vars["params"])
  return state


def abstract_group(setup: GroupSetup, members, mesh: Mesh) -> dict:
  """The group state's shapes, dtypes and shardings, without computing any value (for
  planning and checking paper-scale zoos on a laptop: jax.eval_shape only)."""
  def one():
    x = jnp.zeros((2, setup.image_size, setup.image_size, setup.channels), jnp.float32)
    key = jax.random.PRNGKey(0)
    variables = setup.model.init(key, x, train=False)
    d_vars = setup.disc.init(key, x) if setup.adversarial else None
    return _member_state(setup, members[0], variables, d_vars)
  member = jax.eval_shape(one)
  k, sh = len(members), member_sharding(mesh)
  stacked = jax.tree.map(lambda a: jax.ShapeDtypeStruct((k, *a.shape), a.dtype, sharding=sh),
                         member)
  return {"members": stacked,
          "lr_scale": jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated(mesh))}


def stack(states: list) -> dict:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def unstack(state, k: int) -> dict:
  return jax.tree.map(lambda x: x[k], state)


def group_shardings(mesh: Mesh) -> dict:
  return {"members": member_sharding(mesh), "lr_scale": replicated(mesh)}


def init_group(setup: GroupSetup, members, zoo_seed: int, mesh: Mesh) -> dict:
  states = stack([init_member(setup, m, zoo_seed) for m in members])
  return jax.device_put({"members": states, "lr_scale": jnp.ones((), jnp.float32)},
                        group_shardings(mesh))


def _bce_real(logits):
  return jnp.mean(jax.nn.softplus(-logits))


def _bce_fake(logits):
  return jnp.mean(jax.nn.softplus(logits))


def make_member_step(setup: GroupSetup):
  """One member's training step: (state, {'x','y'}, lr_scale) -> (state, metrics). Pure;
  vmapped over members below."""
  model, D = setup.model, setup.disc
  terms = setup.terms
  decay = optax.cosine_decay_schedule(1.0, max(setup.steps, 1), alpha=setup.lr_end_factor)
  opt = _adam()

  def pixel_terms(out, y):
    t = {}
    if "l1" in terms:
      t["l1"] = losses.l1(out, y)
    if "l2" in terms:
      t["l2"] = losses.mse(out, y)
    if "ssim" in terms:
      t["ssim"] = losses.pixel_loss("ssim", out, y)
    if "perceptual" in terms:
      t["perceptual"] = perceptual.loss(setup.vgg, out, y)
    return t

  def loss_fn(params, state, x, y):
    h = state["hyper"]
    out, new_vars = common.apply(model, common.with_params(state["model"], params), x,
                                 train=True)
    t = pixel_terms(out, y)
    loss = sum(h[k] * v for k, v in t.items())
    if setup.adversarial:
      logits = D.apply(state["disc"], out)
      adv = h["lsgan"] * losses.lsgan_generator(logits) + h["gan"] * _bce_real(logits)
      loss = loss + setup.gan_weight * adv
    return loss, (new_vars, out)

  def step(state, batch, lr_scale=1.0):
    x, y = batch["x"], batch["y"]
    (loss, (new_vars, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["model"]["params"], state, x, y)
    updates, opt_state = opt.update(grads, state["opt"])
    lr = state["hyper"]["lr"] * lr_scale * decay(state["step"])
    params = jax.tree.map(lambda p, u: p - lr * u, state["model"]["params"], updates)
    new = {**state, "model": common.with_params(new_vars, params), "opt": opt_state,
           "step": state["step"] + 1}
    m = {"loss": loss, "psnr": jnp.mean(metrics.psnr(jnp.clip(out, 0, 1), y))}
    if setup.adversarial:
      h = state["hyper"]
      fake = jax.lax.stop_gradient(out)

      def d_loss(d_params):
        v = {"params": d_params}
        real_l, fake_l = D.apply(v, y), D.apply(v, fake)
        return (h["lsgan"] * losses.lsgan_discriminator(real_l, fake_l)
                + h["gan"] * (_bce_real(real_l) + _bce_fake(fake_l)))

      dl, d_grads = jax.value_and_grad(d_loss)(state["disc"]["params"])
      d_updates, opt_d = opt.update(d_grads, state["opt_d"])
      d_lr = setup.gan_lr * lr_scale
      d_params = jax.tree.map(lambda p, u: p - d_lr * u, state["disc"]["params"], d_updates)
      new.update(disc={"params": d_params}, opt_d=opt_d)
      m["d_loss"] = dl
    return new, m

  return step


def make_group_step(setup: GroupSetup, mesh: Mesh, jit: bool = True):
  """The zoo's step: jit(vmap(member step)) over the member axis, sharded over `mesh`.

  Metrics come back as means over the members (what the loop logs and guards) plus the
  worst member's PSNR. Signature matches deepwm_jax.train.loop: (state, batch, key).
  jit=False returns the plain function (for jax.eval_shape of paper-scale zoos).
  """
  member_step = jax.vmap(make_member_step(setup), in_axes=(0, 0, None))

  def step(state, batch):
    members, m = member_step(state["members"], batch, state["lr_scale"])
    out = {k: jnp.mean(v) for k, v in m.items()}
    out["psnr_min"] = jnp.min(m["psnr"])
    return {**state, "members": members}, out

  if not jit:
    return step
  jitted = jit_group_step(step, mesh)
  return lambda state, batch, key=None: jitted(state, batch)


def jit_group_step(step, mesh: Mesh):
  """jax.jit of a group step (make_group_step(..., jit=False)) with the member-axis shardings;
  `.lower(state, batch).compile()` on abstract values gives its memory without training."""
  sh = group_shardings(mesh)
  return jax.jit(step, in_shardings=(sh, member_sharding(mesh)),
                 out_shardings=(sh, replicated(mesh)),
                 compiler_options=layers.cpu_compiler_options())


def make_predict(setup: GroupSetup, mesh: Mesh):
  """(stacked variables, x [N, ...]) -> [K, N, ...] outputs in [0, 1], every member on x."""
  model = setup.model
  fn = jax.vmap(lambda v, x: jnp.clip(model.apply(v, x, train=False), 0, 1), in_axes=(0, None))
  sh = member_sharding(mesh)
  return jax.jit(fn, in_shardings=(sh, replicated(mesh)), out_shardings=sh)


def predict(predict_fn, variables, x: np.ndarray, batch: int = 64) -> np.ndarray:
  """Every member's outputs on `x`: [K, N, H, W, C]."""
  return stages_common.predict(predict_fn, variables, x, batch, axis=1)


def batch_fn(members, data: dict, zoo_seed: int, mesh: Mesh):
  """batch_fn(step) -> {'x','y'} of shape [K, batch, H, W, C], a function of the step only.

  `data[m.name]` = (x, y) arrays of member m. Each member draws its own indices from its own
  stream and applies its augmentation to x and y alike (augment.py).
  """
  sh = member_sharding(mesh)
  keys = [member_key(m, zoo_seed) for m in members]

  def fn(step):
    xs, ys = [], []
    for m, k in zip(members, keys):
      x, y = data[m.name]
      rng = np.random.default_rng([k, step])
      idx = rng.integers(0, len(x), m.batch)
      bx, by = augment.augment(m.augmentation, x[idx], y[idx], rng)
      xs.append(bx)
      ys.append(by)
    return jax.device_put({"x": np.stack(xs), "y": np.stack(ys)}, sh)
  return fn
