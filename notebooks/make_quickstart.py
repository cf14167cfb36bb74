"""Writes notebooks/quickstart.ipynb from the cells below, without outputs.

  python notebooks/make_quickstart.py          # rewrite the notebook
  python notebooks/make_quickstart.py --check  # exit 1 if the committed notebook is stale

The notebook is generated so that its code is reviewed here, as Python, and so that the
committed .ipynb never carries outputs (tests/test_notebook.py executes it). Cell ids are fixed,
so the same source always gives the same file.
"""
import argparse
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "quickstart.ipynb")

# Cells tagged with one of these must show a figure (image/png) when executed; the test checks.
FIGURE_TAGS = ("figure-report", "figure-watermark", "figure-attack")

CELLS = []


def md(text):
  CELLS.append(("markdown", text.strip("\n"), ()))


def code(text, *tags):
  CELLS.append(("code", text.strip("\n"), tags))


md("""
# deepwm_jax quickstart: watermark a model's outputs, catch a copy

You serve an image-to-image model (here a small deraining U-Net) behind an API. This notebook
protects it with a box-free watermark (Zhang et al., AAAI 2020 / TPAMI 2022), looks at the
watermark, plays the attacker who trains a copy of the model on the API's outputs, and asks the
verification kit whether the copy carries the watermark. Everything goes through the Python
API; nothing shells out to the `deepwm` command.

It runs top to bottom on a CPU runtime in about 10 minutes (the default config, `notebook`).
Set the environment variable `DEEPWM_NOTEBOOK_CONFIG` to another config before starting, e.g.
`tiny` (a smoke test in about a minute, which the tests run; its numbers mean nothing) or
`quickstart` (the README's measured run).
""")

md("""
## Setup

Start the notebook from a clone of the repository (in `notebooks/` or at the root). If
deepwm_jax is not installed yet, the first cell installs the clone into this kernel's Python
with pip (`pip install -e ".[test]"` from the repository root does the same in a shell).
""")

code("""
import importlib.util
import os
import pathlib
import sys

# The repository root: this folder when started there, its parent when started in notebooks/.
ROOT = next(p for p in (pathlib.Path.cwd(), pathlib.Path.cwd().parent)
            if (p / "pyproject.toml").is_file())
if importlib.util.find_spec("deepwm_jax") is None:
  %pip install -q -e {ROOT}
print(f"deepwm_jax from {importlib.util.find_spec('deepwm_jax').origin}")
""")

code("""
%matplotlib inline
import json
import pathlib
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import jax
import numpy as np
from IPython.display import Image, Markdown, display

import deepwm_jax
from deepwm_jax import api, config, metrics, pipeline
from deepwm_jax import report as report_lib
from deepwm_jax.stages import common
from deepwm_jax.tools import describe

CONFIG = os.environ.get("DEEPWM_NOTEBOOK_CONFIG", "notebook")  # a shipped name or a file
config_path = pathlib.Path(config.resolve(CONFIG))
# One workdir per config: a workdir refuses a run with another config, and re-running the
# notebook resumes (finished stages are skipped).
WORKDIR = os.environ.get("DEEPWM_NOTEBOOK_WORKDIR",
                         str(ROOT / "runs" / f"notebook-{config_path.stem}"))

cfg = config.load(str(config_path))
print(f"deepwm_jax {deepwm_jax.__version__}, jax {jax.__version__}, devices {jax.devices()}")
print(f"config {config_path.name}: {cfg.data.image_size} px, {cfg.data.channels} channels, "
      f"stage 1 {cfg.stage1.steps} steps, stage 2 {cfg.stage2.steps} steps")
print(f"workdir {WORKDIR}")
""")

md("""
## 1. Protect the model

`pipeline.run` is the whole method, the same as `deepwm run`: it trains the task model M on
(rainy A, clean B) pairs, then the embedder H, extractor R and discriminator D together
(stage 1), a surrogate attacker and null models, fine-tunes R against that surrogate (stage 2),
calibrates the detection threshold on clean images and null models, evaluates everything on
held-out images and writes a report and the verification kit `WORKDIR/kit`. Every stage
checkpoints, so interrupting and re-running this cell resumes.
""")

code("""
t0 = time.time()
rep = pipeline.run(cfg, WORKDIR)
print(f"protection run: {time.time() - t0:.0f} s in this kernel; seconds per stage, when it "
      f"was trained:", {k: round(v) for k, v in rep["timing"].items()})
shown = {k: v for k, v in report_lib.to_jsonable(rep).items() if k != "timing"}
display(Markdown(report_lib.render_markdown(shown, {}, title="Report of the protection run")))
""")

