#!/bin/bash
# pair_resnet.sh NAME SEED WC [overrides...]: a control run (stage2.weak_copies=WC) and its probe
# zoo, then a variant that also trains R on a ResNet surrogate in stage 2
# (attack.extra_surrogate_archs=('cnn','resnet')), built from the same stage 1, surrogates and
# null models, with the control's zoo members re-judged by its kit (runs/NAMEr, zoo_NAMEr).
source benchmarks/seed_pairs/common.sh "$@"
CFG="$CFG --config.stage2.weak_copies=$WC"
SHARED="$SHARED eval_surrogate eval_null"
$D run $CFG --workdir runs/${N}c > runs/${N}c.log 2>&1 || { echo "FAIL ${N}c"; exit 1; }
[ -d runs/${N}r ] || bash $HERE/copy_run.sh runs/${N}c runs/${N}r "$SHARED" \
  'attack.extra_surrogate_archs=["cnn","resnet"]'
( $D run $CFG "--config.attack.extra_surrogate_archs=('cnn','resnet')" --workdir runs/${N}r \
  > runs/${N}r.log 2>&1 || echo "FAIL ${N}r" ) &
$D attack --kit runs/${N}c/kit --config $ZOO --workdir runs/zoo_${N}c > runs/zoo_${N}c.log 2>&1
wait
if [ ! -d runs/zoo_${N}r ]; then
  mkdir -p runs/zoo_${N}r
  for d in checkpoints logs outputs; do cp -r runs/zoo_${N}c/$d runs/zoo_${N}r/; done
fi
$D attack --kit runs/${N}r/kit --config $ZOO --workdir runs/zoo_${N}r > runs/zoo_${N}r.log 2>&1
echo "done $N"
