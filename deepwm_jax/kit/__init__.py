"""The verification kit: everything an owner shares to prove ownership later.

  files        the kit's layout on disk, its SHA-256 manifest, atomic writes, provenance
  deep         the deep kit (H and R): embed, extract, verify
  keyed        the keyed kit (H and R trained over random keys, the owner's secret key)
  traditional  the spread-spectrum kit (a key, no networks)
  keyed_filter the keyed-filter kit (the owner's secret key, no networks)

`load_kit(path)` checks the manifest and returns the kit of the kind kit.json says.
"""
import os

from deepwm_jax.errors import DeepwmError

from deepwm_jax.kit import deep, files, keyed, keyed_filter, traditional
from deepwm_jax.kit.deep import Kit, write_kit
from deepwm_jax.kit.files import (KIT_FORMAT, KIT_KIND, MODEL_NULL_FILE, NULL_FILE,
                                  NULL_SOURCES_FILE, digests, model_null_record, null_record,
                                  provenance, publish, read_info, republish, save_null)

__all__ = ["Kit", "load_kit", "write_kit", "deep", "files", "keyed", "keyed_filter",
           "traditional", "KIT_FORMAT",
           "KIT_KIND", "MODEL_NULL_FILE", "NULL_FILE", "NULL_SOURCES_FILE", "digests",
           "model_null_record", "null_record", "provenance", "publish", "read_info",
           "republish", "save_null"]


def require_calibrated(kit, command: str) -> None:
  """Tools built on the calibrated statistic (the false-claim study, recalibrate) refuse a
  keyed kit in one line: its verdict is the exact key test, which needs no calibration."""
  if getattr(kit, "method", None) in ("keyed", "filter"):
    raise DeepwmError(f"kit '{kit.path}' is a {kit.method} kit, which has no calibration; "
                      f"`{command}` works on deep and traditional kits only (for its false-claim "
                      f"study run `deepwm attack --config configs/zoo_innocent.py`)")


def load_kit(path: str):
  """The kit at `path` (a `deep.Kit`, `keyed.KeyedKit`, `keyed_filter.FilterKit` or
  `traditional.TraditionalKit`), manifest checked."""
  path = os.path.abspath(path)
  info = files.read_info(path, KIT_KIND, KIT_FORMAT)
  if info.get("method", "deep") == "traditional":  # spread spectrum, no networks
    return traditional.load(path, info)
  if info.get("method") == "keyed":  # H and R over random keys, the owner's key
    return keyed.load(path, info)
  if info.get("method") == "filter":  # the keyed filter, the owner's key, no networks
    return keyed_filter.load(path, info)
  return deep.load(path, info)
