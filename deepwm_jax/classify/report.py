"""report.json, report.md and figures of a classify run, and the method's targets checked
against the measured numbers (nothing here is hard-coded: it reads the report)."""
import json
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwm_jax import report as base_report
from deepwm_jax.classify import keys as keys_lib

METHOD = "fingerprint"


def _robust(rep: dict, attack: str) -> dict:
  """Worst watermark accuracy of the method's copy over the attacks that keep the task."""
  rows = [r for r in rep["attacks"] if r["method"] == METHOD and r["attack"] == attack]
  kept = [r for r in rows if r["task_drop"] <= rep["max_task_drop"] + 1e-9]
  worst = min((r["watermark_accuracy"] for r in kept), default=None)
  return {"value": worst, "n_attacks_keeping_task": len(kept), "n_attacks": len(rows),
          "failing": [r["strength"] for r in kept if r["watermark_accuracy"] < 0.9],
          "met": worst is not None and worst >= 0.9}


def targets(rep: dict) -> dict:
  """The classify targets (docs/classify.md), each with the measured value and whether it is met."""
  gap = 100 * (rep["unwatermarked_accuracy"] - rep["clean_accuracy"])   # in points
  return {
      "clean_accuracy_within_1_point": {"value": gap, "met": gap <= 1.0},
      "watermark_accuracy_100": {"value": rep["watermark_accuracy"],
                                 "met": rep["watermark_accuracy"] == 1.0},
      "fingerprint_auth_100": {"value": rep["fingerprint_auth_rate"],
                               "met": rep["fingerprint_auth_rate"] == 1.0},
      "leak_identified_every_user_of_5": {"value": rep["leak_identified_rate"],
                                          "met": rep["leak_identified_rate"] == 1.0
                                          and rep["n_users"] >= 5},
      "no_false_claims_on_10_clean": {"value": rep["false_claims"],
                                      "met": rep["false_claims"] == 0
                                      and rep["n_clean_models"] >= 10},
      "finetune_keeps_watermark_90": _robust(rep, "finetune"),
      "prune_keeps_watermark_90": _robust(rep, "prune"),
      # There is no bar here, only an honest report beside the baselines: 'met' says
      # whether this method's watermark survived the purifier (>= 90%) while the task held.
      "purifier_keeps_watermark_90_report_only": {
          "value": {r["method"]: r["watermark_accuracy"] for r in query_modification(rep)},
          "met": any(r["method"] == METHOD and r["watermark_accuracy"] >= 0.9
                     and r["task_drop"] <= rep["max_task_drop"] + 1e-9
                     for r in query_modification(rep))},
  }


def query_modification(rep: dict) -> list[dict]:
  """The purifier rows of every method, with each method's unattacked numbers beside them."""
  before = {r["method"]: r for r in rep["attacks"] if r["attack"] == "none"}
  return [{"method": r["method"], "strength": r["strength"],
           "task_accuracy_before": before[r["method"]]["task_accuracy"],
           "watermark_accuracy_before": before[r["method"]]["watermark_accuracy"],
           "task_accuracy": r["task_accuracy"], "task_drop": r["task_drop"],
           "watermark_accuracy": r["watermark_accuracy"]}
          for r in rep["attacks"] if r["attack"] == "purifier" and r["method"] in before]


def _pct(x):
  return None if x is None else f"{100 * x:.1f}%"


