"""What every `deepwm` command shares: its parser (one-line errors), the --kit, --json and
--config options with the same meaning everywhere, and writing a JSON result.

Kept apart from cli.py so that the command groups registered there (deepwm_jax/zoo/commands.py,
deepwm_jax/classify/commands.py) use the same options without importing the entry point.
"""
import argparse
import json
import sys

OVERRIDES_HELP = ("Any config key can be overridden with --config.KEY=VALUE (or --config.KEY "
                  "VALUE), e.g. --config.stage1.steps=100; an unknown key or a bad value stops "
                  "before any work.")


class UsageError(Exception):
  """A bad command line: argparse's message, raised instead of printing usage and exiting."""


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors (exit 2 from cli.main) instead of usage + a second line."""

  def error(self, message):
    raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


def add_kit(p, required: bool = True, what: str = "the kit/ folder written by `deepwm run`"):
  p.add_argument("--kit", required=required, metavar="KIT", help=what)


def add_json(p, what: str = "the result"):
  """--json FILE: also write `what` as JSON to FILE; --json alone or --json - prints it."""
  p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                 help=f"also write {what} as JSON to FILE ('-' or no FILE: standard output)")


def add_config(p, required: bool = True, what: str = "config"):
  p.add_argument("--config", required=required, metavar="CONFIG",
                 help=f"{what}: a file with get_config(), or the name of a shipped config "
                      "(e.g. quickstart, zoo_quick)")


def write_json(path: str | None, obj) -> None:
  """The --json option's output: nothing, standard output ('-'), or a file."""
  if path is None:
    return
  text = json.dumps(obj, indent=1, default=jsonable)
  if path == "-":
    print(text)
  else:
    with open(path, "w") as f:
      f.write(text + "\n")


def jsonable(x):
  import numpy as np
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(type(x))


def log(msg):
  print(msg, file=sys.stderr, flush=True)
