"""A matrix var multiplied on both sides (0.5*sqnorm(X - A @ S @ B)): its gradient A.T (A S B - X) B.T is
linear in S but has no single left factor. proxgrad bounds its Lipschitz constant by opnorm(A)^2 *
opnorm(B)^2 (the norm of S -> A.T A S B B.T) instead of asking for a step. float64 (conftest)."""
from __future__ import annotations

import numpy as np
import torch

from conftest import build

SIDED = """network Sided
dims m, n, k
input X : R[m, k]
param A : R[m, n]
param B : R[k, k]
hyper lam = 0.1
var S : R[n, k] = 0
minimize 0.5*sqnorm(X - A @ S @ B) + lam*norm1(S)
derive proxgrad
unroll 6
output S
"""


def np_ista_sided(X, A, B, lam, layers):
    L = np.linalg.norm(A, 2) ** 2 * np.linalg.norm(B, 2) ** 2
    S = np.zeros((A.shape[1], B.shape[0]))
    out = []
    for _ in range(layers):
        V = S - A.T @ (A @ S @ B - X) @ B.T / L
        S = np.sign(V) * np.maximum(np.abs(V) - lam / L, 0)
        out.append(S)
    return out


def test_a_two_sided_product_gets_the_product_of_the_operator_norms_as_its_lipschitz_bound():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((5, 7)), rng.standard_normal((3, 3))
    X = rng.standard_normal((4, 5, 3))
    net = build(SIDED)(A=torch.tensor(A), B=torch.tensor(B))
    assert abs(float(net.L) - np.linalg.norm(A, 2) ** 2 * np.linalg.norm(B, 2) ** 2) < 1e-9
    trace = net(torch.tensor(X), trace=True)
    for b in range(len(X)):
        for got, want in zip(trace, np_ista_sided(X[b], A, B, 0.1, 6)):
            assert np.abs(got[b].numpy() - want).max() < 1e-12


def test_the_bound_makes_the_objective_fall():
    """step = 1/L with that L is a descent step: the LASSO objective never rises (it would with a too-large step)."""
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((6, 4)), rng.standard_normal((3, 3))
    X = rng.standard_normal((2, 6, 3))
    trace = build(SIDED.replace("unroll 6", "unroll 30"))(A=torch.tensor(A), B=torch.tensor(B))(
        torch.tensor(X), trace=True)
    values = [0.5 * ((X[0] - A @ S[0].numpy() @ B) ** 2).sum() + 0.1 * np.abs(S[0].numpy()).sum() for S in trace]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0]
