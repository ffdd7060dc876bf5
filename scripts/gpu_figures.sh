#!/usr/bin/env bash
# The GPU figures, in one command, into one file (each part printed as it runs and appended as it goes):
#   scripts/gpu_figures.sh                        # every part, into outputs/gpu_figures/<date>_<time>/
#   OUT_DIR=DIR scripts/gpu_figures.sh bench      # some parts, added to DIR/figures.md
#   scripts/gpu_figures.sh tests gradcheck bench profile   # the call sized for one H200 command (< 8 min)
# PARTs (default: all, in this order; one call per part fits a machine with a per-command time limit):
#   tests      the gpu-marked tests: every method's fixed-step forward and backward without a host sync
#   gradcheck  scripts/gradcheck_ode.py (one block) and anode-gradcheck (resnet_tiny, every method, with its
#              columns) on CUDA, against the float64 reference
#   bench      scripts/bench_methods.py, resnet18_aca batch 128, N_t 1 and 8: fp32 (and torchdiffeq),
#              bf16 + channels_last (ops per step by part in every row)
#   compile    the same, bf16 alone and bf16 + channels_last + compile (minutes of compilation)
#   profile    scripts/profile_step.py: torch.profiler over 20 training steps of experiment=aca_cifar10 and of
#              experiment=anode_cifar10 on synthetic images: GPU-busy fraction, kernel against host time,
#              host syncs per step, the top kernels
#   loader     scripts/bench_loader.py: the device-resident loader against a training step
#   budgets    100 training steps of each paper comparison (synthetic CIFAR-shaped images) and
#              scripts/gpu_hour.py: minutes per CIFAR epoch and epochs per GPU-hour, per method
# SIZE=tiny shrinks every part to seconds (a dry run: DEVICE=cpu SIZE=tiny scripts/gpu_figures.sh ...; compile
# still compiles, minutes on a CPU); the figures are only those of the full sizes.
# Each part's output goes into OUT_DIR/figures.md under the command that produced it; the budget runs
# stay in OUT_DIR/runs/. A part already recorded in OUT_DIR is refused (nothing is overwritten); a
# failing part is recorded with its exit code and the rest still run. It uses the first visible GPU
# (CUDA_VISIBLE_DEVICES picks another); DEVICE=cpu runs the same commands on the CPU (slow). GIT_REV=REV names
# the commit in each part's heading where the tree has no .git (a copy sent to another machine).
set -uo pipefail
parts_all=(tests gradcheck bench compile profile loader budgets)
parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=("${parts_all[@]}")
for part in "${parts[@]}"; do
    if [[ ! " ${parts_all[*]} " =~ " ${part} " ]]; then
        echo "gpu_figures.sh: unknown part '${part}'; choose from ${parts_all[*]} (the output directory is OUT_DIR=...)" >&2
        exit 2
    fi
done
device=${DEVICE:-cuda}
size=${SIZE:-full}
if [[ ${size} != full && ${size} != tiny ]]; then
    echo "gpu_figures.sh: SIZE=${size} unknown; choose full (the figures) or tiny (a dry run)" >&2
    exit 2
fi
if [[ ${device} == cuda* ]] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_figures.sh: torch sees no CUDA device; run it on a GPU machine (or DEVICE=cpu)" >&2
    exit 2
fi
out=${OUT_DIR-outputs/gpu_figures/$(date +%Y-%m-%d_%H-%M-%S)}
if [[ -z ${out} ]]; then
    echo "gpu_figures.sh: OUT_DIR is empty; give a directory" >&2
    exit 2
fi
mkdir -p "${out}" && out=$(cd "${out}" && pwd) || exit 2  # absolute: the commands below run from the repository root
figures=${out}/figures.md
for part in "${parts[@]}"; do
    if [[ -e ${figures} ]] && grep -qx "<!-- part ${part} -->" "${figures}"; then
        echo "gpu_figures.sh: ${figures} already holds part '${part}'; give another OUT_DIR (nothing is overwritten)" >&2
        exit 2
    fi
done
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1  # a part killed at a time limit keeps the rows it printed
status=0

record() {  # record TITLE COMMAND...: run it, its output under a heading with the command
    local title=$1 code
    shift
    printf '### %s\n\n`%s`\n\n' "${title}" "$*" >>"${figures}"
    echo "== ${title}: $*"
    "$@" 2>&1 | tee -a "${figures}"
    code=${PIPESTATUS[0]}
    printf '\n(exit %s)\n\n' "${code}" >>"${figures}"
    [[ ${code} -eq 0 ]] || status=1
}

