"""Tables of paired seed runs (pair.sh / pairm.sh): one row per run, the probe zoo's rates.

  python benchmarks/seed_pairs/summarize.py --runs runs s0 s1 s2 [--json out.json]

For each NAME it reads runs/NAMEc and runs/NAMEw (control, weak copies) and their zoos
runs/zoo_NAMEc, runs/zoo_NAMEw; --runs may be given several times (searched in order);
--variant r reads runs/NAMEr instead of NAMEw (another variant's suffix).
"""
import argparse
import json
import os

MEMBERS = ("unet-l2", "unet-l1", "unet_small-l2", "cnn-l2", "resnet1-l2", "edsr-l2",
           "resnet6-l2", "unet-ssim")


def _load(dirs, name):
  for d in dirs:
    path = os.path.join(d, name, "report.json")
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
  return None


def row(dirs, run):
  rep, zoo = _load(dirs, run), _load(dirs, "zoo_" + run)
  if rep is None:
    return None
  out = {"run": run, "psnr": rep["fidelity"]["psnr"], "threshold": rep["calibration"]["threshold"],
         "p0": rep["calibration"]["p0"],
         "warnings": rep.get("warnings")}  # None: the run predates the kit's self-check
  if "specific" in rep:  # M': its own fidelity and task quality
    sp = rep["specific"]
    out["specific"] = {"psnr_Mprime_vs_HM": sp["fidelity"]["psnr_Mprime_vs_HM"],
                       "task_M": sp["task"]["psnr_M_vs_B"],
                       "task_Mprime": sp["task"]["psnr_Mprime_vs_B"],
                       "success_rate": sp["watermarked"]["success_rate"]}
  if zoo is not None:
    members = {m["name"]: m for m in zoo["members"]}
    out["zoo"] = {k: members[k]["success_rate"] for k in MEMBERS if k in members}
    nulls = [m for m in zoo["members"] if m.get("null")]
    out["nulls_detected"] = sum(bool(m["detected"]) for m in nulls)
    out["null_max_rate"] = max((m["success_rate"] for m in nulls), default=0.0)
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", action="append", default=[])
  ap.add_argument("--json")
  ap.add_argument("--variant", default="w", help="the variant runs' suffix (default w)")
  ap.add_argument("names", nargs="+")
  a = ap.parse_args()
  dirs = a.runs or ["runs"]
  rows = [r for n in a.names for v in ("c", a.variant) if (r := row(dirs, n + v)) is not None]
  print("| run | PSNR | threshold | p0 | " + " | ".join(MEMBERS) + " | >= 90% | nulls detected |")
  print("|---|---:|---:|---:|" + "---:|" * len(MEMBERS) + "---:|---:|")
  for r in rows:
    z = r.get("zoo", {})
    rates = [f"{100 * z[k]:.0f}" if k in z else "-" for k in MEMBERS]
    print(f"| {r['run']} | {r['psnr']:.1f} | {r['threshold']:.3f} | {r['p0']:.1e} | "
          + " | ".join(rates) + f" | {sum(v >= 0.9 for v in z.values())}/{len(z)} | "
          + f"{r.get('nulls_detected', '-')} |")
  for v, label in (("c", "control"), (a.variant, "variant")):
    zs = [r["zoo"] for r in rows if r["run"].endswith(v) and "zoo" in r]
    if zs:
      means = {k: [z[k] for z in zs if k in z] for k in MEMBERS}
      print(f"{label} means over {len(zs)} runs: " + ", ".join(
          f"{k} {100 * sum(v) / len(v):.0f}" for k, v in means.items() if v))
  if a.json:
    with open(a.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
