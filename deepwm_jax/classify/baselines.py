"""Baseline watermarks for the robustness table, trained like the method's copies:

  logo      Zhang et al. (2018) content watermark: training digits with a mark stamped on,
            relabelled to one target class.
  noise     Zhang et al. (2018) noise watermark: training digits plus Gaussian noise,
            relabelled to the target class.
  frontier  Le Merrer et al. (2017) adversarial frontier stitching: FGSM examples of a trained
            clean model near its decision boundary, half still correctly classified (false
            adversaries) and half not (true adversaries), all with their true labels; the clean
            model is then fine-tuned until it classifies them correctly.

Each baseline's watermark accuracy is the fraction of its key images classified as its label.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deepwm_jax.data import watermarks


def _sources(cfg, x: np.ndarray, y: np.ndarray, n: int, tag: int) -> np.ndarray:
  """Training digits not of the target class (else relabelling would not change them)."""
  pool = np.flatnonzero(y != cfg.baselines.target_class)
  return x[np.random.default_rng([cfg.seed, tag]).choice(pool, n, replace=False)]


def logo_keys(cfg, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  d = cfg.data
  mark = 1.0 - watermarks.text_image("WM", d.image_size // 2, d.channels)  # bright on dark
  base = _sources(cfg, x, y, cfg.baselines.n_keys, 401).copy()
  h = d.image_size // 2
  base[:, h:, h:] = np.maximum(base[:, h:, h:], mark)   # bottom-right corner
  return base, np.full(len(base), cfg.baselines.target_class, np.int32)


def noise_keys(cfg, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  base = _sources(cfg, x, y, cfg.baselines.n_keys, 402)
  noise = np.random.default_rng([cfg.seed, 403]).normal(0, cfg.baselines.noise_std, base.shape)
  return (np.clip(base + noise, 0, 1).astype(np.float32),
          np.full(len(base), cfg.baselines.target_class, np.int32))


def frontier_keys(cfg, net, params, x: np.ndarray, y: np.ndarray,
                  predictor) -> tuple[np.ndarray, np.ndarray]:
  """FGSM examples of the clean model `params`, half true and half false adversaries."""
  n = cfg.baselines.n_keys
  rng = np.random.default_rng([cfg.seed, 404])
  order = rng.permutation(len(x))[:min(len(x), 8 * n)]
  xs, ys = x[order], y[order]

  @jax.jit
  def grad_x(p, xb, yb):
    loss = lambda xx: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
        net.apply({"params": p}, xx), yb))
    return jax.grad(loss)(xb)

  g = np.concatenate([np.asarray(grad_x(params, jnp.asarray(xs[i:i + 256]),
                                        jnp.asarray(ys[i:i + 256])))
                      for i in range(0, len(xs), 256)])
  adv = np.clip(xs + cfg.baselines.frontier_eps * np.sign(g), 0, 1).astype(np.float32)
  wrong = predictor.classes(params, adv) != ys
  true_adv, false_adv = np.flatnonzero(wrong), np.flatnonzero(~wrong)
  k = min(n // 2, len(true_adv), len(false_adv))
  pick = np.concatenate([true_adv[:k], false_adv[:n - k]])
  return adv[pick], ys[pick]
