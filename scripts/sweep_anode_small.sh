#!/usr/bin/env bash
# ANODE's small-network table on the full CIFAR-10: per seed, the baseline (the discrete network: euler,
# N_t = 1, direct), then the ODE network with grad = anode and adjoint (configs/experiment/anode_NET_cifar10.yaml),
# all in one sweep directory, then anode-report on it. Seed by seed, so that a sweep cut short still
# holds every method at the seeds it finished.
#   scripts/sweep_anode_small.sh NET [anode-train overrides...]     # NET: resnet4 | resnet10 | alexnet
#   SEEDS="0 1 2" scripts/sweep_anode_small.sh resnet4 trainer.resume=auto
# The sweep lands in outputs/multirun/anode_NET_cifar10/<date>_<time>/ (SWEEP_DIR=DIR puts it elsewhere;
# with trainer.resume=auto, rerunning with the same SWEEP_DIR continues unfinished runs and skips
# finished ones). A failed or refused job ends the sweep after its seed's other jobs; the report is
# written for the runs that ran.
# choice(...) makes the one-valued grad, N_t and seed sweep parameters, so that every job folder
# names them (0_grad=direct,solver.steps=1,trainer.seed=2): anode-train leaves one-valued plain
# overrides out of job names, and the seeds' runs would otherwise share one folder.
set -euo pipefail
[[ -z ${SWEEP_DIR:-} || ${SWEEP_DIR} == /* ]] || SWEEP_DIR="${PWD}/${SWEEP_DIR}"  # relative to the caller
cd "$(dirname "$0")/.."
case ${1:-} in
    resnet4 | resnet10 | alexnet) experiment="anode_$1_cifar10" ;;
    *) echo "usage: $0 resnet4|resnet10|alexnet [anode-train overrides...]; got '${1:-}'" >&2; exit 2 ;;
esac
shift
dir="${SWEEP_DIR:-outputs/multirun/${experiment}/$(date +%Y-%m-%d_%H-%M-%S)}"
status=0
for seed in ${SEEDS:-0 1 2}; do
    anode-train -m "experiment=${experiment}" "grad=choice(direct)" "solver.steps=choice(1)" "trainer.seed=choice(${seed})" "hydra.sweep.dir=${dir}" "$@" || { status=$?; break; }
    anode-train -m "experiment=${experiment}" "trainer.seed=choice(${seed})" "hydra.sweep.dir=${dir}" "$@" || { status=$?; break; }
done
if [[ -d ${dir} ]]; then
    anode-report "${dir}" || { code=$?; [[ ${status} -ne 0 ]] || status=${code}; }  # anode-train's code comes first
fi
exit "${status}"
