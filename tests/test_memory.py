"""Memory asymptotics on the CPU allocator (DESIGN.md section 6), for a stack of 4 ODE blocks.

direct keeps every stage of every step: O(L·N_t·s·A). anode keeps block inputs and recomputes
one block at a time: O(L·|z|) + O(N_t·s·A). aca keeps the accepted states: O(L·N_t·|z|) + O(s·A).
"""
import pytest
import torch
from problems import ConvBNReLU

from anode_bench.metrics import peak_memory_mib
from anode_bench.ode import ODEBlock


def training_step_peak_mib(grad, steps):
    torch.manual_seed(0)
    blocks = torch.nn.Sequential(*[ODEBlock(ConvBNReLU(16), solver="rk4", steps=steps, grad=grad) for _ in range(4)])
    x = torch.randn(8, 16, 16, 16)

    def step():
        blocks(x).square().sum().backward()

    step()  # warm-up: parameter gradients exist before the measured step
    return peak_memory_mib(step)


@pytest.fixture(scope="module")
def peaks():
    return {(grad, steps): training_step_peak_mib(grad, steps) for grad in ("direct", "anode", "aca") for steps in (1, 8)}


def test_direct_memory_grows_several_fold_with_steps(peaks):
    assert peaks["direct", 8] > 4 * peaks["direct", 1], peaks


@pytest.mark.parametrize("grad", ["anode", "aca"])
def test_checkpointing_stays_under_half_of_direct_at_eight_steps(peaks, grad):
    assert peaks[grad, 8] < 0.5 * peaks["direct", 8], peaks


def test_aca_memory_grows_by_states_not_graphs(peaks):
    """aca adds one state |z| per extra step: far less growth than direct's full stage graphs."""
    aca_growth = peaks["aca", 8] - peaks["aca", 1]
    direct_growth = peaks["direct", 8] - peaks["direct", 1]
    assert aca_growth < 0.25 * direct_growth, peaks
