#!/usr/bin/env bash
# The accelerator checks behind the "Measured on an NVIDIA H100" sections of docs/performance.md,
# docs/zoo.md and docs/scale_out.md: run from the repository root on a machine with a GPU.
#
#   benchmarks/gpu_check.sh OUTDIR STAGE...
#
# Stages, each under its own time limit (seconds, overridable as T_<STAGE>=N) so that a
# run with a fixed device budget gets every stage's output even when one runs long:
#   env         nvidia-smi, versions, jax.devices(), a float32 and a bfloat16 matmul rate
#   tests       a pytest subset with device code paths (TESTS overrides the list)
#   bench       deepwm bench --all (float32), --json records
#   bench256    the stage-1 case at reference widths (ngf 64, R 128) at 256 px
#   zoobench    zoo member-steps/s, vmapped vs sequential, at 4, 16 and 64 members
#   bf16        deepwm bench on the stage-1 cases (BF16_ONLY picks others) in bfloat16
#   quickstart  deepwm run --config configs/quickstart.py; report.json and the kit come back
#   zoo         deepwm attack --config configs/zoo_quick.py against the quickstart's kit
# DEADLINE=N caps the stages together at N seconds from the start (a later stage gets what is
# left). The package's dependencies must be importable (PYTHONPATH or an install);
# JAX_PLATFORMS defaults to cuda so that nothing falls back to the CPU silently.
set -o pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR STAGE...}
shift
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
PY=${PYTHON:-python3}
QS=${QS_WORKDIR:-/tmp/qs}
ZOO=${ZOO_WORKDIR:-/tmp/zoo}
deepwm() { "$PY" -m deepwm_jax.cli "$@"; }
limit() { local v="T_$1"; echo "${!v:-$2}"; }
stamp() { echo "=== [$(date +%T)] $*"; }

stage_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" - <<'EOF'
import os, time
import jax, jax.numpy as jnp
import flax, optax, orbax.checkpoint
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "orbax", orbax.checkpoint.__version__)
print("devices", jax.devices(), "backend", jax.default_backend())
n = int(os.environ.get("MATMUL_N", 8192))
for dtype in (jnp.float32, jnp.bfloat16):
  a = jax.random.normal(jax.random.key(1), (n, n), dtype)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, a))
  best = float("inf")
  for _ in range(10):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a, a))
    best = min(best, time.perf_counter() - t0)
  print(f"matmul {n}^3 {jnp.dtype(dtype).name}: {2 * n**3 / best / 1e12:.0f} TFLOP/s "
        "(default precision, best of 10)")
EOF
}

stage_tests() {
  # shellcheck disable=SC2086
  XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -q -p no:cacheprovider --durations=10 \
    ${TESTS:-tests/test_layers.py tests/test_accelerator_paths.py tests/test_loop.py \
             tests/test_metrics.py tests/test_bench.py tests/test_pipeline.py tests/test_zoo.py}
}

stage_bench() {
  deepwm bench --all --reps 30 --peak-size 8192 --json "$OUT/gpu_h100_bench.json"
}

stage_bench256() {
  deepwm bench --only stage1-128-ref --image-size 256 --reps 20 --peak-size 8192 \
    --json "$OUT/gpu_h100_bench_256.json"
}

stage_bf16() {
  local only=${BF16_ONLY:-stage1}  # e.g. 'ref' for the reference-width cases
  deepwm bench --only "$only" --compute-dtype bfloat16 --reps 30 --peak-size 8192 \
    --json "$OUT/gpu_h100_bench_bf16_$only.json"
}

stage_zoobench() {
  "$PY" - "$OUT/gpu_h100_zoo_bench.json" <<'EOF'
import json, os, sys
from deepwm_jax.tools import zoo_bench as bench
rows = []
for members in map(int, os.environ.get("ZOO_MEMBERS", "4 16 64").split()):
  r = bench.member_steps_per_s(members=members, steps=int(os.environ.get("ZOO_STEPS", 20)),
                               repeats=3)
  print(f"members {members}: vmapped {r['vmapped_member_steps_per_s']:.0f}, sequential "
        f"{r['sequential_member_steps_per_s']:.0f} member-steps/s, speedup {r['speedup']:.2f}x, "
        f"first step {r['first_step_seconds']}", flush=True)
  rows.append(r)
  json.dump(rows, open(sys.argv[1], "w"), indent=1)
EOF
}

stage_quickstart() {
  deepwm run --config "${QS_CONFIG:-configs/quickstart.py}" --workdir "$QS"
  local rc=$?
  cp "$QS/report.json" "$OUT/gpu_h100_quickstart_report.json" 2>/dev/null
  # The kit and the task model M (what `deepwm attack` reads) fit in one small archive.
  tar czf "$OUT/qs_kit.tgz" -C "$(dirname "$QS")" "$(basename "$QS")/kit" \
    "$(basename "$QS")/checkpoints/task" "$(basename "$QS")/config.json" 2>/dev/null
  return $rc
}

stage_zoo() {
  deepwm attack --kit "$QS/kit" --config "${ZOO_CONFIG:-configs/zoo_quick.py}" --workdir "$ZOO"
  local rc=$?
  cp "$ZOO/report.json" "$OUT/gpu_h100_zoo_quick_report.json" 2>/dev/null
  cp "$ZOO/report.md" "$OUT/gpu_h100_zoo_quick_report.md" 2>/dev/null
  # Finished groups' rows and markers, so a later run can resume from them.
  tar czf "$OUT/zoo_rows.tgz" --exclude=checkpoints --exclude=tensorboard \
    -C "$(dirname "$ZOO")" "$(basename "$ZOO")" 2>/dev/null
  return $rc
}

declare -A DEFAULT_LIMIT=([env]=60 [tests]=180 [bench]=200 [bench256]=60 [zoobench]=90
                          [bf16]=90 [quickstart]=420 [zoo]=540)
status=0
for s in "$@"; do
  t=$(limit "$s" "${DEFAULT_LIMIT[$s]:-300}")
  if [ -n "$DEADLINE" ]; then
    left=$((DEADLINE - SECONDS))
    [ "$left" -lt 15 ] && { stamp "stage $s skipped: ${left} s left"; status=124; continue; }
    [ "$left" -lt "$t" ] && t=$left
  fi
  stamp "stage $s (limit ${t} s)"
  start=$SECONDS
  export -f "stage_$s" deepwm 2>/dev/null
  export PY OUT QS ZOO
  timeout --signal=INT --kill-after=10 "$t" bash -c "stage_$s"
  rc=$?
  stamp "stage $s: rc $rc, $((SECONDS - start)) s"
  [ $rc -ne 0 ] && status=$rc
done
exit $status
