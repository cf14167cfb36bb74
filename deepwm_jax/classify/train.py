"""Training several copies of the classifier at once: the owner's stack (every user's copy,
the clean null models, the baselines) and the attacker's fine-tuning runs.

The copies share one architecture, so their parameters are stacked along a leading member
axis and one jitted step trains them all with `lax.map` (one after another inside the step:
on a 2-core CPU that ran faster than vmap, see models.Conv3x3). A batch holds each member's own
task samples and, optionally, its own extra samples (keys, decoys) with soft targets and
weights, so a clean model is a member whose extra weights are zero.

The step is `step(state, batch, key) -> (state, metrics)` for `deepwm_jax.train.loop.run`:
checkpoints, resume and the divergence guard come from there.
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deepwm_jax.train import optim


def soft_cross_entropy(logits_NxK, targets_NxK):
  return -jnp.sum(targets_NxK * jax.nn.log_softmax(logits_NxK), axis=-1)


def perturb(params, seed, scale: float):
  """Each weight times (1 + scale * N(0, 1)): a random point near `params`, relative to each
  weight's own size, as a fine-tuning attack moves them."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [w * (1 + scale * jax.random.normal(k, w.shape, w.dtype))
                                      for w, k in zip(leaves, keys)])


def key_margin_loss(logits_NxK, targets_NxK, is_key_N, margin: float):
  """Hinge on the keys' logit margin (their class over the best other), scaled to ~1 at 0."""
  cls = jnp.argmax(targets_NxK, -1)
  z = jnp.take_along_axis(logits_NxK, cls[:, None], -1)[:, 0]
  other = jnp.max(jnp.where(jax.nn.one_hot(cls, logits_NxK.shape[-1]) > 0, -jnp.inf,
                            logits_NxK), -1)
  hinge = jax.nn.relu(margin - (z - other)) / margin
  return jnp.sum(is_key_N * hinge) / jnp.maximum(jnp.sum(is_key_N), 1.0)


@dataclasses.dataclass(frozen=True)
class FinetuneSim:
  """The attacker simulated inside the owner's step (train.finetune_sim, docs/classify.md).

  `steps` Adam steps from a fresh optimizer state, at a rate drawn from `lrs`, on clean task
  batches; the extra samples' loss at the weights they reach is added to the owner's loss
  with `weight`. First order (the default) passes that loss's gradient at the fine-tuned
  weights straight back to the weights (first-order MAML); `second_order` differentiates
  through the inner steps instead.
  """
  steps: int
  lrs: tuple
  weight: float = 1.0
  second_order: bool = False
  margin: float = 0.0           # > 0: also the key-margin hinge, at the fine-tuned weights
  b1: float = 0.9               # the attacker's Adam (attacks.finetune_optimizer)
  b2: float = 0.999


def task_loss(net, params, x, y):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      net.apply({"params": params}, x), y))


def simulate_finetune(net, params, fx_KxBxHxWxC, fy_KxB, lr, sim: FinetuneSim):
  """The weights after sim.steps of the attacker's Adam at rate `lr` on the clean batches.

  The attacker's optimizer starts fresh, so its first steps are sign-like moves of `lr` in every
  weight: the scrambling that erased the mark (docs/classify.md). First order: the result is
  params + stop_gradient(shift), so gradients at it flow to params unchanged.
  """
  # Differentiating sqrt(v) at v = 0 (a weight with no gradient, e.g. behind a dead ReLU) gives
  # NaN; optax's eps_root is there for meta-learning through Adam (1e-16: sqrt is 1e-8 = eps).
  adam = optax.scale_by_adam(b1=sim.b1, b2=sim.b2, eps_root=1e-16 if sim.second_order else 0.0)
  start = params if sim.second_order else jax.lax.stop_gradient(params)

  def body(carry, xy):
    p, s = carry
    g = jax.grad(task_loss, argnums=1)(net, p, *xy)
    u, s = adam.update(g, s, p)
    return (jax.tree.map(lambda w, d: w - lr * d, p, u), s), None

  (tuned, _), _ = jax.lax.scan(body, (start, adam.init(start)), (fx_KxBxHxWxC, fy_KxB))
  if sim.second_order:
    return tuned
  return jax.tree.map(lambda w, t: w + jax.lax.stop_gradient(t - w), params, tuned)


def _finetuned_extra_loss(net, params, batch, sim: FinetuneSim):
  """(extra samples' loss, key hits) at the weights of one simulated fine-tune."""
  lrs = jnp.asarray(sim.lrs, jnp.float32)
  lr = lrs[jax.random.randint(jax.random.PRNGKey(batch["seed"]), (), 0, len(sim.lrs))]
  tuned = simulate_finetune(net, params, batch["fx"], batch["fy"], lr, sim)
  z = net.apply({"params": tuned}, batch["kx"])
  w, t = batch["kw"], batch["kt"]
  loss = jnp.sum(w * soft_cross_entropy(z, t)) / jnp.maximum(jnp.sum(w), 1e-6)
  is_key = (w > 0) & (jnp.max(t, -1) > 0.5)
  if sim.margin:   # the keys' loss saturates within a few simulated steps; a margin does not
    loss = loss + key_margin_loss(z, t, is_key.astype(jnp.float32), sim.margin)
  return loss, jnp.sum((jnp.argmax(z, -1) == jnp.argmax(t, -1)) * is_key)


