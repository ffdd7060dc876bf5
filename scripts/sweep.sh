#!/usr/bin/env bash
# One paper comparison as a Hydra multirun, then its report (sweep_aca.sh and sweep_anode.sh call this).
#   scripts/sweep.sh EXPERIMENT [VARIANT] [anode-train overrides...]
#   scripts/sweep.sh aca_cifar10 cpu_budget trainer.epochs=2    # experiment=aca_cifar10_cpu_budget, 2 epochs
# The experiment's hydra.sweeper.params sweep the gradient methods; SEEDS=0,1,2 (or "0 1 2") adds seeds
# (mean ± std per method in report.md), each named in its job folder. Runs from the repository root; the
# sweep lands in outputs/multirun/EXPERIMENT/<date>_<time>/ (SWEEP_DIR=DIR puts it elsewhere).
# A job that fails or is refused (its line says why) does not stop the others; the report is written
# for the jobs that ran, and the exit code is anode-train's. On a shared CPU, OMP_NUM_THREADS=1 keeps
# torch from stalling.
set -euo pipefail
[[ -z ${SWEEP_DIR:-} || ${SWEEP_DIR} == /* ]] || SWEEP_DIR="${PWD}/${SWEEP_DIR}"  # relative to the caller
cd "$(dirname "$0")/.."
experiment=$1
shift
if [[ $# -gt 0 && $1 != *=* ]]; then
    experiment="${experiment}_$1"
    shift
fi
dir="${SWEEP_DIR:-outputs/multirun/${experiment}/$(date +%Y-%m-%d_%H-%M-%S)}"
status=0
seeds=${SEEDS:-0}
seeds=${seeds// /,}
anode-train -m "experiment=${experiment}" "trainer.seed=choice(${seeds})" "hydra.sweep.dir=${dir}" "$@" || status=$?
if [[ -d ${dir} ]]; then
    anode-report "${dir}" || { code=$?; [[ ${status} -ne 0 ]] || status=${code}; }  # anode-train's code comes first
fi
exit "${status}"
