#!/bin/bash
# pair.sh NAME SEED WC [overrides...]: a control run and its probe zoo, then a stage-2 variant
# with stage2.weak_copies=WC built from the same stage 1, surrogates and null models, and the
# same zoo members re-judged with the variant's kit (paired: only R and the calibration differ).
source benchmarks/seed_pairs/common.sh "$@"
SHARED="$SHARED eval_surrogate eval_null"  # trained on H(M(A)), not against R
$D run $CFG --workdir runs/${N}c > runs/${N}c.log 2>&1 || { echo "FAIL ${N}c"; exit 1; }
[ -d runs/${N}w ] || bash $HERE/copy_run.sh runs/${N}c runs/${N}w "$SHARED" stage2.weak_copies=$WC
( $D run $CFG --config.stage2.weak_copies=$WC --workdir runs/${N}w > runs/${N}w.log 2>&1 \
  || echo "FAIL ${N}w" ) &
$D attack --kit runs/${N}c/kit --config $ZOO --workdir runs/zoo_${N}c > runs/zoo_${N}c.log 2>&1
wait
if [ ! -d runs/zoo_${N}w ]; then  # the trained members, without the control's verdicts
  mkdir -p runs/zoo_${N}w
  for d in checkpoints logs outputs; do cp -r runs/zoo_${N}c/$d runs/zoo_${N}w/; done
fi
$D attack --kit runs/${N}w/kit --config $ZOO --workdir runs/zoo_${N}w > runs/zoo_${N}w.log 2>&1
echo "done $N"
