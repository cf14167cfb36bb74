"""Writes a run's report: report.json (the numbers), report.md (for people) and figures.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot, so writing a report changes no global matplotlib state (notebooks keep their backend)
and is safe from worker threads.
"""
import json
import math
import os
import sys
import tempfile
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwm_jax.errors import DeepwmError

FIGURES_DIR = "figures"
PAPER_NC_THRESHOLD = 0.95
# Keys of a JSONL log record that are bookkeeping, not curves.
_NOT_CURVES = frozenset({"step", "time", "elapsed", "elapsed_s", "wall_s", "epoch"})


# ----------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
  """numpy/jax scalars and arrays to Python, non-finite floats to None (JSON has no NaN)."""
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, "to_dict") and callable(obj.to_dict):  # Verdict, Calibration
    return to_jsonable(obj.to_dict())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if obj is None or isinstance(obj, str):
    return obj
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if hasattr(obj, "__array__"):  # np.ndarray, jax.Array
    return to_jsonable(np.asarray(obj).tolist())
  raise TypeError(f"report value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _write_atomic(path: str, write) -> None:
  """Writes via a temporary file in the same directory, so readers never see half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text_atomic(path: str, text: str) -> None:
  _write_atomic(path, lambda f: f.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------- markdown


def _fmt(value: Any) -> str:
  """One table cell: short floats, '-' for missing, pipes escaped."""
  if value is None:
    return "-"
  if isinstance(value, (bool, np.bool_)):
    return "yes" if value else "no"
  if isinstance(value, (float, np.floating)):
    if not math.isfinite(value):
      return "-"
    return f"{value:.4g}"
  return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
  """A GitHub-markdown table; a row's missing key renders as '-'."""
  lines = ["| " + " | ".join(_fmt(c) for c in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
  return "\n".join(lines) + "\n"


def _pct(x: Any) -> str | None:
  if x is None or not isinstance(x, (int, float, np.number)) or not math.isfinite(x):
    return None
  return f"{100.0 * float(x):.1f}%"


def _pvalue(x: Any) -> str | None:
  if x is None or not isinstance(x, (int, float, np.number)) or not math.isfinite(x):
    return None
  return f"{float(x):.2e}"


# ----------------------------------------------------------------------------- figures


def save_figure(fig: Figure, path: str, dpi: int = 100) -> None:
  """Saves `fig` as PNG atomically and releases it."""
  if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
    FigureCanvasAgg(fig)
  _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
  # A figure made through pyplot stays alive in pyplot's registry until closed.
  pyplot = sys.modules.get("matplotlib.pyplot")
  if pyplot is not None:
    pyplot.close(fig)


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  return fig


def _as_display_image(img: np.ndarray) -> tuple[np.ndarray, str | None]:
  """HxWxC (or HxW) in [0, 1] to what imshow wants, with the gray colormap for one channel."""
  img = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0.0, 1.0)
  if img.ndim == 3 and img.shape[-1] == 1:
    img = img[..., 0]
  if img.ndim == 2:
    return img, "gray"
  if img.ndim == 3 and img.shape[-1] in (3, 4):
    return img, None
  raise DeepwmError(f"report grid images must be HxW, HxWx1 or HxWx3, got shape {img.shape}.")


def grid_figure(grid: dict[str, np.ndarray], max_rows: int = 8, cell: float = 1.6) -> Figure:
  """Rows are examples, columns are the named image batches [n, H, W, C]; `cell` inches a
  panel."""
  names = list(grid)
  n_rows = min(max_rows, min(len(np.asarray(v)) for v in grid.values()))
  if n_rows == 0:
    raise DeepwmError("report grid has a column with no images; give at least one per column.")
  fig = _new_figure(cell * len(names), cell * n_rows + 0.4)
  axes = fig.subplots(n_rows, len(names), squeeze=False)
  for j, name in enumerate(names):
    images = np.asarray(grid[name])
    for i in range(n_rows):
      img, cmap = _as_display_image(images[i])
      ax = axes[i, j]
      ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(name, fontsize=9)
  fig.tight_layout()
  return fig


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  pts = [(r.get("step", i), r[key]) for i, r in enumerate(records)
         if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
         and math.isfinite(r[key])]
  if not pts:
    return np.zeros(0), np.zeros(0)
  steps, values = zip(*pts)
  return np.asarray(steps, np.float64), np.asarray(values, np.float64)


def curves_figure(curves: dict[str, list[dict]]) -> Figure:
  """One subplot per stage: losses on a log axis (left), other metrics on a linear one (right)."""
  stages = list(curves)
  fig = _new_figure(6.5, 3.0 * len(stages))
  axes = fig.subplots(len(stages), 1, squeeze=False)[:, 0]
  for ax, stage in zip(axes, stages):
    records = [r for r in curves[stage] if isinstance(r, dict)]
    keys = sorted({k for r in records for k in r if k not in _NOT_CURVES})
    loss_keys = [k for k in keys if "loss" in k.lower()]
    other_keys = [k for k in keys if k not in loss_keys]
    other_ax = ax.twinx() if other_keys and loss_keys else ax
    all_positive = True
    # One color per key across both axes, so a twin-axis curve is not mistaken for a loss.
    color = {k: f"C{i % 10}" for i, k in enumerate(loss_keys + other_keys)}
    for k in loss_keys:
      x, y = _series(records, k)
      if len(x):
        ax.plot(x, y, label=k, linewidth=1, color=color[k])
        all_positive &= bool(np.all(y > 0))
    if loss_keys:
      ax.set_yscale("log" if all_positive else "symlog")
      ax.set_ylabel("loss")
    for k in other_keys:
      x, y = _series(records, k)
      if len(x):
        other_ax.plot(x, y, label=k, linewidth=1, linestyle="--", color=color[k])
    ax.set_title(stage)
    ax.set_xlabel("step")
    handles, labels = [], []
    for a in {id(ax): ax, id(other_ax): other_ax}.values():
      h, lab = a.get_legend_handles_labels()
      handles += h
      labels += lab
    if handles:
      ax.legend(handles, labels, fontsize=7, loc="best")
  fig.tight_layout()
  return fig


def histogram_figure(groups: dict[str, np.ndarray], line: float | None, line_label: str,
                     xlabel: str) -> Figure:
  """Overlaid per-group histograms on shared bins, with a vertical decision line."""
  clean = {k: np.asarray(v, np.float64).ravel() for k, v in groups.items()}
  clean = {k: v[np.isfinite(v)] for k, v in clean.items()}
  values = [v for v in clean.values() if v.size]
  lo = min([float(v.min()) for v in values] + ([line] if line is not None else []), default=0.0)
  hi = max([float(v.max()) for v in values] + ([line] if line is not None else []), default=1.0)
  if hi - lo < 1e-6:
    lo, hi = lo - 0.5, hi + 0.5
  bins = np.linspace(lo, hi, 41)
  fig = _new_figure(6.5, 3.5)
  ax = fig.subplots()
  for name, v in clean.items():
    if v.size:
      ax.hist(v, bins=bins, histtype="stepfilled", alpha=0.35, label=f"{name} (n={v.size})")
  if line is not None and math.isfinite(line):
    ax.axvline(line, color="k", linestyle="--", linewidth=1.2, label=f"{line_label} {line:.3g}")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("images")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def qq_figure(groups: dict[str, np.ndarray], title: str) -> Figure:
  """Sorted p-values against uniform quantiles, log-log; points above the diagonal are
  conservative (less small than uniform), points below it would be anti-conservative."""
  fig = _new_figure(4.5, 4.5)
  ax = fig.subplots()
  lo = 1.0
  for name, p in groups.items():
    p = np.sort(np.clip(np.asarray(p, np.float64).ravel(), 1e-300, 1.0))
    if not p.size:
      continue
    q = (np.arange(1, p.size + 1) - 0.5) / p.size
    lo = min(lo, float(q[0]), float(p[0]))
    ax.plot(q, p, ".", markersize=3, label=f"{name} (n={p.size})")
  lo = max(lo, 1e-12)
  ax.plot([lo, 1], [lo, 1], "k--", linewidth=1, label="uniform")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("uniform quantile")
  ax.set_ylabel("p-value")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=6)
  fig.tight_layout()
  return fig


def attack_figure(rows: list[dict]) -> Figure:
  """Bit accuracy (payload kits) or the mean statistic against each removal attack's strength,
  one panel per attack kind (rows from deepwm_jax.tools.false_claims.attack_curves)."""
  kinds = list(dict.fromkeys(r["attack"] for r in rows))
  key = "bit_accuracy" if any("bit_accuracy" in r for r in rows) else "stat_mean"
  fig = _new_figure(2.6 * len(kinds), 2.8)
  axes = fig.subplots(1, len(kinds), squeeze=False)[0]
  for ax, kind in zip(axes, kinds):
    pts = [(r["value"], r.get(key)) for r in rows if r["attack"] == kind]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
    ax.set_title(kind, fontsize=9)
    ax.set_ylim(0.4 if key == "bit_accuracy" else 0.0, 1.02)
    if key == "bit_accuracy":
      ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("strength")
  axes[0].set_ylabel("bit accuracy" if key == "bit_accuracy" else "mean statistic")
  fig.tight_layout()
  return fig


FULL_SIZE_CAPTION = "A held-out photo at full size, protected, and the difference amplified"


def full_size_figure(panels: dict[str, np.ndarray]) -> Figure:
  """One photo's panels (HxWxC each) side by side, large enough to see a seam if there were one."""
  return grid_figure({k: np.asarray(v)[None] for k, v in panels.items()}, cell=4.0)


def full_size_section(report: dict) -> str:
  """report.md's table of the kit on whole held-out photos (stages/full_size.py)."""
  fs = report.get("full_size")
  if not isinstance(fs, dict) or not fs.get("photos"):
    return ""
  word = lambda v: f"{'**yes**' if v['detected'] else 'no'} (p {_pvalue(v['p_value'])})"
  rows = [{"photo": f"{r['width']}x{r['height']}", "windows": r["windows"],
           "PSNR (dB)": r["psnr"], "SSIM": r["ssim"],
           "residual in window frames": f"{100 * r['frame_share']:.0f}% "
                                        f"(area {100 * r['frame_area']:.0f}%)",
           "protected": word(r["protected"]), "clean": word(r["clean"]),
           "protected, shifted 1 px": word(r["protected shifted 1 px"]),
           **({"shifted 1 px, searched": word(r["searched"]["protected shifted 1 px"]),
               "clean, searched": word(r["searched"]["clean"])} if "searched" in r else {}),
           **({f"cropped to {100 * r['searched']['crop']:.0f}%, searched":
               word(r["searched"]["protected cropped"]),
               "clean cropped, searched": word(r["searched"]["clean cropped"])}
              if "crop" in r.get("searched", {}) else {}),
           **({f"floor {r['floor']['psnr_floor']:g} dB: PSNR / SSIM":
               f"{r['floor']['psnr']:.1f} / {r['floor']['ssim']:.3f}",
               "floor: protected": word(r["floor"]["protected"])} if "floor" in r else {})}
          for r in fs["photos"]]
  if fs.get("method") == "filter":  # no windows: the frame column is the check for a grid
    for row in rows:
      row.pop("windows")
    how = (f"The kit embeds and reads images of any size whole (the filter has no windows; "
           f"'residual in window frames' is the share of |B'-B| within 2 px of the lines of a "
           f"{fs['window']} px grid, beside their share of the area)")
  else:
    how = (f"The kit embeds and reads images of any size in {fs['window']} px windows ("
           + (f"overlapping by {fs['overlap']} px, blended" if fs["overlap"] else "tiled") + ")")
  return ("## Full size (one held-out photo per verdict)\n\n" + how
          + ". Each verdict below is on one image alone"
          + ("; 'searched' verdicts try every shift (`verify --search shift`), their p-values "
             "multiplied by the number of alignments tried; 'cropped' photos keep that share of "
             "each side, cut at an offset drawn per photo" if "searched" in fs["photos"][0] else "")
          + ("; 'floor' columns: the photo protected with its watermark scaled down, where "
             "stronger, to that PSNR (`deepwm embed --psnr-floor`)" if "floor" in fs["photos"][0]
             else "")
          + ".\n\n"
          + markdown_table(rows, list(rows[0])) + _suspects_section(fs.get("suspects")))


def _suspects_section(suspects: dict | None) -> str:
  """The report's imitators and null models serving whole photos (full_size.judge_suspects)."""
  if not suspects:
    return ""
  first = next(iter(suspects.values()))
  bits = lambda m: "-" if m is None else str(m)
  rows = [{"model": name, "role": g["role"],
           "key bits per photo": ", ".join(bits(m) for m in g["matches"]),
           "photos detected alone": f"{g['detected_alone']} of {g['n_images']}",
           "all photos as one set": f"{bits(g['set']['matches'])} bits, "
                                    + ("**detected**" if g["set"]["detected"] else "not detected")
                                    + f" (p {_pvalue(g['set']['p_value'])})"}
          for name, g in suspects.items()]
  return (f"\n\n### Imitators serving whole photos\n\nThe models above, trained on "
          f"crops, run on the task inputs of the same held-out photos cut to "
          f"{first['height']} x {first['width']} px, as a thief serves whole images; each photo "
          "judged alone, then all of them as one set"
          + (", read against the owner's outputs for the same inputs." if
             first.get("against_owner_outputs") else
             ". A key at fixed positions in the crop is copied only as far as a model can tell "
             "where in a window it is.") + "\n\n"
          + markdown_table(rows, list(rows[0])))


def served_figure(served: dict, title: str) -> Figure:
  """Groups x distortions of stages/served.py: the share of sets detected, in colour and as
  'k/n'."""
  specs, names = served["specs"], list(served["groups"])
  rows = [[served["groups"][n]["rows"][s] for s in specs] for n in names]
  fig = _new_figure(2.6 + 0.8 * len(specs), 1.0 + 0.4 * len(names))
  ax = fig.subplots()
  # One neutral scale (white: none detected, blue: all): detection is the goal for a group
  # that carries the key and a false claim for an innocent one, so no colour means "good".
  ax.imshow([[r["sets_detected"] / r["sets"] for r in row] for row in rows], vmin=0, vmax=1,
            cmap="Blues", aspect="auto")
  ax.set_xticks(range(len(specs)), specs, rotation=35, ha="right", fontsize=8)
  ax.set_yticks(range(len(names)), [f"{n} ({served['groups'][n]['role']})" for n in names],
                fontsize=8)
  for i, row in enumerate(rows):
    for j, r in enumerate(row):
      ax.text(j, i, f"{r['sets_detected']}/{r['sets']}", ha="center", va="center", fontsize=7,
              color="white" if r["sets_detected"] > 0.6 * r["sets"] else "black")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return fig


def write_served_figure(workdir: str, report: dict) -> None:
  """figures/served.png of a report with a "served" study (drawn in its own section)."""
  if report.get("served"):
    save_figure(served_figure(report["served"], "sets detected after serving"),
                os.path.join(workdir, FIGURES_DIR, "served.png"))


def served_section(report: dict, figure_path: str) -> str:
  """report.md's table of the groups after serving (stages/served.py): sets detected per
  distortion."""
  sv = report.get("served")
  if not isinstance(sv, dict) or not sv.get("groups"):
    return ""
  rows = [{"group": n, "role": g["role"],
           **{s: f"{r['sets_detected']}/{r['sets']}" for s, r in g["rows"].items()}}
          for n, g in sv["groups"].items()]
  inn = sv["innocent"]
  return (f"## After serving (sets of {sv['set_size']})\n\n"
          "Every group's held-out images after each post-processing below (JPEG is the real "
          "codec; `rescale` down and back up, `crop` a centre crop resized back), judged in "
          f"sets of {sv['set_size']}: sets detected of sets. Innocent sets detected "
          f"under any distortion: {inn['sets_detected']} of {inn['sets']}.\n\n"
          + markdown_table(rows, list(rows[0]))
          + f"\n![after serving]({figure_path})\n")


def _payload_section(report: dict) -> str:
  """Bits of a payload run: accuracy, p-value and decoded message per group."""
  pay = report.get("payload")
  if not isinstance(pay, dict) or not isinstance(pay.get("groups"), dict):
    return ""
  rows = [{"group": k, "bit accuracy": _pct(g.get("bit_accuracy_mean")),
           "bit p-value": _pvalue(g.get("p_value")), "detected": g.get("detected"),
           "message (all images)": g.get("decode_message") if g.get("decode_matches")
           else ("wrong" if g.get("decode_decoded") else "not decoded"),
           f"first {g.get('first_n_images')}: matches": g.get("first_decode_matches")}
          for k, g in pay["groups"].items()]
  cal = pay.get("calibration") or {}
  return (f"## Payload ({pay.get('bits')} bits, '{pay.get('message')}', Reed-Solomon "
          f"+{pay.get('ecc_bytes')} bytes, {pay.get('n_coded')} coded bits)\n\n"
          + markdown_table(rows, list(rows[0])) if rows else "") + (
          f"\nPer-image threshold {cal.get('threshold', float('nan')):.3g} of confident bits, "
          f"p0 {cal.get('p0', float('nan')):.3g}.\n")


# ----------------------------------------------------------------------------- report.md


def _detection_rows(report: dict) -> list[dict]:
  """One row per evaluated group: watermarked, clean, each surrogate, each null."""
  rows = []

  def add(group: str, entry: Any) -> None:
    if not isinstance(entry, dict):
      return
    label = group
    if entry.get("name"):
      details = ", ".join(str(entry[k]) for k in ("arch", "loss") if entry.get(k))
      label = f"{group}: {entry['name']}" + (f" ({details})" if details else "")
    rows.append({
        "group": label,
        "success rate": _pct(entry.get("success_rate")),
        "paper success rate (NC > 0.95)": _pct(entry.get("paper_success_rate")),
        "NC mean": entry.get("nc_mean"),
        "p-value": _pvalue(entry.get("p_value")),
        "detected": entry.get("detected"),
    })

  add("watermarked", report.get("watermarked"))
  add("clean", report.get("clean"))
  for entry in report.get("surrogates") or []:
    add("surrogate", entry)
  for entry in report.get("null") or []:
    add("null", entry)
  return rows


def _calibration_line(report: dict, threshold: float | None) -> str:
  calibration = report.get("calibration") if isinstance(report.get("calibration"), dict) else {}
  t = threshold if threshold is not None else calibration.get("threshold")
  if t is None:
    return ""
  line = f"Decision threshold on the watermark statistic: {float(t):.4g}"
  if calibration.get("method"):
    line += f" ({calibration['method']})"
  if calibration.get("p0") is not None:
    line += f"; per-image false-positive rate p0 <= {float(calibration['p0']):.3g}"
  return line + ".\n"


def render_markdown(report: dict, figures: dict[str, str], threshold: float | None = None,
                    title: str = "deepwm_jax report") -> str:
  """report.md's text; `figures` maps a caption to a path relative to the report."""
  parts = [f"# {title}\n"]
  parts.append(
      "Box-free model watermark (Zhang et al., TPAMI 2022). *success rate* is the fraction "
      "of images this package's calibrated statistic counts as watermarked; the paper's "
      "success rate (NC > 0.95) is shown beside it for comparison, not as the decision. "
      "All numbers are in `report.json`.\n")
  warns = report.get("warnings") if isinstance(report.get("warnings"), list) else []
  if warns:  # first, where a reader cannot miss them: the kit may be unfit to deploy
    parts.append("## Warnings\n")
    parts.append("".join(f"- **{w}**\n" for w in warns))
  fidelity = report.get("fidelity") if isinstance(report.get("fidelity"), dict) else {}
  if fidelity:
    parts.append("## Fidelity (B' vs B, held-out images)\n")
    parts.append(markdown_table([{
        "PSNR (dB)": fidelity.get("psnr"), "SSIM": fidelity.get("ssim")}],
        ["PSNR (dB)", "SSIM"]))
  rows = _detection_rows(report)
  if rows:
    parts.append("## Detection\n")
    columns = ["group", "success rate", "paper success rate (NC > 0.95)", "NC mean"]
    columns += [c for c in ("p-value", "detected") if any(r[c] is not None for r in rows)]
    parts.append(markdown_table(rows, columns))
    parts.append(_calibration_line(report, threshold))
  parts.append(_payload_section(report))
  parts.append(full_size_section(report))
  parts.append(served_section(report, f"{FIGURES_DIR}/served.png"))
  timing = report.get("timing") if isinstance(report.get("timing"), dict) else {}
  if timing:
    parts.append("## Timing\n")
    numeric = {k: float(v) for k, v in timing.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    # The pipeline records its own wall-clock "total"; summing the stages would count it twice.
    total = numeric.pop("total", sum(numeric.values()))
    trows = [{"stage": k, "seconds": f"{numeric[k]:.1f}" if k in numeric else v}
             for k, v in timing.items() if k != "total"]
    trows.append({"stage": "**total**", "seconds": f"{total:.1f}"})
    parts.append(markdown_table(trows, ["stage", "seconds"]))
  if figures:
    parts.append("## Figures\n")
    for caption, rel in figures.items():
      parts.append(f"**{caption}**\n\n![{caption}]({rel})\n")
  return "\n".join(parts)


# ----------------------------------------------------------------------------- entry point


def write_report(workdir: str, report: dict, grid: dict[str, np.ndarray] | None = None,
                 curves: dict[str, list[dict]] | None = None,
                 stats: dict[str, np.ndarray] | None = None,
                 threshold: float | None = None,
                 full_size: dict[str, np.ndarray] | None = None) -> None:
  """Writes workdir/report.json, workdir/report.md and PNG figures under workdir/figures/.

  `full_size`: the panels of stages/full_size.study, drawn as one large figure.
  `stats` maps group names to per-image watermark statistics (histogram with `threshold`);
  keys starting with 'nc:' hold the paper's NC per group (a second histogram at 0.95).
  """
  if not isinstance(report, dict):
    raise DeepwmError(f"write_report needs a dict report, got {type(report).__name__}.")
  os.makedirs(os.path.join(workdir, FIGURES_DIR), exist_ok=True)
  # Render from the converted report too, so the markdown sees only Python numbers.
  report = to_jsonable(report)
  body = json.dumps(report, indent=2, allow_nan=False) + "\n"
  write_text_atomic(os.path.join(workdir, "report.json"), body)

  figures = {}  # caption -> relative path, in the order they appear in report.md

  def emit(caption: str, name: str, fig: Figure) -> None:
    rel = f"{FIGURES_DIR}/{name}"
    save_figure(fig, os.path.join(workdir, rel))
    figures[caption] = rel

  if grid:
    emit("Examples: inputs, outputs, differences and extractions", "grid.png",
         grid_figure(grid))
  if full_size:
    emit(FULL_SIZE_CAPTION, "full_size.png", full_size_figure(full_size))
  write_served_figure(workdir, report)  # shown in its own section, not under Figures
  if curves:
    emit("Learning curves", "curves.png", curves_figure(curves))
  stats = stats or {}
  stat_groups = {k: v for k, v in stats.items() if not k.startswith("nc:")}
  nc_groups = {k[len("nc:"):]: v for k, v in stats.items() if k.startswith("nc:")}
  if stat_groups:
    emit("Watermark statistic per image, with the decision threshold", "stats_hist.png",
         histogram_figure(stat_groups, threshold, "threshold", "watermark statistic"))
  if nc_groups:
    emit("Paper's NC per image, with the paper's 0.95 threshold", "nc_hist.png",
         histogram_figure(nc_groups, PAPER_NC_THRESHOLD, "paper threshold", "NC"))
  write_text_atomic(os.path.join(workdir, "report.md"),
                    render_markdown(report, figures, threshold))


# ---------------------------------------------------------------------------- the absorbed strategy

def comparison_rows(rep: dict) -> list[dict]:
  """Agnostic (H after M) and specific (M') side by side, from one report."""
  sp = rep["specific"]
  ag_sur = {e["name"]: e for e in rep["surrogates"]}
  sp_sur = {e["name"]: e for e in sp["surrogates"]}
  rows = [
      {"metric": "task PSNR vs B (dB)", "agnostic (H(M(A)))": sp["task"]["psnr_HM_vs_B"],
       "specific (M'(A))": sp["task"]["psnr_Mprime_vs_B"]},
      {"metric": "task PSNR of M vs B (dB)", "agnostic (H(M(A)))": sp["task"]["psnr_M_vs_B"],
       "specific (M'(A))": sp["task"]["psnr_M_vs_B"]},
      {"metric": "fidelity PSNR (dB): H(M(A)) vs M(A) | M'(A) vs H(M(A))",
       "agnostic (H(M(A)))": rep["fidelity"]["psnr"],
       "specific (M'(A))": sp["fidelity"]["psnr_Mprime_vs_HM"]},
      {"metric": "success rate on the protected outputs",
       "agnostic (H(M(A)))": rep["watermarked"]["success_rate"],
       "specific (M'(A))": sp["watermarked"]["success_rate"]},
  ]
  for ag_name, sp_name in (("surrogate-stage2", "surrogate-stage2-spec"),
                           ("surrogate-unseen", "surrogate-unseen-spec")):
    if ag_name in ag_sur and sp_name in sp_sur:
      a, s = ag_sur[ag_name], sp_sur[sp_name]
      rows.append({"metric": f"success rate: {ag_name} spec ({s['arch']}, {s['loss']})",
                   "agnostic (H(M(A)))": a["success_rate"],
                   "specific (M'(A))": s["success_rate"]})
      rows.append({"metric": f"residual corr: {ag_name} spec",
                   "agnostic (H(M(A)))": a.get("residual_corr"),
                   "specific (M'(A))": s.get("residual_corr")})
  return rows


def write_specific(workdir: str, rep: dict) -> None:
  """report.json with rep['specific'], and the side-by-side table appended to report.md
  (the model-specific strategy, deepwm_jax/stages/absorb.py)."""
  rep_j = to_jsonable(rep)
  write_text_atomic(os.path.join(workdir, "report.json"),
                    json.dumps(rep_j, indent=2, allow_nan=False) + "\n")
  md_path = os.path.join(workdir, "report.md")
  md = open(md_path).read() if os.path.exists(md_path) else ""
  cols = ["metric", "agnostic (H(M(A)))", "specific (M'(A))"]
  section = ("\n## Model-specific strategy: H absorbed into M'\n\n"
             "M' is M fine-tuned to emit H(M(A)) itself; the same R and "
             "calibration verify it. Surrogates of the same specs as the agnostic ones, trained "
             "on M' outputs instead of H(M(A)).\n\n"
             + "".join(f"**Warning: {w}**\n\n" for w in rep_j["specific"].get("warnings", []))
             + markdown_table(comparison_rows(rep_j), cols))
  marker = "\n## Model-specific strategy"
  md = md.split(marker)[0] + section
  write_text_atomic(md_path, md)


# ----------------------------------------------------------------------------- the keyed method

def _symmetry_words(symmetry: str) -> str:
  return {"none": "", "flips": ", mirrored cells sharing a bit",
          "dihedral": ", cells that mirror or turn into each other sharing a bit"}[symmetry]


def _key_rows(groups: dict) -> list[dict]:
  return [{"group": name, "role": g["role"], "images detected alone": _pct(g["image_rate"]),
           "mean bits matching": f"{g['mean_image_matches']:.1f} / {g['n_bits']}",
           "set: bits matching": f"{g['matches']} / {g['n_bits']}",
           "set p-value": _pvalue(g["p_value"]), "detected": g["detected"]}
          for name, g in groups.items()]


def _keyed_intro(rep: dict) -> str:
  """What the key is and how a verdict is reached, for a keyed or a filter kit."""
  k = rep["key"]
  if rep.get("method") == "filter":
    how = (f"B' is M(A) plus a keyed filter of its own content (radius {k['radius']} px, gain "
           f"{k['eps']:g}, each image held at {k['psnr_floor']:g} dB or weaker): the owner's "
           f"key ({k['bits']} bits, drawn at random) gives the sign of each offset's difference "
           f"in each channel. A suspect's image is read by the least-squares coefficients of "
           f"those differences. ")
  else:
    how = (f"H and R were trained over random keys; the owner's key ({k['bits']} bits, "
           f"{k['cell']} px cells{_symmetry_words(k.get('symmetry', 'none'))}) was drawn "
           f"afterwards and R never saw it. ")
  return (how + f"Each verdict is the exact signed-rank test on the key (alpha "
          f"{rep['alpha']:g}): a set's per-bit readings are summed and ranked by strength, and "
          f"the ranks of the bits whose sign matches the key are added up. An image or set is "
          f"detected when that sum reaches {k['score_needed']:.3f} of its largest value, which "
          f"takes at least {k['min_bits_needed']} of {k['bits']} bits, the wrong ones among the "
          "weakest. The false-claim bound holds for images from any model that did not learn "
          "from the key's outputs.\n")


def write_keyed(workdir: str, rep: dict, grid: dict[str, np.ndarray],
                innocent_p: np.ndarray, full_size: dict[str, np.ndarray] | None = None) -> None:
  """report.json, report.md and figures of a keyed run (stages/keyed.py): each group judged
  by the exact test, and the innocent sets' p-values against uniform."""
  os.makedirs(os.path.join(workdir, FIGURES_DIR), exist_ok=True)
  rep = to_jsonable(rep)
  write_text_atomic(os.path.join(workdir, "report.json"),
                    json.dumps(rep, indent=2, allow_nan=False) + "\n")
  save_figure(grid_figure(grid), os.path.join(workdir, FIGURES_DIR, "grid.png"))
  save_figure(qq_figure({"innocent sets": innocent_p},
                        "innocent sets' exact p-values (they share this kit's key)"),
              os.path.join(workdir, FIGURES_DIR, "innocent_qq.png"))
  inn = rep["innocent"]
  filtered = rep.get("method") == "filter"
  columns = ["group", "role", "images detected alone", "mean bits matching",
             "set: bits matching", "set p-value", "detected"]
  detection = ["## Detection\n"]
  if filtered:
    detection = ["## Detection: suspects read against the owner's outputs\n",
                 "Each suspect was given the held-out inputs A, and its outputs are read against "
                 "M(A), what the owner serves for them.\n",
                 markdown_table(_key_rows(rep["groups"]), columns),
                 "## Detection: images read alone\n",
                 "The same images read on their own, as images found without their inputs "
                 "are (weaker).\n",
                 markdown_table(_key_rows(rep["groups_alone"]), columns)]
  else:
    detection.append(markdown_table(_key_rows(rep["groups"]), columns))
  parts = [
      f"# deepwm_jax report: {'filter' if filtered else 'keyed'} kit\n",
      _keyed_intro(rep),
      *(["## Warnings\n", "".join(f"- **{w}**\n" for w in rep["warnings"])]
        if rep.get("warnings") else []),
      "## Fidelity (B' vs B, held-out images)\n",
      markdown_table([{"PSNR (dB)": rep["fidelity"]["psnr"], "SSIM": rep["fidelity"]["ssim"]}],
                     ["PSNR (dB)", "SSIM"]),
      *detection,
      f"Innocent sets detected: {', '.join(inn['sets_detected']) or 'none'} of "
      f"{inn['n_sets']} (smallest p-value {inn['smallest_set_p_value']:.3g}); innocent images "
      f"detected alone: {inn['images_detected_alone']} of {inn['n_images']}. The bound holds "
      "over the key: one kit is one draw of it, which every group here shares, so these "
      "p-values are not independent of each other.\n",
      "## Figures\n",
      ("**Examples: inputs, outputs and the difference**" if filtered else
       "**Examples: inputs, outputs, the difference, the key and R's drawings**")
      + f"\n\n![examples]({FIGURES_DIR}/grid.png)\n",
      "**Innocent sets' p-values against uniform (on or above the diagonal: valid)**\n\n"
      f"![qq]({FIGURES_DIR}/innocent_qq.png)\n",
  ]
  if rep.get("served"):
    write_served_figure(workdir, rep)
    parts[-3:-3] = [served_section(rep, f"{FIGURES_DIR}/served.png")]
  if full_size:
    save_figure(full_size_figure(full_size), os.path.join(workdir, FIGURES_DIR, "full_size.png"))
    parts[-3:-3] = [full_size_section(rep)]  # before "## Figures" and its two
    parts.append(f"**{FULL_SIZE_CAPTION}**\n\n![full size]({FIGURES_DIR}/full_size.png)\n")
  write_text_atomic(os.path.join(workdir, "report.md"), "\n".join(parts))
