"""The kit's files: format, manifest, atomic publication, stored nulls and provenance.

Layout of a kit directory:
  state/          orbax checkpoint: embedder and extractor variables, watermark, blank
  kit.json        image size, channels, calibration, config, package version, provenance
  null.npz        the calibration null: the watermark scores of held-out negatives, one sorted
                  array per source (verdict.rank_pvalues); kits of an earlier version have
                  null.npy (the stage-2 negatives' scores, pooled), older kits none and verify
                  falls back to the binomial bound
  null_models.npy the model-level null (optional, deepwm_jax/stages/model_null.py): the watermark
                  scores of independently trained null models' outputs, one row per model
  manifest.json   SHA-256 of every other file; checked on load, so a truncated or altered kit
                  is refused instead of silently giving wrong verdicts.
Every kind of kit (deep, traditional, classify) shares this layout and these functions.
"""
import datetime
import getpass
import hashlib
import json
import os
import shutil
import tempfile
import zipfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from deepwm_jax.errors import DeepwmError

KIT_FORMAT = 1
KIT_KIND = "image"
# Which command writes each kind of kit, for the error that names the right one.
_WRITTEN_BY = {"image": "deepwm run", "classify": "deepwm classify run"}
NULL_FILE = "null.npy"  # pooled null (kits of an earlier version, tools/recalibrate.py)
NULL_SOURCES_FILE = "null.npz"  # per-source held-out null
MODEL_NULL_FILE = "null_models.npy"  # model-level null (stages/model_null.py)


def save_null(folder: str, null) -> None:
  """Writes the calibration null into a kit folder: null.npz per source, null.npy pooled."""
  if isinstance(null, dict):
    np.savez(os.path.join(folder, NULL_SOURCES_FILE),
             **{k: np.asarray(v, np.float64) for k, v in null.items()})
  else:
    np.save(os.path.join(folder, NULL_FILE), np.asarray(null, np.float64))


def null_record(null, how: str = "written with the kit") -> dict:
  """kit.json's pointer to the stored calibration null (deepwm_jax/verdict.py, `decide`)."""
  if isinstance(null, dict):
    return {"file": NULL_SOURCES_FILE, "n": int(sum(v.size for v in null.values())),
            "sources": {k: int(v.size) for k, v in null.items()}, "how": how,
            "what": "verdict.watermark_score of held-out calibration negatives (never seen in "
                    "stage 2), one sorted float64 array per source"}
  return {"file": NULL_FILE, "n": int(np.size(null)), "how": how,
          "what": "verdict.watermark_score of every calibration negative, sorted (float64)"}


def model_null_record(scores, how: str) -> dict:
  """kit.json's pointer to the model-level null (deepwm_jax/model_null.py)."""
  return {"file": MODEL_NULL_FILE, "n_models": int(scores.shape[0]),
          "n_images": int(scores.shape[1]), "how": how,
          "what": "verdict.watermark_score of each null model's outputs on held-out inputs, one "
                  "row per model (float64); verify ranks a set among the models by its images "
                  "over the threshold, then its mean score"}


