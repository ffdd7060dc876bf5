#!/usr/bin/env bash
# Every figure issue 8 (and issue 7's GPU-hour budgets) asks of a GPU, in one command, into one file:
#   scripts/gpu_figures.sh [OUT_DIR] [PART ...]     # OUT_DIR default outputs/gpu_figures/<date>_<time>
# PARTs (default: all, in this order; each is also a separate call, to fit a time-limited machine):
#   tests      the gpu-marked tests: every method's fixed-step forward and backward without a host sync
#   gradcheck  scripts/gradcheck_ode.py on CUDA: every method against the float64 reference
#   bench      scripts/bench_methods.py, resnet18_aca batch 128, N_t 1 and 8: fp32 (and torchdiffeq), bf16,
#              bf16 + channels_last, bf16 + channels_last + compile
#   loader     scripts/bench_loader.py: the device-resident loader against a training step
#   budgets    100 training steps of each paper comparison (synthetic CIFAR-shaped images) and
#              scripts/gpu_hour.py: minutes per CIFAR epoch and epochs per GPU-hour, per method
# Everything printed goes to OUT_DIR/figures.md, each part under the command that produced it; the
# budget runs are kept in OUT_DIR/runs/. An OUT_DIR that already has figures.md is refused.
# DEVICE=cuda:1 picks another GPU. A failing part is recorded with its exit code, and the rest still run.
set -uo pipefail
cd "$(dirname "$0")/.."
parts_all=(tests gradcheck bench loader budgets)
out=outputs/gpu_figures/$(date +%Y-%m-%d_%H-%M-%S)
if [[ $# -gt 0 && ! " ${parts_all[*]} " =~ " $1 " ]]; then
    out=$1
    shift
fi
parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=("${parts_all[@]}")
for part in "${parts[@]}"; do
    if [[ ! " ${parts_all[*]} " =~ " ${part} " ]]; then
        echo "gpu_figures.sh: unknown part '${part}'; choose from ${parts_all[*]}" >&2
        exit 2
    fi
done
if [[ -e ${out}/figures.md ]]; then
    echo "gpu_figures.sh: ${out}/figures.md exists; give another OUT_DIR (nothing is overwritten)" >&2
    exit 2
fi
device=${DEVICE:-cuda}
mkdir -p "${out}"
figures=${out}/figures.md
status=0

record() {  # record TITLE COMMAND...: run it, its output under a heading with the command
    local title=$1 code
    shift
    printf '## %s\n\n`%s`\n\n' "${title}" "$*" >>"${figures}"
    echo "== ${title}: $*"
    "$@" 2>&1 | tee -a "${figures}"
    code=${PIPESTATUS[0]}
    printf '\n(exit %s)\n\n' "${code}" >>"${figures}"
    [[ ${code} -eq 0 ]] || status=1
}

{
    echo "# GPU figures, $(date '+%Y-%m-%d %H:%M'), git $(git describe --always --dirty 2>/dev/null || echo '?')"
    echo
    python -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
    echo
} >>"${figures}"

bench=(python scripts/bench_methods.py --device "${device}" --model resnet18_aca --widths '' --batch 128 --steps 1,8)
for part in "${parts[@]}"; do
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
            record "${experiment}: 2 x 50 steps per method" anode-train -m "experiment=${experiment}" dataset=synthetic \
                dataset.train_size=$((50 * $([[ ${experiment} == aca_cifar10 ]] && echo 128 || echo 256))) \
                dataset.test_size=500 trainer.epochs=2 trainer.log_every=10 "trainer.device=${device}" \
                "hydra.sweep.dir=${runs}"
            record "${experiment}: per CIFAR epoch and per GPU-hour" python scripts/gpu_hour.py "${runs}"
        done
        ;;
    esac
done
echo "figures: ${figures}"
exit "${status}"
