"""The report's "after serving" study: every group of held-out outputs (the watermarked ones,
the imitators', the innocent ones) JPEG-compressed, resized, cropped, blurred or noised as a
served image is, then judged in sets.

Each distortion (evaluate.served, zoo/removal.py's grammar: the real JPEG codec, bicubic
resizes, Gaussian blur and noise, all keeping the image's size) is applied to every image of a
group; the group's images are split into sets of evaluate.set_size and each set is judged as a
suspect's set is. A watermarked group should have every set detected under every distortion,
an innocent group none: the exact test's bound holds whatever happened to the images, since
what R reads from an image without the key stays independent of the key.
"""
import numpy as np

from deepwm_jax import secret_key
from deepwm_jax.zoo import removal


def set_slices(n: int, set_size: int) -> list[slice]:
  """Consecutive sets of `set_size` images; fewer than that many images make one set."""
  if n <= set_size:
    return [slice(0, n)]
  return [slice(i, i + set_size) for i in range(0, n - set_size + 1, set_size)]


def study(read, groups: dict[str, tuple[str, np.ndarray]], key: np.ndarray, alpha: float,
          specs, set_size: int, seed: int = 0) -> dict:
  """`read(images) -> readings [N, bits]`; `groups`: name -> (role, images [N, S, S, C]).

  Returns {"set_size", "specs", "groups": {name: {"role", "rows": {spec: record}}},
  "innocent": summary}, a record holding the sets detected, their median and smallest
  p-values, and the share of images detected alone."""
  out = {"set_size": int(set_size), "specs": list(specs), "groups": {}}
  n_sets = n_claims = 0
  for g, (name, (role, images)) in enumerate(groups.items()):
    rows = {}
    for s, spec in enumerate(specs):
      x = removal.apply(spec, images, seed=seed + 1000 * g + s)  # noise: its own draws
      v = np.asarray(read(x), np.float64)
      ps = [secret_key.decide(v[sl], key, alpha).p_value for sl in set_slices(len(v), set_size)]
      alone = secret_key.decide(v, key, alpha)
      rows[spec] = {"sets": len(ps), "sets_detected": int(sum(p <= alpha for p in ps)),
                    "median_set_p": float(np.median(ps)), "smallest_set_p": float(min(ps)),
                    "image_rate": alone.image_rate,
                    "mean_bits": float(np.mean(alone.matches_per_image))}
      if role == "innocent":
        n_sets += len(ps)
        n_claims += rows[spec]["sets_detected"]
    out["groups"][name] = {"role": role, "rows": rows}
  out["innocent"] = {"sets": n_sets, "sets_detected": n_claims}
  return out

