#!/bin/bash
# pairm.sh NAME SEED WC [overrides...]: the same with protect.strategy=specific (M'). The
# variant shares stage 1 and the models before stage 2; each M' is trained against its own R,
# so each gets its own probe zoo.
source benchmarks/seed_pairs/common.sh "$@"
CFG="$CFG --config.protect.strategy=specific"
$D run $CFG --workdir runs/${N}c > runs/${N}c.log 2>&1 &
PC=$!
# The variant starts once the control is in stage 2: everything it shares is trained by then.
while [ ! -d runs/${N}c/checkpoints/stage2 ] && kill -0 $PC 2>/dev/null; do sleep 2; done
sleep 3
[ -d runs/${N}w ] || bash $HERE/copy_run.sh runs/${N}c runs/${N}w "$SHARED" stage2.weak_copies=$WC
$D run $CFG --config.stage2.weak_copies=$WC --workdir runs/${N}w > runs/${N}w.log 2>&1 \
  || echo "FAIL ${N}w"
wait $PC || echo "FAIL ${N}c"
$D attack --kit runs/${N}c/kit --config $ZOO --workdir runs/zoo_${N}c > runs/zoo_${N}c.log 2>&1 &
$D attack --kit runs/${N}w/kit --config $ZOO --workdir runs/zoo_${N}w > runs/zoo_${N}w.log 2>&1
wait
echo "done $N"
