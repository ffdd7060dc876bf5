"""Memory asymptotics on the CPU allocator (docs/metrics.md), for a stack of 4 ODE blocks.

direct keeps every stage of every step: O(L·N_t·s·A). anode keeps block inputs and recomputes
one block at a time: O(L·|z|) + O(N_t·s·A). aca keeps the accepted states: O(L·N_t·|z|) + O(s·A).
"""
import pytest
import torch
from problems import ConvBNReLU

from anode_bench.metrics import peak_memory_mib
from anode_bench.ode import ODEBlock, odeint

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module-scoped fixtures once


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


class Scale(torch.nn.Module):
    """f(t, z) = θ·z: a step's graph is a few |z|, so the states a method keeps dominate its peak."""

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, t, z):
        return self.theta * z


def revolve_peak_states(checkpoints, steps=64):
    """Peak of one forward+backward in units of |z| (0.5 MiB)."""
    func, z0 = Scale(), torch.randn(2**16, dtype=torch.float64, requires_grad=True)

    def step():
        odeint(func, z0, solver="euler", steps=steps, grad="revolve", grad_options={"checkpoints": checkpoints}).sum().backward()

    step()
    return peak_memory_mib(step) / 0.5


def test_revolve_holds_one_state_per_snapshot_not_two():
    """Griewank's budget: K snapshots (z0 among them) plus the working state. The forward's snapshots
    are freed as the schedule passes them, so K more snapshots cost K more states. Seen (|z|), N = 64:
    K = 8: 16.2, K = 16: 23.3, 0.9 a snapshot; before the backward could free them, 24.2 and 39.3 (1.9:
    the forward's K and the backward's K side by side); 17.2 at K = 8 if z_{N-1} outlives its step."""
    peaks = {k: revolve_peak_states(k) for k in (8, 16)}
    print("\nrevolve, euler N = 64, peak in |z|: " + ", ".join(f"K = {k}: {p:.1f}" for k, p in peaks.items()))
    assert (peaks[16] - peaks[8]) / 8 < 1.25, peaks
    assert peaks[8] < 16.7, peaks  # 17.2 if the forward's z_{N-1} stayed alive after its step


def test_revolve_refuses_a_second_backward_through_freed_snapshots():
    func, z0 = Scale(), torch.randn(8, dtype=torch.float64, requires_grad=True)
    z1 = odeint(func, z0, solver="euler", steps=8, grad="revolve", grad_options={"checkpoints": 2})
    z1.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="grad 'revolve' freed its checkpoints in an earlier backward through this "
                                           "graph: backpropagate through it once \\(no retain_graph\\), or use grad 'aca'"):
        z1.sum().backward()


def test_an_adaptive_solve_holds_one_attempts_stages_at_a_time():
    """dopri5 without a graph (every checkpointing method's forward, the adjoint's reverse solve):
    the 7 stages of the attempt under way, not also the last one's. Seen, in |z|: 15.0 (13.0 before the
    controller kept u = |z| + atol/rtol of the current state between attempts, and z_next's for the
    next); 20.0 while the previous attempt's stages lived until the next rk_step returned."""
    z0 = torch.randn(2**16, dtype=torch.float64)  # 0.5 MiB

    def solve():
        with torch.no_grad():
            odeint(lambda t, z: torch.tanh(z), z0, solver="dopri5", rtol=1e-8, atol=1e-8)

    peak_states = peak_memory_mib(solve) / 0.5
    print(f"\ndopri5 without a graph: peak {peak_states:.1f} |z|")
    assert peak_states < 7 + 9, peak_states  # the stages, z, z_next, the error and a few temporaries
