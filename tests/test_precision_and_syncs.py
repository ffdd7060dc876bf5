"""Speed on CUDA: bfloat16 autocast and host-device syncs in the ODE core.

- A checkpointing method's backward recomputes f outside the caller's `torch.autocast` (autograd
  calls it after the `with` block); it re-enters the forward's autocast state, so the gradient is
  that of the function that ran (bf16) and not of a float32 recompute.
- The gradient probe computes the model's gradient under the caller's autocast and its reference
  in float64 with autocast off.
- Fixed grids read no tensor value back to the host, forward or backward, for every method; an
  adaptive solve reads back one number per attempted step plus its starting step
  (SolveInfo.host_syncs, host_syncs_backward). On CPU the counter is checked against every
  Python-level read of a tensor (bool/float/int/item/tolist); on CUDA, `torch.cuda.set_sync_debug_mode`
  proves it (the gpu test).
"""
import contextlib
import copy
import math
import random

import pytest
import torch
from problems import ConvBNReLU, relative_error

from anode_bench.metrics import gradient_error
from anode_bench.models.registry import build_model
from anode_bench.ode import GRAD_METHODS, SOLVERS, odeint
from anode_bench.ode import adjoint as adjoint_module
from anode_bench.ode.controller import _factor_tensor, step_factor

FIXED = [name for name, tab in SOLVERS.items() if not tab.adaptive]
ADAPTIVE = [name for name, tab in SOLVERS.items() if tab.adaptive]
SOLVER_OF = {"mali": "alf"}  # mali runs solver alf only
REVERSE_SOLVES = ("adjoint", "interpolated")  # the methods that integrate their own reverse ODE
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


class Float32Residual(ConvBNReLU):
    """conv-BN-ReLU-conv-BN with its output cast to float32: under bf16 autocast the convolutions
    run in bf16 but the stages k, the state z and every method's adjoint bookkeeping stay float32."""

    def forward(self, t, z):
        return self.net(z).float()


def bf16_gradient(func, y0, grad, *, cache=True, autocast=True, seed=0, **solve_args):
    """(dL/dz0, dL/dθ flattened, info) with the forward under CPU bf16 autocast and the backward
    outside it, as a training loop runs; L = sum(y1 cos y1) on a copy of func (float32)."""
    func = copy.deepcopy(func)
    y0 = y0.clone().requires_grad_()
    torch.manual_seed(seed)
    with torch.autocast(**BF16, cache_enabled=cache, enabled=autocast):
        y1, info = odeint(func, y0, grad=grad, return_info=True, check_finite=False, **solve_args)
    y1 = y1.float()
    (y1 * torch.cos(y1)).sum().backward()
    return y0.grad.clone(), torch.cat([p.grad.reshape(-1) for p in func.parameters()]), info


# autocast

CHECKPOINTED = [
    ("anode", "rk4", {}),
    ("aca", "rk4", {}),
    ("revolve", "rk4", {"checkpoints": 2}),
    ("symplectic", "rk4", {}),
    ("anode", "alf", {}),
    ("mali", "alf", {}),
]
CHECKPOINTED_IDS = [f"{grad}-{solver}" for grad, solver, _ in CHECKPOINTED]


@pytest.mark.parametrize("grad, solver, options", CHECKPOINTED, ids=CHECKPOINTED_IDS)
def test_recompute_under_bf16_autocast_gives_direct_gradient(grad, solver, options):
    """With the forward's autocast re-entered in backward, every checkpointing method equals
    direct under the same bf16 autocast to <= 1e-6 in dL/dz0 and dL/dθ. Measured (3 seeds; rk4,
    midpoint and alf): 0 (bitwise) for most, at most 2e-8 (aca/revolve sum dθ step by step,
    direct over all steps at once; mali's inverse rounds in float32). The tolerance is 50x that
    and far below what a float32 recompute gives: with the fix disabled the same comparison
    measured 3.5e-3 .. 6e-2 (1e-2 typical).

    The autocast weight cache is off here: with it on (autocast's default), direct accumulates
    the gradient of the one cached bf16 copy of each weight in bf16 over all N·s uses, while the
    step-wise methods sum per step in float32, which differ by ~4e-3 in dθ (a rounding difference
    of direct's, not another function); see the next test. f returns float32 so that symplectic's
    dL/dk (summed in float32, then rounded to bf16 once) is not rounded where direct's autograd
    rounds each use's share to bf16 (~2.5e-3 in dz0 with a bf16 k)."""
    torch.manual_seed(0)
    func, y0 = Float32Residual().train(), torch.randn(3, 4, 6, 6)
    run = dict(solver=solver, steps=4, cache=False)
    ref_z, ref_p, _ = bf16_gradient(func, y0, "direct", **run)
    z, p, _ = bf16_gradient(func, y0, grad, grad_options=options, **run)
    assert relative_error(z, ref_z) <= 1e-6
    assert relative_error(p, ref_p) <= 1e-6
    fp32_z, fp32_p, _ = bf16_gradient(func, y0, "direct", autocast=False, **run)
    assert relative_error(fp32_z, ref_z) > 1e-3  # bf16 did run: the float32 gradient is visibly different


