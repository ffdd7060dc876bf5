#!/usr/bin/env bash
# ANODE (Gholami et al. 2019), CIFAR-10: grad = anode, adjoint on SqNxt-23 (1x) with Euler N_t = 2
# (configs/experiment/anode_cifar10.yaml), then anode-report on the sweep.
#   scripts/sweep_anode.sh                        # the paper's setup: 350 epochs of CIFAR-10 per method (a GPU)
#   scripts/sweep_anode.sh cpu_budget             # 5,000 + 1,000 CIFAR-10 images on a 2-core CPU (under 20 minutes)
#   SEEDS=0,1,2 scripts/sweep_anode.sh cpu_budget # three seeds per method: mean ± std
exec "$(dirname "$0")/sweep.sh" anode_cifar10 "$@"
