"""Parameter counts of the networks a config builds (no training: shapes only)."""
import jax
import jax.numpy as jnp

from deepwm_jax import models


def _count(model, *shapes):
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  v = jax.eval_shape(lambda k, *a: model.init(k, *a, train=False), jax.random.PRNGKey(0), *args)
  return int(sum(x.size for x in jax.tree.leaves(v["params"])))


def describe_config(cfg) -> dict:
  s, c = cfg.data.image_size, cfg.data.channels
  x, w = (1, s, s, c), (s, s, c)
  out = {"embedder": _count(models.embedder(cfg), x, w),
         "extractor": _count(models.extractor(cfg), x),
         "discriminator": _count(models.discriminator(cfg), x)}
  if cfg.task.source == "train":
    out["task"] = _count(models.image_model(cfg.task, c, s), x)
  else:
    out["task"] = None  # a user callable: not ours to count
  out["image_size"], out["channels"] = s, c
  return out


def describe_kit(path) -> dict:
  from deepwm_jax import kit as kit_lib
  kit = kit_lib.load_kit(path)
  if hasattr(kit, "describe"):  # a kit without networks (traditional.TraditionalKit)
    return kit.describe()
  return {"image_size": kit.image_size, "channels": kit.channels,
          "embedder": models.count_params(kit.embedder_vars),
          "extractor": models.count_params(kit.extractor_vars),
          "owner": kit.info.get("owner"), "created": kit.info.get("created"),
          "package_version": kit.info.get("package_version")}
