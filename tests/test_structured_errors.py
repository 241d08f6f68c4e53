"""Matrix programs (issue 19): the errors of matrix-shape misuse and of several vars, each a FILE:LINE:COL
error with its hint (the literal edits also have rows in tests/test_hints.py), and regression tests for what
the fuzzer's matrix programs found, each against an independent numpy loop. float64 throughout (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build

HEAD = "network N\ndims m, n\ninput X : R[m, n]\n"


def _error(text):
    from dpc.api import compile_source
    from dpc.errors import DpcError
    with pytest.raises(DpcError) as info:
        compile_source(text, "prog.dp")
    return info.value.format()


def _expect(text, located, line, caret_col, caret_len, hint):
    """The message starts with `located` (prog.dp:LINE:COL: error: ...), shows the line with the caret under
    the subexpression, and says the hint."""
    message = _error(text)
    assert message.startswith(located), message
    lines = message.splitlines()
    assert lines[1].strip() == line, message
    assert lines[2].index("^") == 4 + caret_col - 1 and lines[2].count("^") == caret_len, message
    assert "\n  hint: " in message and hint in message.split("\n  hint: ", 1)[1], message


# --- errors -----------------------------------------------------------------------------------------

def test_a_penalty_coupling_two_vars_under_fista_names_the_term():
    _expect(HEAD + "hyper lam = 0.1\nvar L : R[m, n] = 0\nvar S : R[m, n] = 0\n"
            "minimize 0.5*sqnorm(X - L - S) + lam*nuclear(L + S)\nderive fista\nunroll 2\n",
            "prog.dp:7:34: error: derive fista on several vars needs the non-smooth terms separable across vars, "
            "but lam*nuclear(L + S) couples L and S", "minimize 0.5*sqnorm(X - L - S) + lam*nuclear(L + S)", 34, 18,
            "write each non-smooth term of one var")


def test_nuclear_of_a_vector():
    _expect(HEAD + "input x : R[n]\nhyper lam = 0.1\nvar z : R[n] = 0\nminimize 0.5*sqnorm(x - z) + lam*nuclear(z)\n"
            "derive proxgrad\nunroll 2\n", "prog.dp:7:34: error: nuclear(A) needs a matrix, got R[n]",
            "minimize 0.5*sqnorm(x - z) + lam*nuclear(z)", 34, 10, "of a vector it is norm2(v)")


def test_svt_of_a_vector():
    _expect(HEAD + "input x : R[n]\nhyper lam = 0.1\nvar z : R[n] = 0\nupdate z <- svt(z - 0.5*(z - x), lam)\n"
            "unroll 2\n", "prog.dp:7:13: error: svt(A, t) needs a matrix first, got R[n]",
            "update z <- svt(z - 0.5*(z - x), lam)", 13, 25, "write blocksoft in place of svt")


def test_norm21_of_a_vector():
    _expect(HEAD + "input x : R[n]\nhyper lam = 0.1\nvar z : R[n] = 0\nminimize 0.5*sqnorm(x - z) + lam*norm21(z)\n"
            "derive proxgrad\nunroll 2\n", "prog.dp:7:34: error: norm21(A) needs a matrix, got R[n]",
            "minimize 0.5*sqnorm(x - z) + lam*norm21(z)", 34, 9, "of a vector write norm2(v)")


def test_rowsoft_of_a_vector():
    _expect(HEAD + "input x : R[n]\nhyper lam = 0.1\nvar z : R[n] = 0\nupdate z <- rowsoft(z - 0.5*(z - x), lam)\n"
            "unroll 2\n", "prog.dp:7:13: error: rowsoft(A, t) needs a matrix first, got R[n]",
            "update z <- rowsoft(z - 0.5*(z - x), lam)", 13, 29, "write blocksoft in place of rowsoft")


def test_norm2_of_a_matrix():
    _expect(HEAD + "hyper lam = 0.1\nvar Z : R[m, n] = 0\nminimize 0.5*sqnorm(X - Z) + lam*norm2(Z)\n"
            "derive proxgrad\nunroll 2\n", "prog.dp:6:34: error: norm2(v) needs a vector, got R[m, n]",
            "minimize 0.5*sqnorm(X - Z) + lam*norm2(Z)", 34, 8, "write sqrt(sqnorm(A)) (Frobenius)")


def test_norm0_of_a_matrix():
    _expect(HEAD + "hyper lam = 0.1\nvar Z : R[m, n] = 0\nminimize 0.5*sqnorm(X - Z) + lam*norm0(Z)\n"
            "derive proxgrad\nunroll 2\n", "prog.dp:6:34: error: norm0(v) needs a vector, got R[m, n]",
            "minimize 0.5*sqnorm(X - Z) + lam*norm0(Z)", 34, 8, "penalise norm1(A) (entrywise) in place of norm0(A)")


def test_opnorm_of_a_vector():
    _expect(HEAD + "input x : R[n]\nvar z : R[n] = 0\nupdate z <- z - 0.1 * opnorm(z) * x\nunroll 3\n",
            "prog.dp:6:23: error: opnorm(A) needs a matrix, got R[n]", "update z <- z - 0.1 * opnorm(z) * x", 23, 9,
            "write norm2(v) in place of opnorm(v)")


def test_a_matrix_product_of_mismatched_sizes_is_located_at_the_product():
    message = _error(HEAD + "hyper lam = 0.1\nvar Z : R[m, n] = 0\nupdate Z <- soft(Z - 0.5*(Z @ X - X), lam)\n"
                     "unroll 3\n")
    assert message.startswith("prog.dp:6:27: error: cannot multiply Z : R[m, n] by X : R[m, n]: inner sizes n and m "
                              "differ"), message
    assert message.splitlines()[2].count("^") == 5, message  # Z @ X, not the whole update


def test_unroll_until_with_fistas_t_beside_matrix_vars():
    _expect(HEAD + "hyper lam = 0.1\nvar L : R[m, n] = 0\nvar S : R[m, n] = 0\n"
            "minimize 0.5*sqnorm(X - L - S) + lam*nuclear(L) + lam*norm1(S)\nderive fista\nunroll until(tol = 1e-6)\n",
            "prog.dp:9:1: error: unroll until keeps the scalar state t per sample, and a per-sample scalar cannot "
            "scale the matrix state L", "unroll until(tol = 1e-6)", 1, 24, "run a fixed number of layers (unroll 100)")
    # the hint applied literally compiles
    build(HEAD + "hyper lam = 0.1\nvar L : R[m, n] = 0\nvar S : R[m, n] = 0\n"
          "minimize 0.5*sqnorm(X - L - S) + lam*nuclear(L) + lam*norm1(S)\nderive fista\nunroll 100\n")


def test_adapt_gates_on_a_matrix_state():
    _expect(HEAD + "hyper lam = 0.1\nvar Z : R[m, n] = 0\nupdate Z <- soft(Z - 0.5*(Z - X), lam)\nunroll 3\n"
            "adapt gates\n", "prog.dp:8:1: error: adapt gates gates a vector state, but Z is a matrix (R[m, n])",
            "adapt gates", 1, 11, "delete the adapt gates line")


def test_adapt_support_on_a_matrix_state():
    _expect(HEAD + "hyper lam = 0.1\nvar Z : R[m, n] = 0\nupdate Z <- soft(Z - 0.5*(Z - X), lam)\nunroll 3\n"
            "adapt support\n", "prog.dp:8:1: error: adapt support selects the largest entries of a vector, but "
            "0.5*X + 0.5*Z is a matrix", "adapt support", 1, 13, "delete the adapt support line")


def test_a_per_sample_scalar_as_the_threshold_of_a_per_sample_matrix():
    # a (batch, 1) threshold against a (batch, m, n) matrix has no layout: an error, not a broadcast
    _expect(HEAD + "hyper lam = 0.1\nvar Z : R[m, n] = 0\nupdate Z <- soft(Z - 0.5*(Z - X), lam * norm1(X))\n"
            "unroll 3\n", "prog.dp:6:1: error: soft(0.5*X, lam*norm1(X)) is a matrix per sample with a scalar that "
            "differs per sample in it (lam*norm1(X))", "update Z <- soft(Z - 0.5*(Z - X), lam * norm1(X))", 1, 49,
            "make that scalar the same for every sample")


# --- what the fuzzer's matrix programs found: each against a numpy loop ---------------------------------

def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0)


def test_a_per_sample_matrix_applied_to_a_constant_start_vector():
    # the folded first layer applies U (batch, r, r) to softmax of the constant start: was F.linear, a crash
    cls = build("network N\ndims r\ninput U : R[r, r]\nvar q : R[r] = 0.25\nupdate q <- U @ softmax(q)\nunroll 3\n")
    rng = np.random.default_rng(0)
    U = rng.standard_normal((4, 5, 5))
    out = cls(r=5)(torch.tensor(U), trace=True)
    for b in range(4):
        q = np.full(5, 0.25)
        for k in range(3):
            q = U[b] @ _softmax(q)
            np.testing.assert_allclose(out[k][b].detach().numpy(), q, rtol=1e-12, atol=1e-12)


def test_column_sums_of_a_per_sample_matrix():
    # X.T @ (c * ones) printed as the column sums of X: sum(0) summed over the batch axis
    cls = build(HEAD + "var s : R[m] = 2.0\nupdate s <- X @ (X.T @ s + 0.01) / 10\nunroll 3\n")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 4, 6))
    out = cls(m=4, n=6)(torch.tensor(X), trace=True)
    for b in range(3):
        s = np.full(4, 2.0)
        for k in range(3):
            s = X[b] @ (X[b].T @ s + 0.01) / 10
            np.testing.assert_allclose(out[k][b].detach().numpy(), s, rtol=1e-12, atol=1e-12)


def test_scalars_of_a_per_sample_matrix_scale_a_vector_per_sample():
    # sqnorm, nuclear, norm21, opnorm and sum of X are (batch, 1) in the update, not (batch, 1, 1)
    cls = build(HEAD + "input x : R[n]\nvar k : R[n] = 1\nupdate k <- sqnorm(X) / (1 + sqnorm(X)) * k + "
                "nuclear(X) / (1 + nuclear(X)) * x + norm21(X) / (2 + norm21(X)) * x - opnorm(X) / (3 + opnorm(X)) * k"
                " + 0.01 * sum(X) * x\nunroll 3\n")
    rng = np.random.default_rng(2)
    X, x = rng.standard_normal((3, 3, 5)), rng.standard_normal((3, 5))
    out = cls(m=3, n=5)(torch.tensor(X), torch.tensor(x), trace=True)
    for b in range(3):
        A = X[b]
        sq, nuc = (A * A).sum(), np.linalg.svd(A, compute_uv=False).sum()
        n21, op = np.sqrt((A * A).sum(1)).sum(), np.linalg.svd(A, compute_uv=False).max()
        k = np.ones(5)
        for layer in range(3):
            k = sq / (1 + sq) * k + nuc / (1 + nuc) * x[b] + n21 / (2 + n21) * x[b] - op / (3 + op) * k \
                + 0.01 * A.sum() * x[b]
            np.testing.assert_allclose(out[layer][b].detach().numpy(), k, rtol=1e-12, atol=1e-12)


def test_three_vars_take_one_joint_step_with_the_row_sum_bound():
    # the joint Lipschitz bound of three vars is a max of three terms (was a crash in the printer, and in the
    # default check of its requirement when a hyper weights the fit)
    cls = build("network N\ndims m, n, p\ninput X : R[m, n]\nparam D : R[m, p]\nhyper c = 0.5\nhyper lam = 0.1\n"
                "hyper mu = 0.2\nhyper tau = 0.3\nvar E : R[p, n] = 0\nvar U : R[m, n] = 0\nvar Z : R[m, n] = 0\n"
                "minimize c*sqnorm(X - (D @ E + U - Z)) + lam*nuclear(E) + mu*sqnorm(U) + tau*norm1(Z)\n"
                "derive proxgrad\nunroll 4\noutput E\n")
    rng = np.random.default_rng(3)
    D, X = rng.standard_normal((5, 3)), rng.standard_normal((2, 5, 4))
    out = cls(D=torch.tensor(D), n=4)(torch.tensor(X), trace=True)
    d = np.linalg.norm(D, 2)
    step = 1 / max(d * d + 2 * d, d + 2)  # block rows: |D'D| + |D'| + |D'|, |D| + 1 + 1 (twice)
    for b in range(2):
        E, U, Z = np.zeros((3, 4)), np.zeros((5, 4)), np.zeros((5, 4))
        for k in range(4):
            r = D @ E + U - Z - X[b]
            Uu, s, Vh = np.linalg.svd(E - step * D.T @ r, full_matrices=False)
            E, U, Z = (Uu * np.maximum(s - 0.1 * step, 0)) @ Vh, (U - step * r) / (1 + 2 * 0.2 * step), \
                _soft(Z + step * r, 0.3 * step)
            np.testing.assert_allclose(out[k][b].detach().numpy(), E, rtol=1e-10, atol=1e-12)


def test_learn_weights_on_a_matrix_state_has_a_matrix_bias():
    cls = build("network N\ndims p, T, d\ninput Y : R[p, T]\nparam D : R[p, d]\nparam B : R[d, T]\nhyper lam = 0.1\n"
                "var E : R[d, T] = 0\nminimize 0.5 * sqnorm(Y - D @ E) + 0.5 * sqnorm(E - B) + lam * norm1(E)\n"
                "derive proxgrad\nunroll 4\nlearn weights\n")
    rng = np.random.default_rng(4)
    D, B, Y = rng.standard_normal((5, 3)), rng.standard_normal((3, 4)), rng.standard_normal((2, 5, 4))
    net = cls(D=torch.tensor(D), B=torch.tensor(B))
    assert all(tuple(b.shape) == (3, 4) for b in net.b)  # each entry its own bias (was (3,): a broadcast)
    out = net(torch.tensor(Y), trace=True)
    L = np.linalg.norm(D.T @ D + np.eye(3), 2)
    for b in range(2):
        E = np.zeros((3, 4))
        for k in range(4):
            E = _soft(E - (D.T @ (D @ E - Y[b]) + E - B) / L, 0.1 / L)
            np.testing.assert_allclose(out[k][b].detach().numpy(), E, rtol=1e-10, atol=1e-12)


def test_adapt_gates_beside_a_matrix_input_gates_from_the_vector_inputs():
    # a matrix input beside the vector state made U_i @ Y a matrix (a crash); init = ista is ISTA untrained
    cls = build("network N\ndims m, n\ninput Y : R[m, n]\ninput x : R[m]\nparam D : R[m, m]\nparam w : R[n]\n"
                "hyper lam = 0.1\nvar z : R[m] = 0\nupdate z <- soft(z - 0.1 * (D @ z - x - Y @ w), lam)\nunroll 3\n"
                "adapt gates(init = ista)\n")
    rng = np.random.default_rng(5)
    D, w = rng.standard_normal((4, 4)), rng.standard_normal(6)
    Y, x = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4))
    out = cls(D=torch.tensor(D), w=torch.tensor(w))(torch.tensor(Y), torch.tensor(x), trace=True)
    for b in range(2):
        z = np.zeros(4)
        for k in range(3):
            z = _soft(z - 0.1 * (D @ z - x[b] - Y[b] @ w), 0.1)
            np.testing.assert_allclose(out[k][b].detach().numpy(), z, rtol=1e-12, atol=1e-12)


def test_a_learned_hyper_in_a_step_beside_opnorm_of_a_sum_compiles():
    # (the 20,000-program run) the step bound of `learn mu` reads opnorm(2*eye(k) + M.T @ M): sympy's
    # simplify of it raised "Mix of Matrix and Scalar symbols" (a crash); untrained, it is FISTA on the box
    cls = build("network N\ndims w, k\ninput b : R[w]\nparam M : R[w, k]\nhyper lam = 2.0\nhyper mu = 100\n"
                "var h : R[k]\nminimize 0.5 * sqnorm(b - M @ h) + 0.1 * sum(h) + sum(square(h + 0.1)) + lam * norm1(h)\n"
                "subject to h in box(0.05, 3)\nderive fista(step = 4 / mu)\nunroll 3\nlearn lam, mu\noutput h\n")
    rng = np.random.default_rng(6)
    M, b = rng.standard_normal((5, 4)) / 3, rng.standard_normal((2, 5))
    out = cls(M=torch.tensor(M))(torch.tensor(b), trace=True)
    s = 4 / 100
    for j in range(2):
        z = y = np.zeros(4)
        t = 1.0
        for k in range(3):
            grad = M.T @ (M @ y - b[j]) + 0.1 + 2 * (y + 0.1)
            z_next = np.clip(_soft(y - s * grad, 2.0 * s), 0.05, 3)
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            y, z, t = z_next + (t - 1) / t_next * (z_next - z), z_next, t_next
            np.testing.assert_allclose(out[k][j].detach().numpy(), z, rtol=1e-10, atol=1e-12)


def test_admm_on_a_matrix_var_splits_with_matrix_variables():
    # (the 20,000-program run, program 18081) w and u were declared vectors (K's rows only): the later layers
    # solved with the right-hand side transposed, a crash; they have the matrix var's columns now
    cls = build("network N\ndims d, n, k\ninput X : R[d, n]\nparam Phi : R[d, k]\nhyper lam = 0.1\nvar E : R[k, n]\n"
                "minimize sqnorm(X - Phi @ E) + lam * norm1(E)\nderive admm\nunroll 5\n")
    rng = np.random.default_rng(7)
    Phi, X = rng.standard_normal((5, 3)), rng.standard_normal((2, 5, 4))
    out = cls(Phi=torch.tensor(Phi))(torch.tensor(X), trace=True)
    A = 2 * Phi.T @ Phi + np.eye(3)
    for b in range(2):
        w = u = np.zeros((3, 4))
        for k in range(5):
            E = np.linalg.solve(A, 2 * Phi.T @ X[b] + w - u)
            w_next = _soft(E + u, 0.1)
            u, w = u + E - w_next, w_next
            np.testing.assert_allclose(out[k][b].detach().numpy(), E, rtol=1e-10, atol=1e-12)


def test_a_chain_of_minus_signs_negates_once_or_not_at_all():
    # (the 20,000-program run, program 10039: 3,000 minus signs took 12 s to lower, one sympy negation of the
    # whole expression each) the chain is counted: an odd one negates once
    cls = build("network N\ndims n\ninput x : R[n]\nvar z : R[n] = 0\nupdate z <- " + "-" * 3001 + "x + "
                + "-" * 3000 + "z / 2\nunroll 3\n")
    x = np.random.default_rng(8).standard_normal((2, 4))
    out = cls(n=4)(torch.tensor(x), trace=True)
    z = np.zeros((2, 4))
    for k in range(3):
        z = -x + z / 2
        np.testing.assert_allclose(out[k].numpy(), z, rtol=1e-12, atol=1e-12)


def test_a_per_layer_joint_lipschitz_bound_with_a_gram_inside_max_compiles_and_equals_numpy():
    """Fuzz seed 83, program 601: learn lam untied makes the joint bound max(..., opnorm(2*lam*D.T @ D + eye)
    + ...) a per-layer let; naming D.T @ D before the layers rebuilt the max, whose re-canonicalisation
    crashed in sympy ('Mix of Matrix and Scalar symbols')."""
    import numpy as np
    import torch
    from conftest import build
    text = ("network P\ndims S, r, q\ninput M : R[S, r]\nparam D : R[S, q]\ninput B : R[q, r]\nhyper lam = 2.0\n"
            "var U : R[q, r] = 1E-2\nvar Z : R[S, r] = .5\n"
            "minimize lam * sqnorm(D @ U - Z - M) + 0.5 * sqnorm(U - B) + lam / 2 * norm1(Z)\n"
            "derive proxgrad\nunroll 4\nlearn lam untied\noutput U\n")
    rng = np.random.default_rng(0)
    D, M, B = rng.standard_normal((5, 3)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 4))
    out = build(text)(D=torch.tensor(D))(torch.tensor(M), torch.tensor(B)).detach().numpy()
    lam, n2 = 2.0, lambda A: np.linalg.norm(A, 2)
    L = max(2 * lam + n2(2 * lam * D), n2(2 * lam * D.T @ D + np.eye(3)) + n2(2 * lam * D.T))
    for b in range(2):
        U, Z = np.full((3, 4), 0.01), np.full((5, 4), 0.5)
        for _ in range(4):
            R = D @ U - Z - M[b]
            U, V = U - (U - B[b] + 2 * lam * D.T @ R) / L, Z + 2 * lam * R / L
            Z = np.sign(V) * np.maximum(np.abs(V) - lam / 2 / L, 0)
        assert np.abs(out[b] - U).max() < 1e-10