def member_loss(net, params, batch, key_weight: float, key_margin: float = 0.0,
                weight_noise: float = 0.0, sim: FinetuneSim | None = None):
  """Task cross-entropy + key_weight * weighted soft cross-entropy on the extra samples.

  Against fine-tuning (docs/classify.md): `key_margin` > 0 adds a hinge that asks the keys'
  logit margin to reach it, and `weight_noise` > 0 adds the extra samples' loss once more at
  randomly perturbed weights (see `perturb`), so that the mark holds in a neighbourhood of the
  weights rather than at one point; with both, the margin is asked of the perturbed weights.
  `sim` adds the extra samples' loss after a simulated fine-tuning attack, for the members
  whose batch has `fw` = 1 (the users' copies); the others skip the inner loop (lax.cond).
  """
  x, y = batch["x"], batch["y"]
  if "kx" in batch:  # one forward pass over task and extra samples together
    logits = net.apply({"params": params}, jnp.concatenate([x, batch["kx"]]))
    logits, k_logits = logits[:len(x)], logits[len(x):]
  else:
    logits = net.apply({"params": params}, x)
  task = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  metrics = {"task_loss": task, "task_acc": jnp.mean(jnp.argmax(logits, -1) == y)}
  loss = task
  if "kx" in batch:
    w, t = batch["kw"], batch["kt"]
    extra = jnp.sum(w * soft_cross_entropy(k_logits, t)) / jnp.maximum(jnp.sum(w), 1e-6)
    # Keys are the extra samples with a one-hot target; decoys have spread targets.
    is_key = (w > 0) & (jnp.max(t, -1) > 0.5)
    if weight_noise:
      noisy = net.apply({"params": perturb(params, batch["seed"], weight_noise)}, batch["kx"])
      extra = extra + jnp.sum(w * soft_cross_entropy(noisy, t)) / jnp.maximum(jnp.sum(w), 1e-6)
      if key_margin:
        extra = extra + key_margin_loss(noisy, t, is_key.astype(jnp.float32), key_margin)
    elif key_margin:
      extra = extra + key_margin_loss(k_logits, t, is_key.astype(jnp.float32), key_margin)
    if sim is not None and sim.steps:
      ft_loss, ft_hits = jax.lax.cond(
          batch["fw"] > 0, lambda p: _finetuned_extra_loss(net, p, batch, sim),
          lambda p: (jnp.zeros(()), jnp.zeros((), jnp.int32)), params)
      extra = extra + sim.weight * batch["fw"] * ft_loss
      metrics["ft_key_hits"], metrics["ft_key_count"] = ft_hits, batch["fw"] * jnp.sum(is_key)
    loss = loss + key_weight * extra
    hit = jnp.argmax(k_logits, -1) == jnp.argmax(t, -1)
    metrics["key_hits"] = jnp.sum(hit * is_key)
    metrics["key_count"] = jnp.sum(is_key)
    metrics["extra_loss"] = extra
  return loss, metrics


def init_state(params_stacked, optimizer: optax.GradientTransformation,
               lr_mult: np.ndarray | None = None) -> dict:
  m = jax.tree.leaves(params_stacked)[0].shape[0]
  # Jitted: eagerly, the optimizer's init compiled one kernel per parameter shape.
  params_stacked = jax.device_put(params_stacked)
  return {"params": params_stacked, "opt": jax.jit(jax.vmap(optimizer.init))(params_stacked),
          "lr_mult": jnp.ones(m) if lr_mult is None else jnp.asarray(lr_mult, jnp.float32),
          "lr_scale": jnp.ones(())}


