#!/usr/bin/env bash
# ACA (Zhuang et al. 2020), CIFAR-10: grad = aca, adjoint, direct on ODE-ResNet-18 with HeunEuler
# rtol = atol = 1e-2 (configs/experiment/aca_cifar10.yaml), then anode-report on the sweep.
#   scripts/sweep_aca.sh                        # the paper's setup: 90 epochs of CIFAR-10 per method (a GPU)
#   scripts/sweep_aca.sh cpu_budget             # 5,000 + 1,000 CIFAR-10 images on a 2-core CPU (under 20 minutes)
#   SEEDS=0,1,2 scripts/sweep_aca.sh cpu_budget # three seeds per method: mean ± std
#   scripts/sweep_aca.sh trainer.epochs=30      # any anode-train override
exec "$(dirname "$0")/sweep.sh" aca_cifar10 "$@"
