"""Zeros and ones of an image stack R[c, h, w] (session 7 review): a value sympy folded to a constant (`y - y`,
`0 * y`, a first layer from a zero start that stays zero, `K - K`) or a start of 1 was printed as a 2-D
torch.zeros(c*h, w) / torch.ones(c*h, w), the algebra's (c*h) x w shape: `.expand(batch, c, h, w)` and sums with a
(batch, c, h, w) tensor raised, and a filter bank's zero `K - K` was read by conv as one (k*s) x s kernel. A stack's
rows are now StackRows(c, h) (dpc.ir), which every shape sympy builds from them keeps. Each program is compared with
numpy written here, layer by layer, and with dpc.reference through the fuzzer's judge."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build, conv_bank_matrix
from dpc.api import compile_source
from dpc.fuzz.check import classify

torch.set_default_dtype(torch.float64)

ZERO_UPDATE = """network Z1
dims   c, h, w
input  g : R[c, h, w]
var    y : R[c, h, w] = g
update y <- BODY
unroll 3
output y
"""


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0)


@pytest.mark.parametrize("body, want", [
    ("y - y", lambda g, k: np.zeros_like(g)),
    ("0 * y", lambda g, k: np.zeros_like(g)),
    ("g * exp(y - y)", lambda g, k: g),                 # the zero inside an entrywise atom
    ("g + 0 * (y - y)", lambda g, k: g),
])
def test_an_update_that_folds_to_a_stack_constant(body, want):
    """`y <- y - y` was printed torch.zeros(c*h, w).expand(batch, c, h, w): a RuntimeError at every size."""
    text = ZERO_UPDATE.replace("BODY", body)
    net = build(text)()
    g = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    got = net(torch.tensor(g), trace=True)
    for k, layer in enumerate(got, 1):
        assert tuple(layer.shape) == (2, 3, 5, 4)
        np.testing.assert_allclose(layer.numpy(), want(g, k), rtol=0, atol=1e-14)
    assert "c * h" not in compile_source(text)  # no (c*h, w) constant left in the module


def test_a_stack_started_at_one():
    """var y : R[c, h, w] = 1 was torch.ones(c*h, w) * g: a RuntimeError."""
    net = build("""network O1
dims   c, h, w
input  g : R[c, h, w]
var    y : R[c, h, w] = 1
update y <- y * g
unroll 3
output y
""")()
    g = np.random.default_rng(1).standard_normal((2, 4, 3, 5))
    for k, layer in enumerate(net(torch.tensor(g), trace=True), 1):
        np.testing.assert_allclose(layer.numpy(), g ** k, rtol=1e-13, atol=0)


def test_integer_dims_keep_the_channel_axis():
    """R[3, 4, 5]: the algebra's rows were the number 12, so no printer could tell a stack from a 12 x 5 matrix."""
    text = """network O2
input  g : R[3, 4, 5]
var    y : R[3, 4, 5] = 1
update y <- 0.5 * y + 0 * g
unroll 3
output y
"""
    net = build(text)()
    g = np.random.default_rng(2).standard_normal((2, 3, 4, 5))
    for k, layer in enumerate(net(torch.tensor(g), trace=True), 1):
        assert tuple(layer.shape) == (2, 3, 4, 5)
        np.testing.assert_allclose(layer.numpy(), np.full((2, 3, 4, 5), 0.5 ** k), rtol=0, atol=1e-15)


@pytest.mark.parametrize("derive", ["proxgrad(step = 0.5)", "gd(step = 0.5)"])
@pytest.mark.parametrize("data", [0, 0.25])
def test_a_first_order_method_from_a_zero_start(derive, data):
    """From y = 0, 0.5*sqnorm(y) + lam*norm1(y) (lam*sqnorm(y) for gd) stays 0: the folded first layer was
    torch.zeros(c*h, w).expand(...), a RuntimeError; with a data term data*sqnorm(y - g) it moves. Against numpy's
    proximal gradient (its prox the elastic net's, as derive proxgrad splits it) and gradient descent."""
    reg = "norm1" if derive.startswith("proxgrad") else "sqnorm"
    net = build(f"""network F1
dims   c, h, w
input  g : R[c, h, w]
hyper  lam = 0.1
var    y : R[c, h, w] = 0
minimize 0.5*sqnorm(y) + lam*{reg}(y) + {data}*sqnorm(y - g)
derive {derive}
unroll 3
output y
""")()
    g = np.random.default_rng(3).standard_normal((2, 2, 3, 4))
    y, want = np.zeros_like(g), []
    for _ in range(3):
        if reg == "norm1":
            # proxgrad's prox takes 0.5*sqnorm(y) + lam*norm1(y): soft(v, step*lam) / (1 + step)
            y = _soft(y - 0.5 * 2 * data * (y - g), 0.5 * 0.1) / 1.5
        else:
            y = y - 0.5 * (y + 0.2 * y + 2 * data * (y - g))
        want.append(y)
    for layer, w in zip(net(torch.tensor(g), trace=True), want):
        assert tuple(layer.shape) == (2, 2, 3, 4)
        np.testing.assert_allclose(layer.numpy(), w, rtol=0, atol=1e-14)
    if data == 0:
        assert not np.any(want[-1])


