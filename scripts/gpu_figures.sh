#!/usr/bin/env bash
# Every figure issue 8 (and issue 7's GPU-hour budgets) asks of a GPU, in one command, into one file:
#   scripts/gpu_figures.sh                        # every part, into outputs/gpu_figures/<date>_<time>/
#   OUT_DIR=DIR scripts/gpu_figures.sh bench      # some parts, added to DIR/figures.md
# PARTs (default: all, in this order; one call per part fits a machine with a per-command time limit):
#   tests      the gpu-marked tests: every method's fixed-step forward and backward without a host sync
#   gradcheck  scripts/gradcheck_ode.py on CUDA: every method against the float64 reference
#   bench      scripts/bench_methods.py, resnet18_aca batch 128, N_t 1 and 8: fp32 (and torchdiffeq), bf16,
#              bf16 + channels_last, bf16 + channels_last + compile
#   loader     scripts/bench_loader.py: the device-resident loader against a training step
#   budgets    100 training steps of each paper comparison (synthetic CIFAR-shaped images) and
#              scripts/gpu_hour.py: minutes per CIFAR epoch and epochs per GPU-hour, per method
# Each part's output goes into OUT_DIR/figures.md under the command that produced it; the budget runs
# stay in OUT_DIR/runs/. A part already recorded in OUT_DIR is refused (nothing is overwritten); a
# failing part is recorded with its exit code and the rest still run. It uses the first visible GPU
# (CUDA_VISIBLE_DEVICES picks another); DEVICE=cpu runs the same commands on the CPU (slow).
set -uo pipefail
parts_all=(tests gradcheck bench loader budgets)
parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=("${parts_all[@]}")
for part in "${parts[@]}"; do
    if [[ ! " ${parts_all[*]} " =~ " ${part} " ]]; then
        echo "gpu_figures.sh: unknown part '${part}'; choose from ${parts_all[*]} (the output directory is OUT_DIR=...)" >&2
        exit 2
    fi
done
device=${DEVICE:-cuda}
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
for part in "${parts[@]}"; do
    {
        printf '<!-- part %s -->\n## %s, %s, git %s\n\n' "${part}" "${part}" "$(date '+%Y-%m-%d %H:%M')" \
            "$(git describe --always --dirty 2>/dev/null || echo '?')"
        python -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'); print()"
    } >>"${figures}"
    case ${part} in
    tests) record "gpu-marked tests" python -m pytest -q -m gpu tests ;;
    gradcheck) record "one block against the float64 reference" python scripts/gradcheck_ode.py --device "${device}" ;;
    bench)
        record "methods, fp32" "${bench[@]}"
        record "methods, bf16" "${bench[@]}" --precision bf16 --skip-torchdiffeq
        record "methods, bf16 + channels_last" "${bench[@]}" --precision bf16 --channels-last --skip-torchdiffeq
        record "methods, bf16 + channels_last + compile" "${bench[@]}" --precision bf16 --channels-last --compile --skip-torchdiffeq
        ;;
    loader) record "loader" python scripts/bench_loader.py --device "${device}" --model resnet18_aca --batch 128 ;;
    budgets)
        for experiment in aca_cifar10 anode_cifar10; do
            runs=${out}/runs/${experiment}
            batch=$([[ ${experiment} == aca_cifar10 ]] && echo 128 || echo 256)  # the experiment's trainer.batch_size
            record "${experiment}: 2 x 50 steps per method" anode-train -m "experiment=${experiment}" dataset=synthetic \
                "dataset.train_size=$((50 * batch))" dataset.test_size=500 trainer.epochs=2 trainer.log_every=10 \
                "trainer.device=${device%%:*}" "hydra.sweep.dir='${runs}'"
            record "${experiment}: per CIFAR epoch and per GPU-hour" python scripts/gpu_hour.py "${runs}"
        done
        ;;
    esac
done
echo "figures: ${figures}"
exit "${status}"