@pytest.mark.parametrize("grad, solver", [("anode", "rk4"), ("anode", "alf"), ("aca", "rk4"), ("revolve", "rk4"), ("mali", "alf")])
def test_bf16_autocast_as_training_runs_it(grad, solver):
    """Training's setting: a float32 conv-BN-ReLU f (bf16 output), autocast's defaults (weight
    cache on). anode recomputes the very forward: dL/dz0 and dL/dθ equal direct's (measured: bitwise,
    against ~1e-2 with a float32 recompute). aca, revolve and mali: dL/dz0 equal (measured: bitwise);
    their dL/dθ differs from direct's by direct's bf16 accumulation over the cached weight copy
    (measured 2.7e-3 .. 4.3e-3), so it is not compared here."""
    torch.manual_seed(1)
    func, y0 = ConvBNReLU().train(), torch.randn(3, 4, 6, 6)
    ref_z, ref_p, _ = bf16_gradient(func, y0, "direct", solver=solver, steps=3)
    z, p, _ = bf16_gradient(func, y0, grad, solver=solver, steps=3)
    assert relative_error(z, ref_z) <= 1e-6
    if grad == "anode":
        assert relative_error(p, ref_p) <= 1e-6


@pytest.mark.parametrize("grad", REVERSE_SOLVES)
def test_adjoint_reverse_solve_keeps_its_adjoint_and_gradient_in_float32_under_bf16(grad):
    """A bf16 block input (e.g. the output of a bf16 convolution) makes z(t) bf16; the reverse
    solve's state ([z, a, g_θ]; interpolated: [a, g_θ]) is float32 all the same (before: all bf16),
    f still sees z in bf16, and the gradients come back in the dtypes of z0 and θ."""
    torch.manual_seed(2)
    func, y0 = ConvBNReLU().train(), torch.randn(3, 4, 6, 6).bfloat16()
    seen = {"state": set(), "z": set()}
    integrate = adjoint_module.integrate

    def spy(f, state, plan, **kwargs):
        def watched(t, x):
            seen["state"].add(x.dtype)
            return f(t, x)

        out, trajectory = integrate(watched, state, plan, **kwargs)
        seen["state"].add(out.dtype)
        return out, trajectory

    def watch_z(module, inputs):
        seen["z"].add(inputs[0].dtype)

    func.net[0].register_forward_pre_hook(watch_z)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(adjoint_module, "integrate", spy)
        z, p, info = bf16_gradient(func, y0, grad, solver="rk4", steps=2)
    assert seen["state"] == {torch.float32}
    assert seen["z"] == {torch.bfloat16}
    assert z.dtype == torch.bfloat16 and p.dtype == torch.float32
    assert torch.isfinite(p).all() and info.nfe_backward == 4 * 2


def test_gradient_probe_reference_is_float64_under_bf16_autocast():
    """gradient_error under bf16 autocast: g is the bf16 model's (rel. error ~0.1, as measured:
    0.25 for resnet_tiny), the reference is the float64 one computed without autocast, to the
    bit. A reference computed in bf16 would differ from it by ~g's error (and make the bf16
    model look right); without autocast, float32 direct is off by ~1e-6 (measured 1.3e-6)."""
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, dict(solver="rk4", steps=1, grad="anode", check_finite=False))
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    plain_cache, bf16_cache = {}, {}
    plain = gradient_error(model, images, labels, cache=plain_cache)
    with torch.autocast(**BF16):
        bf16 = gradient_error(model, images, labels, cache=bf16_cache)
    (plain_ref,), (bf16_ref,) = ([v for k, v in cache.items() if k[0] == "discrete"] for cache in (plain_cache, bf16_cache))
    assert all(g.dtype == torch.float64 for g in bf16_ref.values())
    assert all(torch.equal(bf16_ref[name], plain_ref[name]) for name in plain_ref)
    assert plain["grad_error/rel_l2"] < 1e-5
    assert bf16["grad_error/rel_l2"] > 1e-3


# host read-backs


