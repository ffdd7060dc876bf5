#!/usr/bin/env bash
# ACA's comparison at 1/4 width on the full CIFAR-10 (configs/experiment/aca_resnet18_narrow_cifar10.yaml):
# per seed, the discrete ResNet-18 (euler, N_t = 1, direct), then the ODE-ResNet-18 with HeunEuler
# rtol = atol = 1e-2 and grad = aca, adjoint, direct, all in one sweep directory, then anode-report on it.
#   scripts/sweep_aca_narrow.sh [anode-train overrides...]
#   SEEDS="0 1 2" SWEEP_DIR=DIR scripts/sweep_aca_narrow.sh trainer.resume=auto
# The sweep lands in outputs/multirun/aca_resnet18_narrow_cifar10/<date>_<time>/ unless SWEEP_DIR is set;
# with trainer.resume=auto a rerun into the same SWEEP_DIR continues unfinished runs and skips finished ones.
# choice(...) makes the one-valued settings sweep parameters, so that job folders name them (anode-train
# leaves one-valued plain overrides out of job names; the seeds' runs would otherwise share one folder).
set -euo pipefail
[[ -z ${SWEEP_DIR:-} || ${SWEEP_DIR} == /* ]] || SWEEP_DIR="${PWD}/${SWEEP_DIR}"  # relative to the caller
cd "$(dirname "$0")/.."
experiment=aca_resnet18_narrow_cifar10
dir="${SWEEP_DIR:-outputs/multirun/${experiment}/$(date +%Y-%m-%d_%H-%M-%S)}"
status=0
for seed in ${SEEDS:-0 1 2}; do
    anode-train -m "experiment=${experiment}" "grad=choice(direct)" "solver=choice(euler)" "solver.steps=choice(1)" "trainer.seed=choice(${seed})" "hydra.sweep.dir=${dir}" "$@" || { status=$?; break; }
    anode-train -m "experiment=${experiment}" "trainer.seed=choice(${seed})" "hydra.sweep.dir=${dir}" "$@" || { status=$?; break; }
done
if [[ -d ${dir} ]]; then
    anode-report "${dir}" || { code=$?; [[ ${status} -ne 0 ]] || status=${code}; }  # anode-train's code comes first
fi
exit "${status}"