def render(rep: dict, figures: dict) -> str:
  t = rep["targets"]
  parts = ["# deepwm_jax classify report\n",
           "Additional-class watermark with LSB-steganographic user fingerprints (Sun et al., "
           "docs/classify.md), with a user-specific key set per copy. All numbers are in "
           "`report.json`.\n", "## Targets\n"]
  parts.append(base_report.markdown_table(
      [{"target": k.replace("_", " "), "measured": v["value"], "met": v["met"],
        "failing attacks": "; ".join(v.get("failing", [])) or None}
       for k, v in t.items()], ["target", "measured", "met", "failing attacks"]))
  parts.append("## Summary\n")
  parts.append(base_report.markdown_table([{
      "clean accuracy (users' copies)": _pct(rep["clean_accuracy"]),
      "unwatermarked accuracy (clean models)": _pct(rep["unwatermarked_accuracy"]),
      "watermark accuracy": _pct(rep["watermark_accuracy"]),
      "fingerprint auth": _pct(rep["fingerprint_auth_rate"]),
      "leak identified": _pct(rep["leak_identified_rate"]),
      "false claims": f"{rep['false_claims']} / {rep['n_clean_models']}"}],
      ["clean accuracy (users' copies)", "unwatermarked accuracy (clean models)",
       "watermark accuracy", "fingerprint auth", "leak identified", "false claims"]))
  cal = rep["calibration"]
  parts.append(f"p0 = {cal['p0']:.3g}: {cal['n_hits']} of {cal['n_queries']} key queries on "
               f"{cal['n_models']} calibration clean models reached the watermark class "
               f"(conservative (hits + 1) / (queries + 1)). A user is detected when the binomial "
               f"p-value is below {rep['alpha']:g} and at least {_pct(rep['min_accuracy'])} of "
               f"the user's keys reach the class.\n")
  parts.append("## Users\n")
  parts.append(base_report.markdown_table(rep["users"], [
      "user", "task_accuracy", "watermark_accuracy", "other_users_max_accuracy", "p_value",
      "fingerprint_auth_rate", "identified_user"]))
  parts.append("Rows: a user's copy; columns: whose key images were sent to the watermark "
               "class, and how many.\n")
  users = [u["user"] for u in rep["users"]]
  parts.append(base_report.markdown_table(
      [{"copy of": u, **rep["cross_accuracy"][u]} for u in users], ["copy of", *users]))
  parts.append("## Attacks\n")
  parts.append(f"task_drop is the test-accuracy loss of the attack; an attack keeps the task "
               f"when it is at most {_pct(rep['max_task_drop'])}.\n")
  parts.append(base_report.markdown_table(rep["attacks"], [
      "method", "attack", "strength", "task_accuracy", "task_drop", "watermark_accuracy",
      "identified"]))
  parts.append("## Query modification beside the baselines\n")
  parts.append("An autoencoder trained on the attacker's clean data sits in front of each model; "
               "the verifier's queries pass through it too.\n")
  parts.append(base_report.markdown_table(query_modification(rep), [
      "method", "strength", "task_accuracy_before", "watermark_accuracy_before",
      "task_accuracy", "task_drop", "watermark_accuracy"]))
  parts.append("## Baselines before attacks\n")
  parts.append(base_report.markdown_table(
      [{"baseline": b, **v} for b, v in rep["baselines"].items()],
      ["baseline", "task_accuracy", "watermark_accuracy", "clean_model_watermark_accuracy"]))
  parts.append("## Timing (seconds)\n")
  parts.append("Training stages are summed over every invocation of the command on this "
               "workdir (a resumed run adds to them); the others are this invocation's.\n")
  stages = {k: v for k, v in rep["timing"].items() if k != "this_invocation"}
  parts.append(base_report.markdown_table(
      [{"stage": k, "seconds": v} for k, v in stages.items()]
      + [{"stage": "**sum of stages**", "seconds": round(sum(stages.values()), 1)},
         {"stage": "this invocation", "seconds": rep["timing"].get("this_invocation")}],
      ["stage", "seconds"]))
  if figures:
    parts.append("## Figures\n")
    for caption, rel in figures.items():
      parts.append(f"**{caption}**\n\n![{caption}]({rel})\n")
  return "\n".join(parts)


def keys_figure(user_keys: dict, n_users: int = 5):
  users = list(user_keys)[:n_users]
  k = {u: user_keys[u] for u in users}
  grid = {
      "key 1": np.stack([keys_lib.to_float(k[u][0]) for u in users]),
      "key 2": np.stack([keys_lib.to_float(k[u][1]) for u in users]),
      "LSB plane": np.stack([(k[u][0] & 1).astype(np.float32) for u in users]),
      "fingerprint": np.stack([keys_lib.fingerprint(u)[..., None].astype(np.float32)
                               for u in users]),
      "read back": np.stack([keys_lib.lsb_extract(k[u][:1]).reshape(16, 16, 1)
                             .astype(np.float32) for u in users]),
  }
  return base_report.grid_figure(grid, max_rows=n_users)


def prune_figure(rep: dict):
  fig = Figure(figsize=(9, 3.4))
  FigureCanvasAgg(fig)
  ax_wm, ax_task = fig.subplots(1, 2)
  for method in dict.fromkeys(r["method"] for r in rep["attacks"]):
    rows = sorted([r for r in rep["attacks"] if r["method"] == method and r["attack"] == "prune"],
                  key=lambda r: r["fraction"])
    if not rows:
      continue
    f = [r["fraction"] for r in rows]
    ax_wm.plot(f, [r["watermark_accuracy"] for r in rows], marker="o", label=method)
    ax_task.plot(f, [r["task_accuracy"] for r in rows], marker="o", label=method)
  for ax, name in ((ax_wm, "watermark accuracy"), (ax_task, "task accuracy")):
    ax.set_xlabel("fraction of weights pruned")
    ax.set_ylabel(name)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def write(workdir: str, rep: dict, user_keys: dict) -> None:
  rep = base_report.to_jsonable(rep)
  base_report.write_text_atomic(os.path.join(workdir, "report.json"),
                                json.dumps(rep, indent=1, allow_nan=False) + "\n")
  figures = {}
  for caption, name, fig in (
      ("Key images of the first users (one row each), the LSB plane of the first, the user's "
       "fingerprint and the fingerprint read back from the LSBs",
       "keys.png", keys_figure(user_keys)),
      ("Global magnitude pruning", "prune.png", prune_figure(rep))):
    rel = f"{base_report.FIGURES_DIR}/{name}"
    base_report.save_figure(fig, os.path.join(workdir, rel))
    figures[caption] = rel
  base_report.write_text_atomic(os.path.join(workdir, "report.md"), render(rep, figures))