class TensorReads:
    """Counts every Python-level read of a tensor's value (bool, float, int, index, item, tolist)
    while active: on CUDA each of them is a device sync."""

    NAMES = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def solve_and_backward(grad, monkeypatch=None, seed=0, **solve_args):
    """Forward and backward of a float64 conv-BN-ReLU block; (info, Python-level tensor reads)."""
    torch.manual_seed(seed)
    func, y0 = ConvBNReLU().double().train(), torch.randn(3, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    reads = TensorReads(monkeypatch) if monkeypatch is not None else None
    y1, info = odeint(func, y0, grad=grad, return_info=True, **solve_args)
    (y1 * torch.cos(y1)).sum().backward()
    if monkeypatch is not None:
        monkeypatch.undo()
    return info, (reads.count if reads else None)


FIXED_RUNS = [(grad, solver) for grad in GRAD_METHODS for solver in ([SOLVER_OF[grad]] if grad in SOLVER_OF else FIXED)]


@pytest.mark.parametrize("grad, solver", FIXED_RUNS, ids=[f"{g}-{s}" for g, s in FIXED_RUNS])
def test_fixed_grid_solves_read_nothing_back(grad, solver, monkeypatch):
    info, reads = solve_and_backward(grad, monkeypatch, solver=solver, steps=3, check_finite=False)
    assert (info.host_syncs, info.host_syncs_backward, reads) == (0, 0, 0)


@pytest.mark.parametrize("grad", list(GRAD_METHODS))
def test_check_finite_costs_one_read_back_per_solve(grad, monkeypatch):
    """The end-state check: once in the forward; once more for the reverse solve of the adjoint and
    the interpolated adjoint (their own solves); anode's recompute repeats the forward's states and does not check them again."""
    info, reads = solve_and_backward(grad, monkeypatch, solver=SOLVER_OF.get(grad, "heun"), steps=2)
    assert info.host_syncs == 1
    assert info.host_syncs_backward == (1 if grad in REVERSE_SOLVES else 0)
    assert reads == info.host_syncs + info.host_syncs_backward


def attempts_from_nfe(solver: str, nfe: int, rejected: int) -> int:
    """Attempted steps of an adaptive solve from its NFE: 1 + (1 if FSAL else accepted) + (s - 1)·attempts."""
    tab = SOLVERS[solver]
    if tab.fsal:
        attempts, rest = divmod(nfe - 2, tab.stages - 1)
    else:
        accepted, rest = divmod(nfe - 1 - (tab.stages - 1) * rejected, tab.stages)
        attempts = accepted + rejected
    assert rest == 0
    return attempts


@pytest.mark.parametrize("solver", ADAPTIVE)
@pytest.mark.parametrize("grad", [g for g in GRAD_METHODS if g not in SOLVER_OF])
def test_adaptive_solves_read_back_once_per_attempted_step(grad, solver, monkeypatch):
    """Forward: accepted + rejected + 2 (the starting step's probe h0 and its result); `direct`
    differentiates the controller, keeps dt a tensor and reads the ratio with the next dt in one
    read-back: accepted + rejected + 1 (the starting step). Backward: none on the accepted grid
    (anode, aca, revolve, symplectic); an adaptive reverse solve (adjoint, interpolated): its own attempts + 2."""
    info, reads = solve_and_backward(grad, monkeypatch, solver=solver, rtol=1e-3, atol=1e-5)
    accepted, rejected = len(info.ts) - 1, info.n_rejected
    assert accepted > 2
    assert info.host_syncs == accepted + rejected + (1 if grad == "direct" else 2)
    if grad in REVERSE_SOLVES:
        reverse_attempts = attempts_from_nfe(solver, info.nfe_backward, info.n_rejected_backward)
        assert info.host_syncs_backward == reverse_attempts + 2
    else:
        assert info.host_syncs_backward == 0
    assert reads == info.host_syncs + info.host_syncs_backward  # every read-back is counted


def test_host_step_factor_is_the_tensor_formula_to_the_bit_in_float64():
    """The step factor is now computed on the host from the ratio already read back; for float64
    states it is the tensor formula's value bit for bit, so the accepted grids did not change
    (float32 states: the host formula runs in float64, dt may differ in its last bits)."""
    rng = random.Random(0)
    for solver in ADAPTIVE:
        tab = SOLVERS[solver]
        exponent = -1.0 / (min(tab.order, tab.low_order) + 1)
        for _ in range(2000):
            ratio = 10 ** rng.uniform(-12, 3)
            for accepted in (True, False):
                tensor = _factor_tensor(torch.tensor(ratio, dtype=torch.float64), exponent, accepted)
                assert step_factor(ratio, exponent, accepted) == float(tensor), (solver, ratio)


@contextlib.contextmanager
def sync_debug_mode(mode):
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["float32", "bf16"])
@pytest.mark.parametrize("grad", list(GRAD_METHODS))
def test_fixed_grid_forward_and_backward_do_not_synchronize_the_gpu(grad, precision):
    """Every method's fixed-grid forward and backward on CUDA under sync debug mode "error": any
    synchronizing call (a read-back, a blocking copy) raises. Dropout in f, so the recomputing
    methods also capture and restore the CUDA RNG state."""
    device = torch.device("cuda")
    func = ConvBNReLU(dropout=0.1).to(device).train()
    y0 = torch.randn(8, 4, 16, 16, device=device, requires_grad=True)
    solver = SOLVER_OF.get(grad, "rk4")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            y1, info = odeint(func, y0, solver=solver, steps=3, grad=grad, check_finite=False, return_info=True)
        (y1.float() * torch.cos(y1.float())).sum().backward()
        return info

    step()  # warm-up: lazy CUDA/cuDNN initialisation may synchronize once
    torch.cuda.synchronize()
    with sync_debug_mode("error"):
        info = step()
    torch.cuda.synchronize()
    assert info.host_syncs == 0 and info.host_syncs_backward == 0
    assert math.isfinite(float(y0.grad.norm()))
