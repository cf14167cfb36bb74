"""The one grammar of attack specs: 'kind', 'kind:value', joined by '+' (augment.py and
removal.py).

`kinds` maps each kind to None (it takes no value) or (type, description of valid values,
validity check, example value). Errors are DeepwmErrors naming the spec and what would be valid.
"""
from deepwm_jax.errors import DeepwmError


def parse(spec: str, kinds: dict, noun: str) -> list[tuple[str, float | int | None]]:
  """'jpeg:50+blur:1.0' -> [('jpeg', 50), ('blur', 1.0)]."""
  if not isinstance(spec, str) or not spec.strip():
    raise DeepwmError(f"{noun} {spec!r} is empty; use one of {', '.join(kinds)} "
                      f"(e.g. {_example(kinds)}), or several joined by '+'")
  out = []
  for part in spec.strip().split("+"):
    kind, _, raw = part.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in kinds:
      raise DeepwmError(f"unknown {noun} {kind!r} in {spec!r}; use one of {', '.join(kinds)} "
                        f"(e.g. {_example(kinds)})")
    if kinds[kind] is None:
      if raw:
        raise DeepwmError(f"{noun} {kind!r} takes no value (got {part!r})")
      out.append((kind, None))
      continue
    typ, what, ok, example = kinds[kind]
    try:
      value = float(raw)
      value = int(value) if typ is int and value.is_integer() else typ(raw)
    except ValueError:
      value = None
    if value is None or not ok(value):
      raise DeepwmError(f"{noun} {part!r} needs {what}, e.g. {kind}:{example}")
    out.append((kind, value))
  return out


def _example(kinds: dict) -> str:
  valued = [(k, v[3]) for k, v in kinds.items() if v is not None][:2]
  return "'" + "+".join(f"{k}:{e}" for k, e in valued) + "'"
