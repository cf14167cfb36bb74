# Sourced by pair.sh and pairm.sh: N SEED WC from the arguments, the run config and the zoo.
N=$1; S=$2; WC=$3; shift 3
HERE=benchmarks/seed_pairs
CFG="--config ${CONFIG:-configs/studies/quickstart_cnn_s2.py} --config.seed=$S"
CFG="$CFG --config.evaluate.per_image_fpr=0.001 $*"
ZOO=${ZOO:-$HERE/zoo_probe.py}
# Stages whose networks do not depend on R: the variant reuses them.
SHARED="task stage1 surrogate surrogate_cnn null_protector_unet null_protector_resnet"
D="python3 -m deepwm_jax.cli"
mkdir -p runs
