#!/bin/bash
# copy_run.sh SRC DST "NAMES" key=value... : a new workdir DST with the checkpoints and logs of
# the listed stages of SRC, and SRC's config.json with the keys set. `deepwm run` on DST then
# resumes: the copied stages are reused, every other stage is trained again.
set -e
SRC=$1; DST=$2; KEEP=$3; shift 3
[ -e "$DST" ] && { echo "$DST exists: remove it to copy again" >&2; exit 2; }
mkdir -p "$DST/checkpoints" "$DST/logs"
for c in $KEEP; do
  [ -d "$SRC/checkpoints/$c" ] || continue
  cp -r "$SRC/checkpoints/$c" "$DST/checkpoints/"
  cp "$SRC/logs/$c.jsonl" "$DST/logs/" 2>/dev/null || true
done
python3 - "$SRC/config.json" "$DST/config.json" "$@" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for kv in sys.argv[3:]:
  k, v = kv.split("=")
  *path, last = k.split(".")
  d = c
  for p in path:
    d = d.setdefault(p, {})
  d[last] = json.loads(v)
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
