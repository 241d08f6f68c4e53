"""Structured models (issue 19): matrix-valued inputs, vars and outputs, objectives in several vars, the
nuclear and l2,1 proxes, and robust PCA (examples/rpca.dp) against numpy loops and an independent solver.
float64 throughout (conftest)."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, build

RPCA = (EXAMPLES / "rpca.dp").read_text()


# --- independent numpy references ------------------------------------------------------------------

def np_svt(A, t):
    """Singular-value thresholding of one matrix."""
    U, s, Vh = np.linalg.svd(A, full_matrices=False)
    return (U * np.maximum(s - t, 0)) @ Vh


def np_soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0)


def np_rowsoft(A, t):
    out = np.zeros_like(A)
    for i, row in enumerate(A):
        norm = np.linalg.norm(row)
        out[i] = 0 if norm <= t else (1 - t / norm) * row
    return out


def nuclear(A):
    return np.linalg.svd(A, compute_uv=False).sum()


def low_rank_plus_sparse(batch=4, m=20, n=16, rank=2, p=0.05, seed=0):
    rng = np.random.default_rng(seed)
    low = np.stack([rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) for _ in range(batch)])
    spikes = rng.choice([-1.0, 1.0], (batch, m, n)) * rng.uniform(2, 6, (batch, m, n))  # outliers, |.| >= 2
    sparse = np.where(rng.random((batch, m, n)) < p, spikes, 0.0)
    return low, sparse


def admm_rpca(X, mu, lam, rho=0.5, tol=1e-12, maxit=100000):
    """An independent solver of min 0.5||X - L - S||^2 + mu ||L||_* + lam ||S||_1: two-block ADMM on
    (L, S) = (A, B), the quadratic block solved in closed form, run until the residuals are below tol."""
    A, B, U1, U2 = (np.zeros_like(X) for _ in range(4))
    for _ in range(maxit):
        L = np.stack([np_svt(a, mu / rho) for a in A - U1])
        S = np_soft(B - U2, lam / rho)
        P, Q = L + U1, S + U2
        D = (X - P - Q) / (rho + 2)
        A_next, B_next = P + D, Q + D
        U1, U2 = U1 + L - A_next, U2 + S - B_next
        residual = max(np.abs(L - A_next).max(), np.abs(S - B_next).max(), rho * np.abs(A_next - A).max(),
                       rho * np.abs(B_next - B).max())
        A, B = A_next, B_next
        if residual < tol:
            return L, S
    raise AssertionError("ADMM did not converge")


def _helper(name):
    from dpc.backends.torch.runtime import namespace
    return namespace(name)[name]


# --- robust PCA ------------------------------------------------------------------------------------

def test_rpca_untrained_equals_a_numpy_joint_proximal_gradient_loop_layer_by_layer():
    low, sparse = low_rank_plus_sparse(m=12, n=9)
    X = low + sparse
    net = build(RPCA, "rpca.dp")(m=12, n=9, mu=1.0, lam=0.2, steps=30)
    trace = net(torch.tensor(X), trace=True)
    L, S = np.zeros_like(X), np.zeros_like(X)
    for layer in range(30):
        G = L + S - X  # the joint gradient; the step is 1/2 (dpc's bound: L1 = 2)
        L, S = np.stack([np_svt(a, 1.0 / 2) for a in L - G / 2]), np_soft(S - G / 2, 0.2 / 2)
        np.testing.assert_allclose(trace[layer].detach().numpy(), L, rtol=0, atol=1e-9)
    assert torch.equal(net(torch.tensor(X)), trace[-1])


def test_rpca_with_many_layers_reaches_an_independent_admm_solution():
    """1000 layers of the example's own derivation (proximal gradient, untrained) land within 1e-5 of numpy
    ADMM run to 1e-12 (mu = 2 here: the problem is better conditioned, and proximal gradient converges
    linearly on it; at mu = 1 it takes about twice the layers)."""
    low, sparse = low_rank_plus_sparse(m=20, n=16)
    X = low + sparse
    text = RPCA.replace("learn  mu, lam untied\n", "").replace("unroll 30", "unroll 1000")
    L = build(text, "rpca.dp")(m=20, n=16, mu=2.0, lam=0.4)(torch.tensor(X)).numpy()
    L_admm, S_admm = admm_rpca(X, 2.0, 0.4)
    assert np.abs(L - L_admm).max() < 1e-5
    assert np.abs(np_soft(X - L, 0.4) - S_admm).max() < 1e-5  # S is soft(X - L, lam) at the solution


def test_rpca_recovers_a_synthetic_low_rank_plus_sparse_matrix():
    """With small weights (mu = 0.2, lam = 0.05) and FISTA (derive fista on the same program), 600 layers give
    the rank, the outliers' support exactly, and both parts to 2 %."""
    low, sparse = low_rank_plus_sparse(m=20, n=16)
    X = low + sparse
    text = RPCA.replace("learn  mu, lam untied\n", "").replace("unroll 30", "unroll 600").replace(
        "derive proxgrad", "derive fista")
    L = build(text, "rpca.dp")(m=20, n=16, mu=0.2, lam=0.05)(torch.tensor(X)).numpy()
    S = np_soft(X - L, 0.05)
    for k in range(len(X)):
        assert np.linalg.matrix_rank(L[k], tol=1e-6) == 2
        np.testing.assert_array_equal(np.abs(S[k]) > 1, sparse[k] != 0)
    assert np.linalg.norm(L - low) / np.linalg.norm(low) < 0.02
    assert np.linalg.norm(S - sparse) / np.linalg.norm(sparse) < 0.025