md("""
Each held-out group gets a per-image *watermark statistic* (1: R extracted the watermark, 0: a
blank); the kit counts an image as a hit above the calibrated threshold (dashed line) and
declares a set of images watermarked when the hits are both improbable for clean images
(p < alpha) and the majority.
""")

code("""
display(Image(filename=os.path.join(WORKDIR, "figures", "stats_hist.png")))
""", "figure-report")

md("""
## 2. Look at the watermark

The kit is what the owner keeps and shares: H, R, the watermark and the calibration.
`deepwm_jax.load_kit` checks its SHA-256 manifest. `api` gives the run's held-out pairs and
its task model M, so we can draw, per held-out image: the rainy input A, the model's output B,
the watermarked output B' = H(B) that the API serves, their difference amplified 10x, and what
the extractor reads from B' and from B.
""")

code("""
kit = deepwm_jax.load_kit(os.path.join(WORKDIR, "kit"))
print(f"kit: {kit.image_size} px, {kit.channels} channels, owner {kit.info['owner']}, "
      f"embedder {kit.info['parameters']['embedder']:,} and extractor "
      f"{kit.info['parameters']['extractor']:,} parameters")
print(f"threshold {kit.calibration.threshold:.3f} on the statistic; per-image false-positive "
      f"rate p0 <= {kit.calibration.p0:.2g} ({kit.calibration.n_negatives} calibration negatives)")

val = api.pairs(cfg, "val")           # held-out (A, B): the images the report measured on
M = api.task_model(cfg, WORKDIR)      # the protected model
B = M(val.a)
B_marked = kit.embed(B)               # what the protected API serves
psnr = float(np.mean(metrics.psnr(B_marked, B)))
print(f"fidelity PSNR(B', B) = {psnr:.1f} dB over {len(B)} held-out images")
print("statistic of R(B'):", np.round(kit.statistic(B_marked[:6]), 2))
print("statistic of R(B): ", np.round(kit.statistic(B[:6]), 2))

n = min(6, len(B))
fig = report_lib.grid_figure({
    "A": val.a[:n], "B = M(A)": B[:n], "B' = H(B)": B_marked[:n],
    "|B'-B| x10": api.amplified_difference(B_marked[:n], B[:n]),
    "R(B')": np.clip(kit.extract(B_marked[:n]), 0, 1),
    "R(B)": np.clip(kit.extract(B[:n]), 0, 1)})
display(fig)
""", "figure-watermark")

md("""
## 3. The attack: copy the model from its outputs

The attacker sends their own rainy images (the *attack* split, which shares no photo with the
owner's data) to the API, receives the watermarked outputs B', and trains a surrogate SM on
(A, B'). A U-Net with L1 loss and its own seed: the same family as the surrogate stage 2 saw,
but not that network. As a control, the same training on the unwatermarked outputs M(A) gives
a *null* model, which must not be detected. Both are checkpointed in the workdir, so a re-run
reuses them.
""")

code("""
attack = api.pairs(cfg, "attack")
clean_answers = M(attack.a)
served = kit.embed(clean_answers)     # what the attacker collects from the protected API
steps = cfg.attack.surrogate.steps
surrogate = api.train_imitator(cfg, WORKDIR, "nb_surrogate", attack.a, served,
                               arch="unet", loss="l1", seed=5, steps=steps)
null = api.train_imitator(cfg, WORKDIR, "nb_null", attack.a, clean_answers,
                          arch="unet", loss="l1", seed=6, steps=steps)
print(surrogate)
print(null)
""")

code("""
SM_A, N_A = surrogate(val.a), null(val.a)
suspects = {"watermarked B'": B_marked, "surrogate SM(A), trained on B'": SM_A,
            "null N(A), trained on clean M(A)": N_A, "clean B = M(A)": B, "clean inputs A": val.a}
rows = []
for name, x in suspects.items():
  v = kit.verify(x)
  rows.append({"suspect": name, "detected": v.detected, "hits": f"{v.n_hits}/{v.n_images}",
               "success rate": f"{100 * v.success_rate:.0f}%", "p-value": f"{v.p_value:.1e}",
               "mean statistic": v.stat_mean,
               "paper SR (NC > 0.95)": f"{100 * v.paper_success_rate:.0f}%"})
display(Markdown(report_lib.markdown_table(rows, list(rows[0]))))
# Whether a model reproduced the watermark residual at all (about 0 when it did not), which
# no extractor can read from a model that did not copy it:
for name, x in (("surrogate", SM_A), ("null", N_A)):
  print(f"{name}: corr(output - B, B' - B) = {common.residual_corr(x, B, B_marked):.3f}")

fig = report_lib.grid_figure({
    "SM(A)": SM_A[:n], "R(SM(A))": np.clip(kit.extract(SM_A[:n]), 0, 1),
    "N(A)": N_A[:n], "R(N(A))": np.clip(kit.extract(N_A[:n]), 0, 1)})
display(fig)
""", "figure-attack")

