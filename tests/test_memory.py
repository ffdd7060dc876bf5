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
    """Seen (MiB), N_t = 1 -> 8: direct 8.8 -> 64.8, anode 3.4 -> 17.4, aca 3.9 -> 7.8, adjoint 2.9 -> 3.1,
    interpolated (K = 8) 5.2 -> 5.5."""
    grads = ("direct", "anode", "aca", "adjoint", "interpolated")
    result = {(grad, steps): training_step_peak_mib(grad, steps) for grad in grads for steps in (1, 8)}
    print("\n4 blocks, rk4, training-step peak MiB at N_t = 1 -> 8: "
          + ", ".join(f"{grad} {result[grad, 1]:.1f} -> {result[grad, 8]:.1f}" for grad in grads))
    return result


def test_the_adjoints_memory_is_flat_in_steps(peaks):
    """adjoint and interpolated keep no state per step: under one state per block over 7 more steps."""
    state_mib = 8 * 16 * 16 * 16 * 4 / 2**20
    for grad in ("adjoint", "interpolated"):
        assert peaks[grad, 8] - peaks[grad, 1] < 4 * state_mib, peaks


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
