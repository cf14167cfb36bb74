"""The report's "after serving" study: every group of held-out outputs (the watermarked ones,
the imitators', the innocent ones) JPEG-compressed, resized, cropped, blurred or noised as a
served image is, then judged in sets.

Each distortion (evaluate.served, zoo/removal.py's grammar: the real JPEG codec, bicubic
resizes, Gaussian blur and noise, all keeping the image's size) is applied to every image of a
group; the group's images are split into sets of evaluate.set_size and each set is judged as a
suspect's set is, by the kit's own decision. A watermarked group should have every set
detected under every distortion, an innocent group none. A keyed kit's exact bound holds
whatever happened to the images (what R reads from an image without the key stays
independent of the key); a deep kit's calibration saw no distorted negatives, so this study
is where a distortion that makes innocent images look watermarked would show.
"""
import numpy as np

from deepwm_jax import secret_key
from deepwm_jax.zoo import removal


def set_slices(n: int, set_size: int) -> list[slice]:
  """Consecutive sets of `set_size` images; fewer than that many images make one set."""
  if n <= set_size:
    return [slice(0, n)]
  return [slice(i, i + set_size) for i in range(0, n - set_size + 1, set_size)]


def study(judge, groups: dict[str, tuple[str, np.ndarray]], specs, set_size: int,
          seed: int = 0, references: np.ndarray | None = None) -> dict:
  """`judge(images) -> (set p-value, set detected, share of images detected alone)`, the kit's
  own decision on one set; `groups`: name -> (role, images [N, S, S, C]), a role of
  'innocent' for groups that must never be detected. With `references` (the owner's outputs
  for every group's inputs, undistorted) the judge is called as judge(images, references).

  Returns {"set_size", "specs", "groups": {name: {"role", "rows": {spec: record}}},
  "innocent": {"sets", "sets_detected"}}, a record holding the sets detected, their median and
  smallest p-values and the share of images detected alone."""
  out = {"set_size": int(set_size), "specs": list(specs), "groups": {}}
  n_sets = n_claims = 0
  for g, (name, (role, images)) in enumerate(groups.items()):
    rows = {}
    for s, spec in enumerate(specs):
      x = removal.apply(spec, images, seed=seed + 1000 * g + s)  # noise: its own draws
      sets = [judge(x[sl]) if references is None else judge(x[sl], references[sl])
              for sl in set_slices(len(x), set_size)]
      ps = [float(p) for p, _, _ in sets]
      rows[spec] = {"sets": len(sets), "sets_detected": int(sum(bool(d) for _, d, _ in sets)),
                    "median_set_p": float(np.median(ps)), "smallest_set_p": float(min(ps)),
                    "image_rate": float(np.mean([rate for _, _, rate in sets]))}
      if role == "innocent":
        n_sets += len(sets)
        n_claims += rows[spec]["sets_detected"]
    out["groups"][name] = {"role": role, "rows": rows}
  out["innocent"] = {"sets": n_sets, "sets_detected": n_claims}
  return out


def keyed_judge(read, key, alpha: float):
  """The exact test of a keyed kit as a `judge`: `read(images) -> readings [N, bits]`."""
  def judge(x):
    v = secret_key.decide(read(x), key, alpha)
    return v.p_value, v.detected, v.image_rate
  return judge