def load_null(path: str, info: dict) -> np.ndarray | dict[str, np.ndarray] | None:
  """The kit's calibration null (per source, or pooled for kits of an earlier version), or None
  for kits written before it existed."""
  record = info.get("calibration_null")
  if not record:
    return None
  file = os.path.join(path, str(record.get("file", "")))
  try:
    if file.endswith(".npz"):
      with np.load(file, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    else:
      loaded = np.load(file, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DeepwmError(f"kit '{path}': its calibration null is unreadable ({type(e).__name__}); "
                      f"copy the whole kit folder again") from None
  arrays = loaded if isinstance(loaded, dict) else {"": loaded}
  want = record.get("sources") if isinstance(loaded, dict) else {"": record.get("n", -1)}
  if (not isinstance(want, dict) or set(want) != set(arrays)
      or any(a.ndim != 1 or a.size != int(want[k]) or a.size == 0 or not np.all(np.isfinite(a))
             for k, a in arrays.items())):
    raise DeepwmError(f"kit '{path}': its calibration null does not match kit.json; re-create "
                      f"the kit")
  sorted_arrays = {k: np.sort(a) for k, a in arrays.items()}
  return sorted_arrays if isinstance(loaded, dict) else sorted_arrays[""]


def load_model_null(path: str, info: dict) -> np.ndarray | None:
  """The kit's model-level null (models x images scores), or None for kits without one."""
  record = info.get("calibration_model_null")
  if not record:
    return None
  try:
    a = np.load(os.path.join(path, MODEL_NULL_FILE), allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DeepwmError(f"kit '{path}': its model-level null is unreadable ({type(e).__name__}); "
                      f"copy the whole kit folder again") from None
  if (a.ndim != 2 or list(a.shape) != [record.get("n_models"), record.get("n_images")]
      or not np.all(np.isfinite(a))):
    raise DeepwmError(f"kit '{path}': its model-level null does not match kit.json; rebuild it "
                      f"with `python -m deepwm_jax.tools.model_null`")
  return a


def republish(kit_path: str, out: str, info: dict, write_files, drop=()) -> str:
  """A copy of the kit at `out` with kit.json replaced by `info`, the files in `drop` left out,
  and `write_files(folder)` adding its own; `out` must be new, and the original is only read.
  Used to give an existing kit a new calibration (deepwm_jax.tools.recalibrate, .model_null)."""
  kit_path, out = os.path.abspath(kit_path), os.path.abspath(out)
  if os.path.exists(out):
    raise DeepwmError(f"'{out}' already exists; give a new folder for the new kit")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".kit-", dir=os.path.dirname(out))
  try:
    shutil.copytree(kit_path, tmp, dirs_exist_ok=True)
    for name in ("manifest.json", *drop):
      if os.path.exists(os.path.join(tmp, name)):
        os.remove(os.path.join(tmp, name))
    write_files(tmp)
    publish(tmp, out, info)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def header(cfg, method: str, owner: str | None, image_size: int, channels: int) -> dict:
  """The fields every kit.json opens with (kind, format, method, provenance, size, alpha)."""
  import deepwm_jax  # the package's version; the package imports this module first
  return {"kind": KIT_KIND, "format": KIT_FORMAT, "method": method,
          "package_version": deepwm_jax.__version__, "created": now(),
          "owner": owner or user(), "image_size": int(image_size), "channels": int(channels),
          "alpha": float(cfg.evaluate.alpha)}


def write_new(path: str, write_files) -> str:
  """Writes a kit at `path` atomically: `write_files(folder)` fills a staging folder and returns
  kit.json's dict, then `publish` moves it into place; on any error nothing is left behind."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".kit-", dir=parent)
  try:
    publish(tmp, path, write_files(tmp))
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def publish(tmp: str, path: str, info: dict) -> None:
  """Write kit.json and its SHA-256 manifest into the staging folder `tmp`, then move it to
  `path` in one rename, so a reader never sees a half-written kit (shared by every kit kind)."""
  with open(os.path.join(tmp, "kit.json"), "w") as f:
    json.dump(info, f, indent=1)
  with open(os.path.join(tmp, "manifest.json"), "w") as f:
    json.dump(digests(tmp), f, indent=1, sort_keys=True)
  if os.path.exists(path):
    old = path + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, path)

def checkpointer() -> ocp.StandardCheckpointer:
  """A kit is one process's business: in a multi-process run only process 0 writes it, and
  any process may read one, so orbax must not wait for the other processes."""
  if jax.process_count() == 1:
    return ocp.StandardCheckpointer()
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}))


def user():
  try:
    return getpass.getuser()
  except Exception:
    return "unknown"


def digests(root: str) -> dict[str, str]:
  """SHA-256 of every file under `root` but the manifest itself (what manifest.json holds)."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      full = os.path.join(dirpath, name)
      rel = os.path.relpath(full, root)
      if rel == "manifest.json":
        continue
      h = hashlib.sha256()
      with open(full, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
      out[rel] = h.hexdigest()
  return out


def check_manifest(path: str) -> None:
  if not os.path.isdir(path):
    raise DeepwmError(f"kit '{path}' not found; pass the kit/ folder written by `deepwm run`")
  manifest_path = os.path.join(path, "manifest.json")
  if not os.path.isfile(manifest_path):
    raise DeepwmError(f"kit '{path}' has no manifest.json; it is not a kit or is incomplete: "
                      f"copy the whole kit folder again")
  try:
    with open(manifest_path) as f:
      expected = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError):
    raise DeepwmError(f"kit '{path}': manifest.json is damaged; copy the kit again") from None
  actual = digests(path)
  missing = sorted(set(expected) - set(actual))
  if missing:
    raise DeepwmError(f"kit '{path}' is incomplete: missing {missing[0]}"
                      f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; "
                      f"copy the whole kit folder again")
  altered = sorted(k for k in expected if actual[k] != expected[k])
  if altered:
    raise DeepwmError(f"kit '{path}' was altered: {altered[0]} does not match its SHA-256 in "
                      f"manifest.json; use the original kit")


def kit_json(path: str) -> dict:
  try:
    with open(os.path.join(path, "kit.json")) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DeepwmError(f"kit '{path}': kit.json is unreadable ({type(e).__name__}); re-create "
                      f"the kit") from None

def read_info(path: str, kind: str, kit_format: int) -> dict:
  """kit.json of an intact kit of this kind and format (every kind of kit shares this layout)."""
  check_manifest(path)
  info = kit_json(path)
  found = info.get("kind", KIT_KIND)  # kits written before kinds existed were image kits
  if found != kind:
    raise DeepwmError(f"kit '{path}' is a {found!r} kit, not a {kind!r} kit; use the kit/ "
                      f"written by `{_WRITTEN_BY.get(kind, kind)}`")
  if info.get("format") != kit_format:
    raise DeepwmError(f"kit '{path}' has format {info.get('format')}, this deepwm_jax reads "
                      f"format {kit_format}; upgrade deepwm_jax or re-create the kit")
  return info


def provenance(path: str) -> dict:
  """`deepwm kit-info`: the kit's record (owner, time, version, config summary, SHA-256
  manifest, calibration, payload) after checking the manifest; loads no networks."""
  path = os.path.abspath(path)
  check_manifest(path)
  with open(os.path.join(path, "manifest.json")) as f:
    manifest = json.load(f)
  info = kit_json(path)
  cfg = info.get("config") or {}
  section = lambda k: cfg.get(k) if isinstance(cfg.get(k), dict) else {}
  out = {k: info.get(k) for k in ("kind", "format", "owner", "created", "package_version",
                                  "image_size", "channels", "alpha", "min_success_rate",
                                  "parameters")}
  out["package_version"] = out["package_version"] or "unknown (kit predates the field)"
  out["config"] = {
      "seed": cfg.get("seed"), "watermark": section("watermark").get("spec"),
      "data": {k: section("data").get(k) for k in ("source", "task", "image_size", "channels")},
      "steps": {k: section(k).get("steps") for k in ("task", "stage1", "stage2")},
      "config_sha256": hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":"))
                                      .encode()).hexdigest()}
  out["method"] = info.get("method", "deep")
  if isinstance(info.get("keyed"), dict):  # the key's size, never the key itself
    out["keyed"] = {k: info["keyed"].get(k) for k in ("bits", "cell")}
  if isinstance(info.get("filter"), dict):  # likewise
    out["filter"] = {k: info["filter"].get(k) for k in ("bits", "radius", "eps", "psnr_floor")}
  out["calibration"] = info.get("calibration")  # None: an older kit, verify refuses it
  out["calibration_null"] = info.get("calibration_null")  # None: p-values are the bound only
  out["calibration_model_null"] = info.get("calibration_model_null")  # None: none built
  record = info.get("payload")
  if isinstance(record, dict):
    from deepwm_jax import payload as payload_lib
    out["payload"] = {k: record.get(k) for k in ("message", "bits", "ecc_bytes", "n_coded",
                                                 "cell", "key", "data_hex")}
    out["payload"]["owner_binding_ok"] = payload_lib.binding(info)
    out["payload"]["calibration"] = record.get("calibration")
  out["manifest"] = manifest
  out["path"] = path
  return out




def now() -> str:
  """The kit's creation time: UTC, to the second."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