CONV_ZERO = """network C1
dims   k, s, h, w
input  f : R[h, w]
param  K : R[k, s, s]
let    Z = K - K
hyper  lam = 0.1
var    u : R[h, w] = f
minimize 0.5*sqnorm(u - f) + 0.5*sqnorm(u) + lam*sqnorm(conv(Z, u))
derive gd(step = 0.5)
unroll 3
output u
"""


def test_a_filter_bank_that_folds_to_zero_is_still_a_bank():
    """let Z = K - K (K : R[k, s, s]) was printed torch.zeros(k*s, s): conv read it as one (k*s) x s kernel and
    refused images shorter than k*s/2 (the objective's conv(Z, u) was a (h, w) image, not (k, h, w)). Now Z is
    torch.zeros(k, s, s); gd is u <- u - 0.5*(2u - f), the conv term contributing nothing."""
    source = compile_source(CONV_ZERO)
    assert "torch.zeros(k, s, s," in source
    K = np.random.default_rng(4).standard_normal((5, 3, 3))
    net = build(CONV_ZERO)(K=torch.tensor(K))
    f = np.random.default_rng(5).standard_normal((2, 4, 6))  # h = 4 < k*s/2 = 7.5: refused before
    u, want = f.copy(), []
    for _ in range(3):
        u = u - 0.5 * (2 * u - f)
        want.append(u)
    for layer, w in zip(net(torch.tensor(f), trace=True), want):
        np.testing.assert_allclose(layer.numpy(), w, rtol=0, atol=1e-14)
    objective = net.objective(torch.tensor(f), torch.tensor(u))
    np.testing.assert_allclose(objective.numpy(), 0.5 * ((u - f) ** 2).sum((1, 2)) + 0.5 * (u ** 2).sum((1, 2)),
                               rtol=1e-13)


def test_a_zero_bank_on_a_stack_with_integer_dims():
    """conv(Z, f) with Z = K - K, K : R[3, 3, 3], added to a state R[3, 4, 5]: zeros of (3, 3, 3), a (3, 4, 5)
    stack of zeros out of conv. y <- y + 0.5*(g - y) as numpy."""
    net = build("""network C2
input  g : R[3, 4, 5]
input  f : R[4, 5]
param  K : R[3, 3, 3]
let    Z = K - K
var    y : R[3, 4, 5] = 0
update y <- y + 0.5*(g - y) + conv(Z, f)
unroll 3
output y
""")(K=torch.tensor(np.random.default_rng(6).standard_normal((3, 3, 3))))
    rng = np.random.default_rng(7)
    g, f = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 4, 5))
    y = np.zeros_like(g)
    for layer in net(torch.tensor(g), torch.tensor(f), trace=True):
        y = y + 0.5 * (g - y)
        np.testing.assert_allclose(layer.numpy(), y, rtol=0, atol=1e-14)


@pytest.mark.parametrize("text", [
    ZERO_UPDATE.replace("BODY", "y - y"),
    ZERO_UPDATE.replace("BODY", "g * exp(y - y)"),
    CONV_ZERO,
    """network F2
dims   c, h, w
input  g : R[c, h, w]
hyper  lam = 0.1
var    y : R[c, h, w] = 0
minimize lam*norm1(y) + 0.5*sqnorm(y)
derive proxgrad(step = 0.5)
unroll 3
output y
""",
])
def test_the_judge_compares_them_with_the_reference(text):
    """The fuzzer's judge: compiled, run in float64 and float32, compared with dpc.reference layer by layer and
    in the objective (these were run_fail or rejected for the wrong reason before)."""
    result = classify(text, seed=0)
    assert result.outcome == "ok", (result.outcome, result.message)


def test_admm_splits_a_norm_of_a_bank_written_as_an_expression():
    """norm1(conv(K + Z, u)) with Z = 0*K: derive admm read the operator's filter shape from its declaration only,
    and an expression K + Z has none: a TypeError in conv's shape rule (an internal error). Its shape is now read
    off the algebra (StackRows(k, s) rows: k, s, s); the module equals numpy's scaled ADMM with the dense circular
    bank of K: u <- solve(I + rho D.T D, f + rho D.T (w - v)), w <- soft(D u + v, lam/rho), v <- v + D u - w."""
    text = """network C4
dims   k, s, h, w
input  f : R[h, w]
param  K : R[k, s, s]
let    Z = 0 * K
hyper  lam = 0.1
var    u : R[h, w] = 0
minimize 0.5*sqnorm(u - f) + lam*norm1(conv(K + Z, u, pad = circular))
derive admm(rho = 0.5)
unroll 3
output u
"""
    K = np.random.default_rng(8).standard_normal((2, 3, 3))
    net = build(text)(K=torch.tensor(K))
    f = np.random.default_rng(9).standard_normal((2, 4, 5))
    D = conv_bank_matrix(K, 4, 5, "circular")
    A = np.eye(20) + 0.5 * D.T @ D
    for n, layers in enumerate(zip(*net(torch.tensor(f), trace=True))):  # sample n, every layer
        u, w, v = np.zeros(20), np.zeros(D.shape[0]), np.zeros(D.shape[0])
        for layer in layers:
            u = np.linalg.solve(A, f[n].ravel() + 0.5 * D.T @ (w - v))
            w_next = _soft(D @ u + v, 0.1 / 0.5)
            v, w = v + D @ u - w_next, w_next
            np.testing.assert_allclose(layer.numpy().ravel(), u, rtol=0, atol=1e-8)
    assert classify(text, seed=0).outcome == "ok"
