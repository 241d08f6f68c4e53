"""derive admm and derive pdhg (min f(z) + g(K z)): untrained, each network is its numpy loop step by step,
and with many layers both reach an independent solution of 1-D total-variation denoising."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear

from conftest import build, soft

from dpc.api import compile_source
from dpc.errors import DpcError

TV = """network TV
dims n, p
input x : R[n]
param Dd : R[p, n]
hyper lam = 0.5
var z : R[n] = 0
minimize 0.5*sqnorm(z - x) + lam*norm1(Dd @ z)
"""

LASSO = """network Lasso
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
var z : R[n] = 0
minimize 0.5*sqnorm(x - D @ z) + lam*norm1(z)
"""


def difference_matrix(n):
    return np.diff(np.eye(n), axis=0)  # (n-1, n): (D z)_i = z_{i+1} - z_i


def signals(n=12, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.repeat(rng.standard_normal((batch, 4)), -(-n // 4), axis=1)[:, :n]
    return steps + 0.3 * rng.standard_normal((batch, n))


def pdhg_loop(x, K, lam, tau, sigma, layers):
    """Chambolle-Pock for 0.5||z - x||^2 + lam*||K z||_1, written out (Chambolle & Pock 2011, alg. 1)."""
    z = np.zeros_like(x)
    zbar, y = z.copy(), np.zeros((x.shape[0], K.shape[0]))
    out = []
    for _ in range(layers):
        y = np.clip(y + sigma * zbar @ K.T, -lam, lam)
        z_new = (z - tau * y @ K + tau * x) / (1 + tau)
        zbar, z = 2 * z_new - z, z_new
        out.append(z)
    return out


def admm_loop(x, A, b_of, K, lam, rho, layers):
    """Scaled ADMM (Boyd et al. 2011, 3.1.1) for f(z) + lam*||K z||_1 with grad f = A z - b_of(x)."""
    z = np.zeros((x.shape[0], K.shape[1]))
    w, u = np.zeros((x.shape[0], K.shape[0])), np.zeros((x.shape[0], K.shape[0]))
    M = A + rho * K.T @ K
    out = []
    for _ in range(layers):
        z = np.linalg.solve(M, (b_of(x) + rho * (w - u) @ K).T).T
        w = soft(z @ K.T + u, lam / rho)
        u = u + z @ K.T - w
        out.append(z)
    return out


def tv_solution(x, lam):
    """TV-1D denoising by its dual, min_y 0.5||x - D.T y||^2 s.t. |y| <= lam, solved exactly by bounded-variable
    least squares (an active-set method); z = x - D.T y. Returns z and the duality gap."""
    D = difference_matrix(x.shape[-1])
    y = lsq_linear(D.T, x, bounds=(-lam, lam), method="bvls", tol=1e-15).x
    z = x - D.T @ y
    primal = 0.5 * np.sum((z - x) ** 2) + lam * np.abs(D @ z).sum()
    dual = 0.5 * np.sum(x ** 2) - 0.5 * np.sum((x - D.T @ y) ** 2)
    return z, primal - dual


def test_the_reference_tv_solution_has_a_zero_duality_gap():
    for x in signals():
        z, gap = tv_solution(x, 0.5)
        assert 0 <= gap < 1e-12 or abs(gap) < 1e-12
        assert np.abs(np.diff(z)).min() < 1e-9  # TV merges neighbours: a piecewise-constant answer


def test_untrained_pdhg_is_chambolle_pock_step_by_step():
    n = 12
    K = difference_matrix(n)
    x = signals(n)
    cls = build(TV + "derive pdhg\nunroll 6\n")
    net = cls(Dd=torch.tensor(K))
    got = [t.numpy() for t in net(torch.tensor(x), trace=True)]
    step = 0.99 / np.linalg.norm(K, 2)
    want = pdhg_loop(x, K, 0.5, step, step, 6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_untrained_pdhg_with_given_steps():
    n = 10
    K = np.random.default_rng(3).standard_normal((7, n))
    x = signals(n, seed=4)
    cls = build(TV.replace("hyper lam = 0.5", "hyper lam = 0.3\nhyper t = 0.05") + "derive pdhg(tau = t, sigma = 2*t)\n"
                "unroll 5\n")
    got = [g.numpy() for g in cls(Dd=torch.tensor(K))(torch.tensor(x), trace=True)]
    for g, w in zip(got, pdhg_loop(x, K, 0.3, 0.05, 0.1, 5)):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_untrained_admm_is_scaled_admm_step_by_step():
    n = 12
    K = difference_matrix(n)
    x = signals(n)
    cls = build(TV + "derive admm(rho = 2)\nunroll 6\n")
    got = [g.numpy() for g in cls(Dd=torch.tensor(K))(torch.tensor(x), trace=True)]
    want = admm_loop(x, np.eye(n), lambda v: v, K, 0.5, 2.0, 6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_untrained_admm_on_the_lasso_splits_z_itself():
    rng = np.random.default_rng(5)
    D = rng.standard_normal((8, 12)) / np.sqrt(8)
    x = rng.standard_normal((4, 8))
    cls = build(LASSO + "derive admm(rho = 0.7)\nunroll 5\n")
    got = [g.numpy() for g in cls(D=torch.tensor(D))(torch.tensor(x), trace=True)]
    want = admm_loop(x, D.T @ D, lambda v: v @ D, np.eye(12), 0.1, 0.7, 5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method, layers", [("pdhg", 3000), ("admm(rho = 1)", 3000)])
def test_many_layers_reach_the_tv_solution(method, layers):
    n = 16
    x = signals(n, batch=3, seed=7)
    cls = build(TV + f"derive {method}\nunroll {layers}\n")
    got = cls(Dd=torch.tensor(difference_matrix(n)))(torch.tensor(x)).numpy()
    for g, xi in zip(got, x):
        want, gap = tv_solution(xi, 0.5)
        assert gap < 1e-12
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-6)


def test_explain_names_the_split_and_the_dual():
    from dpc.pipeline import run_text
    notes = "\n".join(n.text for n in run_text(TV + "derive admm(rho = 2)\nunroll 2\n", "tv.dp")[-1].program.notes)
    assert "split w = Dd @ z, scaled dual u" in notes
    notes = "\n".join(n.text for n in run_text(TV + "derive pdhg\nunroll 2\n", "tv.dp")[-1].program.notes)
    assert "clamp(v, -lam, lam) (Moreau's identity)" in notes and "dual y starts at 0" in notes


def _error(text):
    with pytest.raises(DpcError) as info:
        compile_source(text, "prog.dp")
    return info.value.format()


@pytest.mark.parametrize("objective, expected", [
    ("0.5*sqnorm(z - x)", "has no non-smooth term"),
    ("0.5*sqnorm(z - x) + lam*norm1(Dd @ z) + lam*norm1(z)", "is a second one"),
    ("0.5*sqnorm(z - x) + lam*norm0(Dd @ z)", "no prox is known"),
    ("0.5*sqnorm(z - x) + lam*norm1(Dd @ z - 1)", "a linear map of z"),
    ("sum(exp(z)) + lam*norm1(Dd @ z)", "needs a quadratic smooth part"),
])
def test_what_the_splitting_methods_refuse(objective, expected):
    for method in ("admm", "pdhg"):
        text = TV.replace("0.5*sqnorm(z - x) + lam*norm1(Dd @ z)", objective) + f"derive {method}\nunroll 2\n"
        message = _error(text)
        assert expected in message and message.startswith("prog.dp:"), message


def test_admm_refuses_a_singular_z_step():
    message = _error(TV.replace("0.5*sqnorm(z - x) + ", "") + "derive admm\nunroll 2\n")
    assert "cannot show that the z-step has one solution" in message


@pytest.mark.parametrize("directive, expected", [
    ("derive admm(rh = 1)", "prog.dp:8:13: error: derive admm has no option 'rh'"),
    ("derive pdhg(1)", "derive pdhg takes named options only"),
    ("derive admm(rho = 0)", "prog.dp:8:19: error: derive admm's rho must be finite and > 0, got 0"),
    ("derive pdhg(tau = -1, sigma = 1)", "derive pdhg's tau must be finite and > 0, got -1"),
    ("derive admm(rho = 1, rho = 2)", "'rho' is given twice"),
    ("derive proxgrad(stp = 1)", "derive proxgrad has no option 'stp'"),
])
def test_derive_options_are_checked(directive, expected):
    text = TV.replace("lam*norm1(Dd @ z)", "lam*norm1(z)" if "proxgrad" in directive else "lam*norm1(Dd @ z)")
    message = _error(text + directive + "\nunroll 2\n")
    assert expected in message, message


# --- learn weights reads a fixed-matrix solve and a projection as linear maps -----------------------

@pytest.mark.parametrize("tying", ["tied", "untied"])
def test_learned_admm_starts_as_admm(tying):
    """Every prox argument linearised (solve(A, .) with A fixed is linear): W, S_w, S_u start at
    Dd A^-1, 2 Dd A^-1 Dd.T and I - 2 Dd A^-1 Dd.T, so the untrained network is ADMM."""
    n = 10
    K = difference_matrix(n)
    x = signals(n, seed=2)
    cls = build(TV + f"derive admm(rho = 2)\nunroll 5\nlearn weights {tying}\n")
    net = cls(Dd=torch.tensor(K))
    assert {"W", "S_w", "S_u", "theta"} <= {name.split(".")[0] for name, _ in net.named_parameters()}
    got = [g.detach().numpy() for g in net(torch.tensor(x), trace=True)]
    want = admm_loop(x, np.eye(n), lambda v: v, K, 0.5, 2.0, 5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-9)
    A = np.eye(n) + 2 * K.T @ K
    W = (net.W[0] if tying == "untied" else net.W).detach().numpy()
    np.testing.assert_allclose(W, K @ np.linalg.inv(A), atol=1e-12)


BOX_LS = """network BoxLS
dims m, n
input x : R[m]
param D : R[m, n]
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5*sqnorm(x - D @ z)
subject to z in box(-0.5, 1)
derive proxgrad(step = 1/L)
unroll 6
"""


@pytest.mark.parametrize("tying", ["tied", "untied"])
def test_learned_projected_gradient_starts_as_projected_gradient(tying):
    """Box-constrained least squares: clamp(W x + S z + ..., lo, hi) with W = D.T/L, S = I - D.T D/L; the
    bounds are the constraint and stay fixed."""
    rng = np.random.default_rng(8)
    D = rng.standard_normal((9, 6)) / 3
    x = rng.standard_normal((4, 9))
    cls = build(BOX_LS + f"learn weights {tying}\n")
    net = cls(D=torch.tensor(D))
    names = {name.split(".")[0] for name, _ in net.named_parameters()}  # S.3: layer 3's S
    assert {"W", "S"} <= names and not any(n.startswith("theta") for n in names)
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((4, 6))
    got = [g.detach().numpy() for g in net(torch.tensor(x), trace=True)]
    for g in got:
        z = np.clip(z - (z @ D.T - x) @ D / L, -0.5, 1)
        np.testing.assert_allclose(g, z, rtol=0, atol=1e-9)


def cg_steps(A, b, x, iters):
    """Conjugate gradients written out (Hestenes & Stiefel 1952) for one right-hand side."""
    r = b - A @ x
    p, rs = r.copy(), r @ r
    for _ in range(iters):
        Ap = A @ p
        alpha = rs / (p @ Ap) if p @ Ap > 0 else 0.0
        x, r = x + alpha * p, r - alpha * Ap
        rs_next = r @ r
        p = r + (rs_next / rs if rs > 0 else 0.0) * p
        rs = rs_next
    return x


def test_admm_with_conjugate_gradients_is_its_numpy_loop():
    n, rho, lam = 12, 2.0, 0.5
    K = difference_matrix(n)
    x = signals(n, seed=6)
    cls = build(TV + "derive admm(rho = 2, solve = cg(iters = 3))\nunroll 6\n")
    got = [g.numpy() for g in cls(Dd=torch.tensor(K))(torch.tensor(x), trace=True)]
    A = np.eye(n) + rho * K.T @ K
    z, w, u = np.zeros((3, n)), np.zeros((3, n - 1)), np.zeros((3, n - 1))
    for g in got:
        z = np.array([cg_steps(A, xi + rho * (wi - ui) @ K, zi, 3) for xi, wi, ui, zi in zip(x, w, u, z)])
        w = soft(z @ K.T + u, lam / rho)
        u = u + z @ K.T - w
        np.testing.assert_allclose(g, z, rtol=0, atol=1e-12)
    exact = admm_loop(x, np.eye(n), lambda v: v, K, lam, rho, 6)[-1]
    assert np.abs(got[-1] - exact).max() > 1e-8  # 3 steps are not the direct solve ...
    many = build(TV + "derive admm(rho = 2, solve = cg(iters = 40))\nunroll 6\n")(Dd=torch.tensor(K))
    np.testing.assert_allclose(many(torch.tensor(x)).numpy(), exact, atol=1e-10)  # ... n steps are


@pytest.mark.parametrize("option, expected", [
    ("solve = cg(10)", "derive admm's solve must be cg(iters = k)"),
    ("solve = lu(iters = 2)", "derive admm's solve must be cg(iters = k)"),
    ("solve = cg(iters = 0)", "cg's iters must be an integer from 1 to 10000"),
])
def test_the_cg_option_is_checked(option, expected):
    message = _error(TV + f"derive admm({option})\nunroll 2\n")
    assert expected in message and message.startswith("prog.dp:8:"), message


STACK = """network StackDenoise
dims c, h, w
input f : R[c, h, w]
hyper lam = 0.3
var y : R[c, h, w] = 0
minimize 0.5*sqnorm(y - f) + 0.25*sqnorm(y) + lam*norm1(y)
"""


def _stack_input(seed=7):
    return np.random.default_rng(seed).standard_normal((2, 3, 4, 5))  # (batch, c, h, w)


def test_untrained_admm_on_an_image_stack_splits_y_itself():
    # norm1(y) of y : R[c, h, w] is K = eye(c*h) in the algebra (its rows StackRows(c, h)); refused before with
    # "the rows of eye(c*h) are not a declared dim". The numpy loop runs on the flattened stack.
    f = _stack_input()
    cls = build(STACK + "derive admm(rho = 2)\nunroll 6\n")
    got = [g.numpy() for g in cls()(torch.tensor(f), trace=True)]
    flat = f.reshape(2, -1)
    n = flat.shape[1]
    want = admm_loop(flat, 1.5 * np.eye(n), lambda v: v, np.eye(n), 0.3, 2.0, 6)
    assert got[0].shape == f.shape
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.reshape(2, -1), w, rtol=0, atol=1e-12)


def test_untrained_pdhg_on_an_image_stack_is_chambolle_pock_step_by_step():
    f = _stack_input(8)
    cls = build(STACK.replace("0.25*sqnorm(y) + ", "") + "derive pdhg(tau = 0.4, sigma = 0.9)\nunroll 6\n")
    got = [g.numpy() for g in cls()(torch.tensor(f), trace=True)]
    flat = f.reshape(2, -1)
    want = pdhg_loop(flat, np.eye(flat.shape[1]), 0.3, 0.4, 0.9, 6)
    assert got[0].shape == f.shape
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.reshape(2, -1), w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["admm", "pdhg"])
def test_splitting_an_image_stack_reaches_its_closed_form(method):
    # 0.5||y - f||^2 + 0.25||y||^2 + lam||y||_1 is separable: y = soft(f, lam) / 1.5 entrywise
    f = _stack_input(9)
    cls = build(STACK + f"derive {method}\nunroll 300\n")
    got = cls()(torch.tensor(f)).numpy()
    want = np.sign(f) * np.maximum(np.abs(f) - 0.3, 0) / 1.5
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["admm(rho = 0.5)", "pdhg"])
def test_a_multiple_of_an_image_stack_splits_as_a_scaled_identity(method):
    # norm1(2*y): K = 2*eye(c*h), the y-step a division by 1 + 0.5*4 (not a (c*h) x (c*h) solve), pdhg's steps
    # 0.99/2 (not an opnorm of an eye, which needed h at construction)
    f = _stack_input(10)
    cls = build(STACK.replace("0.25*sqnorm(y) + lam*norm1(y)", "lam*norm1(2*y)") + f"derive {method}\nunroll 6\n")
    got = [g.numpy() for g in cls()(torch.tensor(f), trace=True)]
    flat = f.reshape(2, -1)
    n = flat.shape[1]
    K = 2 * np.eye(n)
    if method == "pdhg":
        want = pdhg_loop(flat, K, 0.3, 0.495, 0.495, 6)
    else:
        want = admm_loop(flat, np.eye(n), lambda v: v, K, 0.3, 0.5, 6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.reshape(2, -1), w, rtol=0, atol=1e-12)