md("""
How strong the copy is depends on the scale: the README's *Results* reports the measured
quickstart numbers, including the attacker families that did not copy the watermark at 32 px
on a CPU budget.

## 4. Save the kit and load it back

A kit is an orbax checkpoint of H's and R's parameters with the watermark and the blank, plus
`kit.json` (calibration, config, provenance) and `manifest.json` (SHA-256 of every file).
`api.save_kit` writes a loaded kit to a new folder (it never overwrites one); loading it back
must give the same verdicts, and a damaged copy is refused.
""")

code("""
import shutil

saved = os.path.join(WORKDIR, f"kit_saved_{time.strftime('%Y%m%d_%H%M%S')}")
api.save_kit(kit, saved)
files = [p for p in pathlib.Path(saved).rglob("*") if p.is_file()]
for p in files:
  if p.parent == pathlib.Path(saved):
    print(f"{p.stat().st_size:>9,} B  {p.name}")
state = [p for p in files if "state" in p.relative_to(saved).parts]
print(f"{sum(p.stat().st_size for p in state):>9,} B  state/ (orbax checkpoint, {len(state)} files)")

kit2 = deepwm_jax.load_kit(saved)
same = {name: kit2.verify(x).to_dict() == kit.verify(x).to_dict()
        for name, x in suspects.items()}
print("same verdict from the saved kit:", same)
assert all(same.values()), "the saved kit decides differently"

damaged = saved + "_damaged"
shutil.copytree(saved, damaged)
with open(os.path.join(damaged, "kit.json"), "a") as f:
  f.write(" ")
try:
  deepwm_jax.load_kit(damaged)
except deepwm_jax.DeepwmError as e:
  print("damaged copy refused:", e)
else:
  raise AssertionError("a damaged kit was accepted")
shutil.rmtree(damaged)  # the copy this cell made
""")

md("""
## 5. The same code on a GPU or TPU, at the paper's scale

On a machine with a GPU or TPU (and the matching jax installed), run the setup cells again, and
JAX places everything on the accelerator: nothing in the code above changes.
`configs/paper_derain.py` is the paper's deraining setting (RGB 256 px, the reference networks,
200 epochs of 6000 images); on an accelerator `compute_dtype = "bfloat16"` runs the networks in
bfloat16 with float32 parameters. Give it your own photos with `data.source`. This cell only
builds that config and counts its parameters; set `RUN_PAPER = True` to train (hours on one
accelerator, not minutes).
""")

code("""
backend = jax.default_backend()
print(f"backend {backend}: {jax.device_count()} device(s): {jax.devices()}")

paper = config.load("paper_derain")
if backend in ("gpu", "tpu"):
  paper.compute_dtype = "bfloat16"
print(f"paper_derain: {paper.data.image_size} px, stage 1 {paper.stage1.steps:,} steps of "
      f"{paper.stage1.batch} images, compute dtype {paper.compute_dtype}")
print("parameters:", json.dumps(describe.describe_config(paper)))

RUN_PAPER = False
if RUN_PAPER:
  paper.data.source = "folder:/path/to/my_photos"  # a folder of your PNG/JPEG photos
  paper_report = pipeline.run(paper, str(ROOT / "runs" / "paper_derain"))
""")


def build() -> nbformat.NotebookNode:
  nb = new_notebook()
  nb.metadata.update({
      "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
      "language_info": {"name": "python"},
      "colab": {"provenance": [], "toc_visible": True},
  })
  for i, (kind, source, tags) in enumerate(CELLS):
    cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
    cell.id = f"cell-{i:02d}"
    if tags:
      cell.metadata["tags"] = list(tags)
    nb.cells.append(cell)
  nbformat.validate(nb)
  return nb


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true",
                      help="do not write; exit 1 when quickstart.ipynb differs from the cells")
  args = parser.parse_args(argv)
  text = nbformat.writes(build())
  if args.check:
    with open(PATH) as f:
      if f.read() != text:
        print(f"{PATH} is stale: run python notebooks/make_quickstart.py", file=sys.stderr)
        return 1
    return 0
  with open(PATH, "w") as f:
    f.write(text)
  print(f"wrote {PATH} ({len(CELLS)} cells)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