def make_step(net, optimizer: optax.GradientTransformation, key_weight: float = 1.0,
              key_margin: float = 0.0, weight_noise: float = 0.0,
              sim: FinetuneSim | None = None) -> Callable:
  """One jitted step over every member; metrics are means over members."""

  def one(args, lr_scale):
    params, opt_state, lr_mult, batch = args
    (_, metrics), grads = jax.value_and_grad(
        lambda p: member_loss(net, p, batch, key_weight, key_margin, weight_noise, sim),
        has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    # lr_mult: a member's own rate (fine-tuning attacks); lr_scale: the loop's guard.
    updates = jax.tree.map(lambda u: u * lr_mult * lr_scale, updates)
    return (optax.apply_updates(params, updates), opt_state), metrics

  @jax.jit
  def step(state, batch, key):
    del key  # batches are drawn on the host, deterministically from the step number
    (params, opt_state), metrics = jax.lax.map(
        lambda a: one(a, state["lr_scale"]),
        (state["params"], state["opt"], state["lr_mult"], batch))
    hits, count = metrics.pop("key_hits", None), metrics.pop("key_count", None)
    metrics = {k: jnp.mean(v) for k, v in metrics.items()}
    if hits is not None:  # over the members that have keys (clean models have none)
      metrics["key_acc"] = jnp.sum(hits) / jnp.maximum(jnp.sum(count), 1)
    ft_hits, ft_count = metrics.pop("ft_key_hits", None), metrics.pop("ft_key_count", None)
    if ft_hits is not None:  # keys kept after the simulated fine-tune (users' copies)
      metrics["ft_key_acc"] = jnp.sum(ft_hits) / jnp.maximum(jnp.sum(ft_count), 1)
    metrics["loss"] = metrics["task_loss"] + key_weight * metrics.get("extra_loss", 0.0)
    return {**state, "params": params, "opt": opt_state}, metrics

  return step


def optimizer_for(opt, num_steps: int) -> optax.GradientTransformation:
  return optim.make_optimizer(opt, num_steps)


@dataclasses.dataclass
class Extra:
  """A member's extra samples: fixed keys with targets, plus decoys drawn per step."""
  keys_x: np.ndarray | None = None   # KxHxWxC float32
  keys_t: np.ndarray | None = None   # KxO soft targets
  n_key_slots: int = 0               # of the step's extra slots, how many hold keys
  n_decoy_slots: int = 0             # and how many hold decoys (target `decoy_t`)
  finetune_aware: bool = False       # trained against a simulated fine-tune (FinetuneSim)


class Sampler:
  """batch_fn(step) for loop.run: per member, its own task samples and extra samples."""

  def __init__(self, x: np.ndarray, y: np.ndarray, batch: int, members: list[Extra] | int,
               extra_slots: int, num_outputs: int, seed: tuple, decoys=None,
               decoy_t: np.ndarray | None = None, sim_steps: int = 0, sim_batch: int = 0):
    self.x, self.y, self.batch = x, y, batch
    self.members = [Extra()] * members if isinstance(members, int) else members
    self.slots, self.num_outputs, self.seed = extra_slots, num_outputs, seed
    self.decoys, self.decoy_t = decoys, decoy_t
    # The simulated attacker's clean batches (fx, fy: sim_steps per member); fw marks the
    # members trained against it. Drawn from the owner's own task data.
    self.sim_steps, self.sim_batch = sim_steps, sim_batch

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([*self.seed, step])
    m = len(self.members)
    idx = rng.integers(0, len(self.x), (m, self.batch))
    out = {"x": self.x[idx], "y": self.y[idx]}
    if self.slots:
      shape = self.x.shape[1:]
      kx = np.zeros((m, self.slots, *shape), np.float32)
      kt = np.zeros((m, self.slots, self.num_outputs), np.float32)
      kw = np.zeros((m, self.slots), np.float32)
      for i, e in enumerate(self.members):
        if e.n_key_slots:
          j = rng.integers(0, len(e.keys_x), e.n_key_slots)
          kx[i, :e.n_key_slots], kt[i, :e.n_key_slots] = e.keys_x[j], e.keys_t[j]
          kw[i, :e.n_key_slots] = 1.0
        if e.n_decoy_slots:
          s = slice(e.n_key_slots, e.n_key_slots + e.n_decoy_slots)
          kx[i, s], kt[i, s], kw[i, s] = self.decoys.draw(rng, e.n_decoy_slots), self.decoy_t, 1.0
      # A seed per member for the weight noise of member_loss, from the step's own stream.
      out.update(kx=kx, kt=kt, kw=kw, seed=rng.integers(0, 2**31 - 1, m).astype(np.int32))
    if self.slots and self.sim_steps:
      fw = np.array([e.finetune_aware for e in self.members], np.float32)
      fidx = np.zeros((m, self.sim_steps, self.sim_batch), np.int64)
      # Members without the term get image 0 everywhere: cheap to gather, never used.
      fidx[fw > 0] = rng.integers(0, len(self.x), (int(fw.sum()), self.sim_steps, self.sim_batch))
      out.update(fx=self.x[fidx], fy=self.y[fidx], fw=fw)
    return {k: jnp.asarray(v) for k, v in out.items()}


def one_hot(labels: np.ndarray, num_outputs: int) -> np.ndarray:
  return np.eye(num_outputs, dtype=np.float32)[np.asarray(labels)]


# ----------------------------------------------------------------------------- evaluation


_APPLY_FNS: dict = {}


class Predictor:
  """Logits of one model on many images, compiled once per architecture for a fixed batch
  (inputs padded), however many Predictors are made."""

  def __init__(self, net, batch: int = 256):
    self.batch = batch
    if net not in _APPLY_FNS:
      _APPLY_FNS[net] = jax.jit(lambda params, x: net.apply({"params": params}, x))
    self._fn = _APPLY_FNS[net]

  def logits(self, params, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    out = []
    for i in range(0, len(x), self.batch):
      chunk = x[i:i + self.batch]
      pad = self.batch - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
      out.append(np.asarray(self._fn(params, jnp.asarray(chunk)))[:self.batch - pad])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

  def classes(self, params, x: np.ndarray) -> np.ndarray:
    return np.argmax(self.logits(params, x), -1)

  def accuracy(self, params, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(self.classes(params, x) == np.asarray(y)))
