"""The same zoo against several protections, side by side: the per-attack table of
docs/strategies.md ("The zoo against each protection").

  python benchmarks/zoo_side_by_side.py \
      "deep, agnostic=runs/zoo_agn" "deep, specific (M')=runs/zoo_spec" \
      "traditional=runs/zoo_trad" [--json runs/zoo_side_by_side.json]

Each argument is LABEL=ZOO_WORKDIR, a finished `deepwm attack` run (its report.json) with the
same zoo config. Nothing is trained or re-evaluated here: every cell is the report's own
row, the kit's calibrated verdict on that member's 64 held-out outputs. A cell reads
"success rate (D)": D when the verdict detects the watermark (p < alpha and a majority of
hits); "-" when that zoo has no such row.
"""
import argparse
import json
import os
import sys


def load(workdir: str) -> dict:
  path = os.path.join(workdir, "report.json")
  if not os.path.exists(path):
    sys.exit(f"{path} is missing: run `deepwm attack` into {workdir} first")
  with open(path) as f:
    return json.load(f)


def cell(row: dict | None) -> str:
  if row is None:
    return "-"
  return f"{row['success_rate']:.0%}" + (" D" if row["detected"] else "")


def table(reports: dict[str, dict]) -> str:
  labels = list(reports)
  names = []
  for rep in reports.values():
    names += [r["name"] for r in rep["members"] if r["name"] not in names]
  rows = {lab: {r["name"]: r for r in rep["members"]} for lab, rep in reports.items()}
  head = "| attack (member[@removal]) | " + " | ".join(labels) + " |"
  lines = [head, "|" + "---|" * (len(labels) + 1)]
  for ref in ("watermarked", "clean"):
    what = "protected outputs, no attack" if ref == "watermarked" else "clean M(A)"
    lines.append(f"| {what} | " + " | ".join(
        f"{reports[lab]['reference'][ref]['success_rate']:.0%}" for lab in labels) + " |")
  for name in names:
    lines.append(f"| {name} | " + " | ".join(cell(rows[lab].get(name)) for lab in labels)
                 + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("zoos", nargs="+", help="LABEL=ZOO_WORKDIR")
  p.add_argument("--json", help="also write the cells as JSON here")
  args = p.parse_args(argv)
  reports = {}
  for item in args.zoos:
    label, sep, workdir = item.rpartition("=")
    if not sep or not label:
      sys.exit(f"'{item}' is not LABEL=ZOO_WORKDIR")
    reports[label] = load(workdir)
  print(table(reports))
  if args.json:
    out = {lab: {r["name"]: {k: r[k] for k in ("success_rate", "detected", "p_value",
                                                 "task_psnr", "residual_corr")}
                 for r in rep["members"]} for lab, rep in reports.items()}
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
