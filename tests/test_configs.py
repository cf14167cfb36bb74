"""The shipped configs (deepwm_jax/configs): each loads and validates, loads at most one parent
(which itself builds on a base_config), and opens with what it is for and its command."""
import ast
import os
import re

import pytest

from deepwm_jax import config
from deepwm_jax.classify import config as classify_config
from deepwm_jax.zoo import config as zoo_config, grid

NAMES = config.shipped_configs()
PACKAGE = "deepwm_jax.configs"
# Calls that would load another config file behind the import rule's back.
LOADERS = {"load", "spec_from_file_location", "exec_module", "import_module", "run_path",
           "exec", "__import__"}


def _source(name):
  with open(config.resolve(name)) as f:
    return f.read()


def _parents(name) -> list[str]:
  """The configs a config file imports (as shipped names); fails on any other way of loading
  a config file."""
  parents = []
  for node in ast.walk(ast.parse(_source(name))):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
      sub = node.module[len(PACKAGE):].lstrip(".")
      if sub and sub != "studies":  # from deepwm_jax.configs.quickstart import get_config
        parents.append(sub.replace(".", "/"))
      else:
        parents += [f"{sub}/{a.name}" if sub else a.name for a in node.names]
    elif isinstance(node, ast.Import):
      for alias in node.names:
        assert not alias.name.startswith(PACKAGE), f"{name}: write `from {PACKAGE} import X`"
        assert alias.name.split(".")[0] not in ("importlib", "runpy"), \
            f"{name} imports {alias.name}: load a parent with `from {PACKAGE} import X`"
    elif isinstance(node, ast.ImportFrom):
      assert (node.module or "").split(".")[0] not in ("importlib", "runpy"), name
    elif isinstance(node, ast.Call):
      func = node.func
      called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
      assert called not in LOADERS, \
          f"{name} calls {called}(): load a parent with `from {PACKAGE} import X`"
  return parents


def test_the_shipped_configs_are_found():
  for name in ("quickstart", "quickstart_band", "tiny", "zoo_quick", "classify_digits",
               "studies/quickstart_cnn_s2"):
    assert name in NAMES
  assert not any(n.startswith("_") or "/_" in n for n in NAMES)
  # configs/NAME.py from the repository root (the `configs` link) and the bare name agree.
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.join(repo, "configs", "studies", "quickstart_cnn_s2.py")
  assert os.path.samefile(config.resolve(path), config.resolve("studies/quickstart_cnn_s2"))


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_config_loads_and_validates(name):
  cfg = config.load(name)
  if "sweeps" in cfg:                                   # a zoo config
    cfg = zoo_config.load(config.resolve(name))
    assert grid.expand(cfg)
  elif os.path.basename(name).startswith("classify_"):  # a classifier config
    classify_config.validate(cfg)
  else:
    config.validate(cfg)


@pytest.mark.parametrize("name", NAMES)
def test_a_config_loads_at_most_one_parent_which_builds_on_a_base_config(name):
  parents = _parents(name)
  assert len(parents) <= 1, f"{name} loads {parents}: one parent at most"
  for parent in parents:
    assert parent in NAMES, f"{name}'s parent {parent} is not a shipped config"
    assert not parent.startswith("studies/"), f"{name} builds on a study config ({parent})"
    assert _parents(parent) == [], f"{name}'s parent {parent} loads a parent of its own"
    assert "base_config" in _source(parent)


@pytest.mark.parametrize("name", NAMES)
def test_a_config_docstring_says_what_it_is_for_then_its_command(name):
  doc = ast.get_docstring(ast.parse(_source(name)), clean=False)
  assert doc, f"{name} has no docstring"
  lines = doc.strip("\n").split("\n")
  blank = lines.index("") if "" in lines else len(lines)
  assert 1 <= blank <= 2, f"{name}: say what it is for in at most two lines, then a blank line"
  command = lines[blank + 1].strip()
  assert command.startswith("deepwm ") and f"--config configs/{name}.py" in command, \
      f"{name}: the line after the blank line must be its command"


@pytest.mark.parametrize("name", NAMES)
def test_configs_carry_no_study_history(name):
  source = _source(name)
  for pattern in (r"METHOD\.md", r"PERFORMANCE\.md", r"quickstart_study", r"docs/tfds\.md",
                  r"(?i)\bsessions?\b", r"(?i)\bissues?\b", r"#\d"):
    assert not re.search(pattern, source), f"{name} mentions {pattern}"


def _without(cfg, **paths):
  """`cfg` as a dict with the dotted `paths` set to the given values."""
  cfg = cfg.copy_and_resolve_references()
  for path, value in paths.items():
    *head, last = path.split("__")
    node = cfg
    for key in head:
      node = node[key]
    node[last] = value
  return cfg.to_dict()


def test_quickstart_variants_change_only_what_they_say():
  qs = config.load("quickstart")
  p = qs.protect
  one = lambda name, **paths: _without(config.load(name), **paths) == qs.to_dict()
  assert one("quickstart_specific", protect__strategy=p.strategy,
             protect__absorb__steps=p.absorb.steps)
  assert one("quickstart_traditional", protect__method=p.method)
  assert one("protect_dataset", task__source=qs.task.source)
  assert one("protect_classical", task__source=qs.task.source, data__task=qs.data.task)
  assert one("quickstart_payload", watermark=qs.watermark)
  assert config.load("quickstart_payload").watermark.spec == "payload" != qs.watermark.spec
  # quickstart_band(_specific) against quickstart: tests/test_embedder.py.