def test_rpca_learned_thresholds_train_and_get_finite_gradients():
    low, sparse = low_rank_plus_sparse(batch=8, m=10, n=10, seed=3)
    X, target = torch.tensor(low + sparse), torch.tensor(low)
    net = build(RPCA, "rpca.dp")(m=10, n=10, steps=8)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for _ in range(25):
        loss = (net(X) - target).square().sum() / target.square().sum()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_rpca_explain_states_and_derives_the_joint_step():
    out = subprocess.run([sys.executable, "-m", "dpc", "explain", str(EXAMPLES / "rpca.dp")], capture_output=True,
                         text=True, check=True).stdout
    assert "joint gradient step on (L, S)" in out
    assert "L1 = 2 (joint Lipschitz constant of grad f)" in out
    assert "||H_LL|| = 1; ||H_LS|| = 1; ||H_SL|| = 1; ||H_SS|| = 1" in out
    assert "max_i sum_j ||H_ij||" in out


def test_rpca_fista_equals_numpy_fista_on_two_vars():
    low, sparse = low_rank_plus_sparse(m=8, n=11, seed=2)
    X = low + sparse
    text = RPCA.replace("derive proxgrad", "derive fista").replace("learn  mu, lam untied\n", "")
    trace = build(text, "rpca.dp")(m=8, n=11, steps=12)(torch.tensor(X), trace=True)
    L, S, t = np.zeros_like(X), np.zeros_like(X), 1.0
    yL, yS = L, S
    for layer in range(12):
        G = yL + yS - X
        L_next, S_next = np.stack([np_svt(a, 0.5) for a in yL - G / 2]), np_soft(yS - G / 2, 0.1)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        yL, yS = L_next + (t - 1) / t_next * (L_next - L), S_next + (t - 1) / t_next * (S_next - S)
        L, S, t = L_next, S_next, t_next
        np.testing.assert_allclose(trace[layer].numpy(), L, rtol=0, atol=1e-9)


# --- the new proxes ----------------------------------------------------------------------------------

def _matrices(seed=0):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal((5, 4)), rng.standard_normal((3, 6)), np.zeros((4, 4)), np.eye(4),
           np.diag([2.0, 2.0, 1.0, 0.0]),                                   # repeated and zero singular values
           0.01 * rng.standard_normal((4, 4))]                              # below the threshold
    rows = rng.standard_normal((6, 5))
    rows[1] = 0                                                             # a zero row
    rows[2] *= 0.01                                                         # a row below the threshold
    rows[3] = rows[4]                                                       # equal rows
    return out + [rows]


def test_svt_equals_its_numpy_reference_and_has_finite_gradients_at_repeated_singular_values():
    from dpc import atoms
    svt = _helper("_svt")
    for A in _matrices():
        a = torch.tensor(A[None], requires_grad=True)
        out = svt(a, 0.7)
        np.testing.assert_allclose(out[0].detach().numpy(), np_svt(A, 0.7), atol=1e-12)
        with torch.no_grad():  # without a gradient wanted, svt runs without its autograd.Function
            np.testing.assert_allclose(svt(a, 0.7)[0].numpy(), np_svt(A, 0.7), atol=1e-12)
        np.testing.assert_allclose(atoms.SVT.reference(np, A, 0.7), np_svt(A, 0.7), atol=1e-12)
        out.square().sum().backward()
        assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("shape", [(2, 4, 4), (2, 5, 3), (2, 3, 5)])