[[ -e ${figures} ]] || echo "# GPU figures" >"${figures}"
bench=(python scripts/bench_methods.py --device "${device}" --model resnet18_aca --widths '' --batch 128 --steps 1,8)
gradcheck=(python -m anode_bench.gradcheck "trainer.device=${device%%:*}" "hydra.run.dir='${out}/gradcheck'")  # anode-gradcheck
profile=(python scripts/profile_step.py --device "${device}")
gradcheck_ode=(python scripts/gradcheck_ode.py --device "${device}")
loader=(python scripts/bench_loader.py --device "${device}" --model resnet18_aca --batch 128)
budget_steps=50 budget_test=500 budget_size=()  # budgets: 2 epochs of 50 steps, each experiment's model and batch
layout=(--channels-last)
if [[ ${size} == tiny ]]; then
    bench=(python scripts/bench_methods.py --device "${device}" --model resnet_tiny --widths 4,4,4,4 --batch 2 --steps 1
           --repeats 1)
    gradcheck+=(dataset.train_size=16 dataset.test_size=8 gradcheck.batch_size=4 gradcheck.repeats=1
                "gradcheck.solvers=[euler,alf]" "gradcheck.steps=[1]" "gradcheck.grads=[direct,aca,mali]")
    profile+=(--batch 2 --steps 2 --warmup 1 --top 3)
    gradcheck_ode+=(--solvers euler --steps 1 --batch 2 --channels 4 --size 8 --repeats 1)
    loader=(python scripts/bench_loader.py --device "${device}" --model resnet_tiny --batch 8 --images 256 --train-steps 1)
    budget_steps=5 budget_test=8 budget_size=(trainer.batch_size=4 probe.every=0)
fi
[[ ${device} == cuda* ]] || layout=()  # channels_last is a CUDA option
profile_model() {  # the experiment's model, or its tiny counterpart for SIZE=tiny
    [[ ${size} == tiny ]] && { [[ $1 == aca_cifar10 ]] && echo model=resnet_tiny || echo model=sqnxt_tiny; }
}
for part in "${parts[@]}"; do
    {
        printf '<!-- part %s -->\n## %s, %s, git %s\n\n' "${part}" "${part}" "$(date '+%Y-%m-%d %H:%M')" \
            "${GIT_REV:-$(git describe --always --dirty 2>/dev/null || echo '?')}"
        python -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'); print()"
    } >>"${figures}"
    case ${part} in
    tests) record "gpu-marked tests" python -m pytest -q -m gpu tests ;;
    gradcheck)
        record "one block against the float64 reference" "${gradcheck_ode[@]}"
        record "anode-gradcheck" "${gradcheck[@]}"
        ;;
    bench)
        record "methods, fp32" "${bench[@]}"
        record "methods, bf16 + channels_last" "${bench[@]}" --precision bf16 "${layout[@]}" --skip-torchdiffeq
        ;;
    compile)
        record "methods, bf16" "${bench[@]}" --precision bf16 --skip-torchdiffeq
        record "methods, bf16 + channels_last + compile" "${bench[@]}" --precision bf16 "${layout[@]}" --compile --skip-torchdiffeq
        ;;
    profile)
        for experiment in aca_cifar10 anode_cifar10; do
            record "profile, ${experiment}" "${profile[@]}" "experiment=${experiment}" dataset=synthetic $(profile_model "${experiment}")
        done
        ;;
    loader) record "loader" "${loader[@]}" ;;
    budgets)
        for experiment in aca_cifar10 anode_cifar10; do
            runs=${out}/runs/${experiment}
            batch=$([[ ${experiment} == aca_cifar10 ]] && echo 128 || echo 256)  # the experiment's trainer.batch_size
            [[ ${size} == tiny ]] && batch=4
            record "${experiment}: 2 x ${budget_steps} steps per method" anode-train -m "experiment=${experiment}" \
                dataset=synthetic "dataset.train_size=$((budget_steps * batch))" "dataset.test_size=${budget_test}" \
                trainer.epochs=2 "trainer.log_every=$((budget_steps / 5))" \
                "trainer.device=${device%%:*}" "hydra.sweep.dir='${runs}'" $(profile_model "${experiment}") "${budget_size[@]}"
            record "${experiment}: per CIFAR epoch and per GPU-hour" python scripts/gpu_hour.py "${runs}"
        done
        ;;
    esac
done
echo "figures: ${figures}"
exit "${status}"
