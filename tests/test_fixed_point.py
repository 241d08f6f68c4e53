"""`unroll until(tol, max)` and `backward implicit`: LASSO run to convergence, against numpy ISTA with the
same stopping rule, and the implicit gradient against backpropagation through many iterations and finite
differences (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build, soft

from dpc.api import compile_source
from dpc.errors import DpcError

LASSO = """network LassoDEQ
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5*sqnorm(x - D @ z) + lam*norm1(z)
derive proxgrad(step = 1/L)
"""


def problem(m=30, n=10, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n)) / np.sqrt(m)
    x = rng.standard_normal((batch, m))
    return D, x


def ista_until(D, x, lam, tol, most):
    """ISTA per sample, stopped when ||z_new - z|| <= tol ||z_new||; (solution, iterations)."""
    L = np.linalg.norm(D, 2) ** 2
    out, counts = [], []
    for xi in x:
        z = np.zeros(D.shape[1])
        for k in range(most):
            new = soft(z - D.T @ (D @ z - xi) / L, lam / L)
            done = np.linalg.norm(new - z) <= tol * np.linalg.norm(new)
            z = new
            if done:
                break
        out.append(z)
        counts.append(k + 1)
    return np.array(out), counts


@pytest.mark.parametrize("backward", ["unrolled", "implicit"])
def test_runs_each_sample_to_its_own_convergence(backward):
    D, x = problem()
    cls = build(LASSO + f"unroll until(tol = 1e-8, max = 3000)\nbackward {backward}\n")
    net = cls(D=torch.tensor(D))
    with torch.no_grad():
        got = net(torch.tensor(x)).numpy()
        trace = net(torch.tensor(x), trace=True)
    want, counts = ista_until(D, x, 0.1, 1e-8, 3000)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
    assert len(trace) == max(counts) and min(counts) < max(counts)  # the samples converge at different times
    first = int(np.argmin(counts))  # a converged sample keeps its value while the others go on
    np.testing.assert_array_equal(trace[counts[first] - 1][first].numpy(), trace[-1][first].numpy())


def test_equals_the_reference_evaluator():
    from dpc.pipeline import compile_program
    from dpc.reference import evaluate
    D, x = problem(seed=3)
    text = LASSO + "unroll until(tol = 1e-6, max = 400)\n"
    want = evaluate(compile_program(text, "deq.dp"), {"x": x}, params={"D": D}, trace=True)
    got = build(text)(D=torch.tensor(D))(torch.tensor(x), trace=True)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=0, atol=1e-12)


def test_max_and_steps_bound_the_iterations():
    D, x = problem(seed=1)
    cls = build(LASSO + "unroll until(tol = 1e-14, max = 7)\n")
    net = cls(D=torch.tensor(D))
    assert len(net(torch.tensor(x), trace=True)) == 7
    np.testing.assert_allclose(net(torch.tensor(x), steps=3).detach().numpy(),
                               ista_until(D, x, 0.1, 0.0, 3)[0], atol=1e-13)


def loss_and_grads(cls_text, D, x, target, lam=0.1):
    net = build(cls_text)(D=torch.tensor(D), lam=lam, constrain=False)  # lam itself the parameter: d/dlam
    z = net(torch.tensor(x))
    loss = ((z - torch.tensor(target)) ** 2).sum()
    loss.backward()
    return float(loss.detach()), net.D.grad.numpy().copy(), float(net.lam_raw.grad)


def test_implicit_gradient_equals_unrolled_and_finite_differences():
    D, x = problem(seed=2)
    target = np.random.default_rng(9).standard_normal((x.shape[0], D.shape[1]))
    learn = "learn D, lam\n"
    implicit = LASSO + "unroll until(tol = 1e-13, max = 10000)\nbackward implicit\n" + learn
    unrolled = LASSO + "unroll until(tol = 1e-13, max = 10000)\nbackward unrolled\n" + learn
    loss_i, dD_i, dlam_i = loss_and_grads(implicit, D, x, target)
    loss_u, dD_u, dlam_u = loss_and_grads(unrolled, D, x, target)
    assert abs(loss_i - loss_u) < 1e-12
    np.testing.assert_allclose(dD_i, dD_u, rtol=0, atol=1e-5 * max(1, np.abs(dD_u).max()))
    assert abs(dlam_i - dlam_u) < 1e-5 * max(1, abs(dlam_u))

    def loss_at(Dv, lam):  # the loss at numpy ISTA's solution: independent of the module
        z, _ = ista_until(Dv, x, lam, 1e-14, 50000)
        return ((z - target) ** 2).sum()
    h = 1e-6
    assert abs((loss_at(D, 0.1 + h) - loss_at(D, 0.1 - h)) / (2 * h) - dlam_i) < 1e-5 * max(1, abs(dlam_i))
    for i, j in [(0, 0), (5, 3), (29, 9)]:
        E = np.zeros_like(D)
        E[i, j] = h
        fd = (loss_at(D + E, 0.1) - loss_at(D - E, 0.1)) / (2 * h)
        assert abs(fd - dD_i[i, j]) < 1e-5 * max(1, abs(fd)), (i, j, fd, dD_i[i, j])


def test_implicit_backward_with_tied_learned_weights():
    D, x = problem(seed=4)
    text = LASSO + "unroll until(tol = 1e-12, max = 5000)\nbackward implicit\nlearn weights tied\n"
    net = build(text)(D=torch.tensor(D))
    z = net(torch.tensor(x))
    np.testing.assert_allclose(z.detach().numpy(), ista_until(D, x, 0.1, 1e-12, 5000)[0], atol=1e-12)
    z.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def _error(text):
    with pytest.raises(DpcError) as info:
        compile_source(text, "prog.dp")
    return info.value.format()


@pytest.mark.parametrize("tail, expected", [
    ("unroll 10\nbackward implicit\n", "prog.dp:11:1: error: backward implicit needs a network run to convergence"),
    ("unroll until(tol = 1e-6)\nlearn weights untied\n", "have one copy per layer"),
    ("unroll until(tol = 0)\n", "prog.dp:10:20: error: unroll until's tol must be finite and > 0, got 0"),
    ("unroll until(max = 2.5)\n", "unroll until's max must be an integer from 1 to 1000000000, got 2.5"),
    ("unroll until(tolerance = 1)\n", "unroll until has no option 'tolerance'"),
    ("unroll until(1e-6)\n", "unroll until takes named options only"),
    ("unroll until(tol = 1e-6)\nbackward sideways\n", "unknown backward mode 'sideways'"),
])
def test_what_is_refused(tail, expected):
    message = _error(LASSO + tail)
    assert expected in message, message


def test_implicit_needs_one_state():
    text = LASSO.replace("derive proxgrad", "derive fista") + "unroll until(tol = 1e-6)\nbackward implicit\n"
    assert "backward implicit needs one vector state" in _error(text)


def test_implicit_gradient_converges_for_every_sample():
    """The adjoint iteration stops when every sample's gradient has converged, not the batch's norm: here
    sample 0's gradient is a million times larger and converges in a few steps (layer contraction 0.1),
    sample 1's needs many (0.9). The implicit gradient of z = a*z + c is g0 / (1 - a)."""
    from dpc.backends.torch.runtime import namespace as helpers
    namespace = helpers("_implicit_layer")
    a = torch.tensor([[0.1], [0.9]])
    c = torch.ones(2, 3, requires_grad=True)
    z_star = (c / (1 - a)).detach()
    out = namespace["_implicit_layer"](lambda z: a * z + c, z_star, 1e-6, 10_000)
    g0 = torch.tensor([[1e6] * 3, [1.0] * 3])
    out.backward(g0)
    want = g0 / (1 - a)  # d out / d c through the fixed point
    relative = ((c.grad - want).norm(dim=-1) / want.norm(dim=-1)).max()
    assert relative < 1e-4