def test_svt_gradient_is_the_derivative(shape):
    """gradcheck (finite differences) of the written-out derivative, square and not, in A and in t."""
    svt = _helper("_svt")
    A = torch.randn(*shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = torch.tensor(0.6, requires_grad=True)
    assert torch.autograd.gradcheck(svt, (A, t))


@pytest.mark.parametrize("shape", [(3, 4, 4), (3, 5, 3), (3, 3, 5)])
def test_svt_gradient_with_a_threshold_per_sample(shape):
    """A threshold of shape (batch, 1) (a per-sample scalar in an update) gets one gradient per sample
    (backward summed it to (batch,), which does not expand to (batch, 1)); gradcheck in A and t."""
    svt = _helper("_svt")
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    t = (0.3 + torch.rand(shape[0], 1, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(svt, (A, t))


def test_rowsoft_equals_its_numpy_reference_and_has_finite_gradients():
    from dpc import atoms
    fn = _helper("_blocksoft")  # rowsoft's torch rule: the block soft threshold of every row
    for A in _matrices():
        a = torch.tensor(A[None], requires_grad=True)
        out = fn(a, 0.7)
        np.testing.assert_allclose(out[0].detach().numpy(), np_rowsoft(A, 0.7), atol=1e-12)
        np.testing.assert_allclose(atoms.RowSoft.reference(np, A, 0.7), np_rowsoft(A, 0.7), atol=1e-12)
        out.square().sum().backward()
        assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("name", ["svt", "rowsoft"])
def test_each_matrix_prox_is_the_minimiser(name):
    """t*g(U) + ||U - A||^2/2 at the prox is no larger than at 1000 random perturbations of it."""
    prox, g = (np_svt, nuclear) if name == "svt" else (np_rowsoft, lambda U: np.linalg.norm(U, axis=1).sum())
    rng = np.random.default_rng(5)
    t = 0.7
    for A in _matrices(2):
        best = prox(A, t)
        value = t * g(best) + 0.5 * np.sum((best - A) ** 2)
        for scale in (1e-1, 1e-3, 1e-6):
            for _ in range(334):
                U = best + scale * rng.standard_normal(A.shape)
                assert t * g(U) + 0.5 * np.sum((U - A) ** 2) >= value - 1e-12


def test_norm21_program_equals_numpy_proximal_gradient():
    text = """network GroupRows
dims m, n
input X : R[m, n]
param A : R[m, m]
hyper lam = 0.3
var Z : R[m, n] = 0
minimize 0.5 * sqnorm(X - A @ Z) + lam * norm21(Z)
derive proxgrad
unroll 6
output Z
"""
    rng = np.random.default_rng(4)
    A, X = rng.standard_normal((6, 6)) / 3, rng.standard_normal((3, 6, 5))
    trace = build(text)(A=torch.tensor(A), n=5)(torch.tensor(X), trace=True)
    Lip = np.linalg.norm(A, 2) ** 2
    Z = np.zeros_like(X)
    for layer in range(6):
        Z = np.stack([np_rowsoft(z, 0.3 / Lip) for z in Z - A.T @ (A @ Z - X) / Lip])
        np.testing.assert_allclose(trace[layer].numpy(), Z, rtol=0, atol=1e-12)


# --- matrix programs against the reference evaluator ------------------------------------------------

PROGRAMS = {
    "left and right products": """network MR
dims m, n, k
input X : R[m, n]
param A : R[k, m]
param B : R[n, k]
param C : R[k, k]
hyper lam = 0.1
var S : R[m, n] = 0
minimize 0.5 * sqnorm(A @ S @ B - C) + lam * norm1(S) + 0.5 * sqnorm(S - X)
derive proxgrad(step = 0.05)
unroll 3
output S
""",
    "a per-sample matrix times a vector": """network QZ
dims m, n
input Q : R[m, n]
input x : R[m]
param B : R[n, n]
hyper lam = 0.1
var z : R[n] = 0
minimize 0.5 * sqnorm(Q @ z - x) + lam * norm1(z) + 0.5 * sqnorm(B @ z)
derive proxgrad(step = 0.05)
unroll 3
output z
""",
    "an update of a matrix state": """network MM
dims m, n, k
input X : R[m, n]
param A : R[k, m]
param B : R[n, k]
hyper lam = 0.1
var S : R[m, n] = 0
update S <- soft(S - 0.1 * A.T @ (A @ S @ B - A @ X @ B) @ B.T, lam) + 0.01 * X.T.T
unroll 3
output S
""",
    "nonneg and box on matrices": """network NB
dims m, n
input X : R[m, n]
param A : R[m, m]
var P : R[m, n] = 0
var Q : R[m, n] = 0
minimize 0.5 * sqnorm(X - A @ P - Q) + sum(P)
subject to P >= 0, Q in box(-0.5, 0.5)
derive fista
unroll 4
output P
""",
    "rpca with norm21": RPCA.replace("norm1(S)", "norm21(S)").replace("learn  mu, lam untied\n", ""),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_matrix_programs_equal_the_reference_evaluator(name):
    from dpc import reference
    from dpc.api import compile_with_program
    compiled = compile_with_program(PROGRAMS[name], "prog.dp", None)
    namespace = {"__name__": "dpc_test_generated"}
    exec(compiled.source, namespace)
    cls = next(v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == "dpc_test_generated")
    p, rng = compiled.program, np.random.default_rng(7)
    sizes = {"m": 5, "n": 4, "k": 3}
    shape = lambda d: tuple(sizes[x] for x in d.shape)  # noqa: E731
    params = {d.name: rng.standard_normal(shape(d)) / 2 for d in p.of_kind("param")}
    inputs = {d.name: rng.standard_normal((3,) + shape(d)) for d in p.of_kind("input")}
    free = {k: v for k, v in sizes.items() if k in p.dims and not any(k in d.shape for d in p.of_kind("param"))}
    net = cls(**{k: torch.tensor(v) for k, v in params.items()}, **free)
    got = net(*[torch.tensor(inputs[d.name]) for d in p.of_kind("input")], trace=True)
    want = reference.evaluate(p, inputs, params, trace=True, dims=free)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-10, atol=1e-10)
    if p.objective is not None:
        states = {d.name: rng.standard_normal((3,) + shape(d)) for d in p.states if d.shape}
        used = [d.name for d in p.states if d.name in {s.name for s in p.objective.free_symbols}]
        value = net.objective(*[torch.tensor(inputs[d.name]) for d in p.of_kind("input")],
                              *[torch.tensor(states[n]) for n in used])
        np.testing.assert_allclose(value.numpy(), reference.evaluate_objective(p, inputs, states, params,
                                                                               dims=free), rtol=1e-10)


def test_examples_compile_unchanged_by_matrix_support():
    """The vector programs print as before: a constant matrix applied to a per-sample vector is still F.linear."""
    from dpc.api import compile_source
    source = compile_source((EXAMPLES / "lista.dp").read_text(), "lista.dp")
    assert "F.linear(" in source and "unsqueeze(-1)" not in source


# --- errors: FILE:LINE:COL with a hint, one test each -----------------------------------------------

def _error(text):
    from dpc.api import compile_source
    from dpc.errors import DpcError
    with pytest.raises(DpcError) as info:
        compile_source(text, "prog.dp")
    return info.value.format()


def test_a_non_smooth_term_coupling_two_vars_is_an_error_at_the_term():
    message = _error(RPCA.replace("mu * nuclear(L) + lam * norm1(S)", "lam * norm1(L + S)"))
    assert re.search(r"^prog\.dp:14:36: error: derive proxgrad on several vars needs the non-smooth terms "
                     r"separable across vars, but lam\*norm1\(L \+ S\) couples L and S", message, re.M), message
    assert "hint: write each non-smooth term of one var" in message


def test_nuclear_of_a_vector_is_an_error_with_a_hint():
    message = _error("network N\ndims n\ninput x : R[n]\nvar z : R[n] = 0\n"
                     "minimize 0.5 * sqnorm(x - z) + nuclear(z)\nderive proxgrad\nunroll 2\n")
    assert message.startswith("prog.dp:5:32: error: nuclear(A) needs a matrix, got R[n]"), message
    assert "hint: the nuclear norm is a matrix's; of a vector it is norm2(v)" in message


def test_a_set_of_vectors_on_a_matrix_var_is_an_error_with_a_hint():
    message = _error("network N\ndims m, n\ninput X : R[m, n]\nvar Z : R[m, n] = 0\n"
                     "minimize 0.5 * sqnorm(X - Z)\nsubject to Z in simplex\nderive proxgrad\nunroll 2\n")
    assert message.startswith("prog.dp:6:12: error: `Z in simplex` is a set of vectors, but Z is a matrix"), message
    assert "hint: constrain a matrix entrywise" in message


def test_a_per_sample_scalar_scaling_a_per_sample_matrix_is_still_an_error():
    message = _error("network N\ndims m, n\ninput X : R[m, n]\nvar S : R[m, n] = 0\n"
                     "update S <- S / 2 + sqnorm(X) * X\nunroll 2\n")
    assert "sqnorm(X)*X is a matrix per sample with a scalar that differs per sample in it (sqnorm(X))" in message
    assert "hint: make that scalar the same for every sample" in message
