"""The three data splits (protect / attack / val) and how a list of photos is dealt into them.

A user folder, or the records of a tfds split, are dealt by position in their order: item i goes
to `FOLDER_PATTERN[i % 10]` (P = protect, A = attack, V = val), i.e. 5 : 3 : 2, and any 3 items
cover all three splits. The builtin photos have a fixed split of their own (data/sources.py).
"""
from deepwm_jax.errors import DeepwmError

SPLITS = ("protect", "attack", "val")

FOLDER_PATTERN = "PAVPAPVPAP"
_PATTERN_SPLIT = {"P": "protect", "A": "attack", "V": "val"}


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise DeepwmError(f"unknown data split '{split}'; use one of {', '.join(SPLITS)}")


def split_images(images: list, split: str) -> list:
  """The items of `images` that belong to `split` under FOLDER_PATTERN (see module doc)."""
  check_split(split)
  if len(images) < 3:
    raise DeepwmError(f"a data folder needs at least 3 images (one each for protect, attack and "
                      f"val) but has {len(images)}; add more images")
  return [img for i, img in enumerate(images)
          if _PATTERN_SPLIT[FOLDER_PATTERN[i % len(FOLDER_PATTERN)]] == split]
