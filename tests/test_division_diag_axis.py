"""Issue 19: entrywise division a / b, diag(v), and softmax / logsumexp along one axis of a matrix: values
and gradients against numpy written here (and finite differences), the reference evaluator, and each new
error as FILE:LINE:COL with its hint. float64 throughout (conftest)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import build


def _error(text):
    from dpc.api import compile_source
    from dpc.errors import DpcError
    with pytest.raises(DpcError) as info:
        compile_source(text, "prog.dp")
    return info.value.format()


def np_softmax(A, axis):
    e = np.exp(A - A.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_logsumexp(A, axis):
    m = A.max(axis=axis, keepdims=True)
    return np.squeeze(m + np.log(np.exp(A - m).sum(axis=axis, keepdims=True)), axis=axis)


# --- entrywise division --------------------------------------------------------------------------------

DIVISION = """network Div
dims n
input x : R[n]
input y : R[n]
hyper c = 0.5
hyper lam = 0.3
var z : R[n] = 0
minimize 0.5 * sqnorm(z - x) + lam * sum(square(z) / (c + abs(y))) + sum(z / exp(y))
derive gd(step = 0.2)
unroll 4
output z
"""


def np_division_gd(x, y, c=0.5, lam=0.3, step=0.2, layers=4):
    """Gradient descent with the gradient written by hand: z - x + 2 lam z / (c + |y|) + 1 / e^y."""
    z, out = np.zeros_like(x), []
    for _ in range(layers):
        z = z - step * (z - x + 2 * lam * z / (c + np.abs(y)) + np.exp(-y))
        out.append(z)
    return out


def test_division_values_and_its_derived_gradient_equal_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    y[0, 0] = 0.0  # |y| = 0: c keeps the denominator away from 0
    net = build(DIVISION)(n=7)
    zs = net(torch.tensor(x), torch.tensor(y), trace=True)
    for got, want in zip(zs, np_division_gd(x, y)):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=1e-12)


def test_division_objective_gradient_against_finite_differences():
    """objective(x, y, z) is a / b as written; torch's gradient of it matches central differences, and the
    derived step's gradient (recovered from one gd layer) matches both."""
    rng = np.random.default_rng(1)
    x, y, z = (torch.tensor(rng.standard_normal((1, 6))) for _ in range(3))
    net = build(DIVISION)(n=6)

    def f(zz):
        zz = torch.as_tensor(zz).reshape(1, 6)
        return (0.5 * ((zz - x) ** 2).sum() + 0.3 * (zz ** 2 / (0.5 + y.abs())).sum() + (zz / y.exp()).sum()).item()

    value = net.objective(x, y, z).sum()
    assert abs(value.item() - f(z.numpy())) < 1e-12
    zr = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net.objective(x, y, zr).sum(), zr)
    h, zn = 1e-6, z.numpy().ravel()
    fd = np.array([(f(zn + h * e) - f(zn - h * e)) / (2 * h) for e in np.eye(6)])
    np.testing.assert_allclose(grad.numpy().ravel(), fd, rtol=0, atol=1e-7)
    one = build(DIVISION.replace("var z : R[n] = 0", "input z0 : R[n]\nvar z : R[n] = z0"))(n=6)
    derived = (z - one(x, y, z, steps=1)) / 0.2
    np.testing.assert_allclose(derived.numpy().ravel(), fd, rtol=0, atol=1e-7)


def test_division_reference_evaluator_agrees():
    from dpc import reference
    from dpc.pipeline import compile_program
    program = compile_program(DIVISION, "div.dp")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    got = reference.evaluate(program, inputs={"x": x, "y": y})
    np.testing.assert_allclose(np.asarray(got).reshape(3, 4), np_division_gd(x, y)[-1], atol=1e-12)


def test_scalar_over_vector_and_vector_over_scalar():
    net = build("network D\ndims n\ninput y : R[n]\nvar z : R[n] = 0\n"
                "update z <- 2 / (1 + square(y)) + y / 4 + z / 2\nunroll 2\noutput z\n")(n=5)
    y = np.linspace(-2, 2, 5)[None]
    one = 2 / (1 + y ** 2) + y / 4
    np.testing.assert_allclose(net(torch.tensor(y)).numpy(), one + one / 2, atol=1e-14)


def test_division_by_what_may_be_zero_is_an_error_at_the_denominator():
    text = DIVISION.replace("sum(z / exp(y))", "sum(z / y)")
    message = _error(text)
    line = text.splitlines().index(next(l for l in text.splitlines() if "z / y" in l)) + 1
    col = text.splitlines()[line - 1].index("z / y") + 5
    assert message.startswith(f"prog.dp:{line}:{col}: error: y may be zero"), message
    assert "hint: write `(abs(y) + 1e-8)` in place of `y`" in message
    # a non-negative denominator: the hint adds the floor only
    message = _error(DIVISION.replace("(c + abs(y))", "abs(y)"))
    assert "abs(y) may be zero" in message and "write `(abs(y) + 1e-8)` in place of `abs(y)`" in message


def test_a_hyper_in_the_denominator_is_required_positive():
    message = _error(DIVISION.replace("hyper c = 0.5", "hyper c = -1"))
    assert message.startswith("prog.dp:5:"), message  # at the hyper
    assert "c must be finite and > 0 (the network divides entrywise by" in message
    net_class = build(DIVISION)
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        net_class(n=3, c=0.0)
    net_class(n=3, c=1e-3)


def test_division_of_mismatched_shapes_is_an_error():
    message = _error("network D\ndims n, m\ninput y : R[n]\ninput w : R[m]\nvar z : R[n] = 0\n"
                     "update z <- z + sum(y / exp(w))\nunroll 1\n")
    assert "cannot divide R[n] by R[m] entrywise" in message


# --- diag ---------------------------------------------------------------------------------------------

def test_diag_values_and_its_pullback_against_numpy():
    text = """network G
dims m, n
input x : R[m]
param D : R[m, n]
param a : R[n]
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ diag(z) @ a) + 0.5 * sqnorm(diag(a) @ z)
derive gd(step = 0.05)
unroll 3
output z
"""
    rng = np.random.default_rng(3)
    D, a, x = rng.standard_normal((6, 4)), rng.standard_normal(4), rng.standard_normal((2, 6))
    net = build(text)(D=torch.tensor(D), a=torch.tensor(a))
    z = np.zeros((2, 4))
    for _ in range(3):  # grad = -(D.T (x - D (a*z))) * a + a^2 z, per sample
        r = x - (z * a) @ D.T
        z = z - 0.05 * (-(r @ D) * a + a * a * z)
    np.testing.assert_allclose(net(torch.tensor(x)).numpy(), z, atol=1e-12)
    from dpc import reference
    from dpc.pipeline import compile_program
    got = reference.evaluate(compile_program(text, "g.dp"), inputs={"x": x}, params={"D": D, "a": a})
    np.testing.assert_allclose(np.asarray(got).reshape(2, 4), z, atol=1e-12)


def test_diag_prints_diag_embed_and_needs_a_vector():
    from dpc.api import compile_source
    source = compile_source("network G\ndims n\ninput y : R[n]\nparam d : R[n]\nvar z : R[n] = 0\n"
                            "update z <- diag(d) @ z + y\nunroll 2\n", "g.dp")
    assert "torch.diag_embed(self.d)" in source
    message = _error("network G\ndims n\ninput y : R[n]\nparam A : R[n, n]\nvar z : R[n] = 0\n"
                     "update z <- diag(A) @ z + y\nunroll 2\n")
    assert re.match(r"prog.dp:6:13: error: diag\(v\) needs a vector, got R\[n, n\]", message), message


# --- softmax and logsumexp along an axis --------------------------------------------------------------

AXES = """network Ax
dims N, k
input X : R[N, k]
var Z : R[N, k] = 0
update {
  let s = logsumexp(X, axis = 1)
  Z <- softmax(X, axis = 1) + softmax(X, axis = 0) + 0 * Z
}
unroll 1
output Z
"""


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_along_an_axis_equals_numpy_even_for_large_inputs(scale):
    rng = np.random.default_rng(4)
    X = scale * rng.standard_normal((3, 5, 4))
    net = build(AXES)(N=5, k=4)
    got = net(torch.tensor(X)).numpy()
    want = np_softmax(X, 2) + np_softmax(X, 1)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_logsumexp_along_an_axis_equals_numpy_and_its_gradient_is_softmax(axis):
    text = f"""network L
dims N, k
input X : R[N, k]
var Z : R[N, k] = 0
minimize 0.5 * sqnorm(Z - X) + sum(logsumexp(Z, axis = {axis})) + sum(softmax(Z, axis = {axis}) * X)
derive gd(step = 0.1)
unroll 3
output Z
"""
    rng = np.random.default_rng(5)
    X = 3 * rng.standard_normal((2, 5, 4))
    net = build(text)(N=5, k=4)
    ax = axis + 1  # the batch axis first
    Z = np.zeros_like(X)
    for _ in range(3):
        S = np_softmax(Z, ax)
        # d/dZ sum(S * X) along the axis: S * (X - sum(S * X) along it)
        grad = Z - X + S + S * (X - (S * X).sum(axis=ax, keepdims=True))
        Z = Z - 0.1 * grad
    np.testing.assert_allclose(net(torch.tensor(X)).numpy(), Z, rtol=0, atol=1e-12)
    Zt = torch.tensor(1e4 * rng.standard_normal((2, 5, 4)))
    value = net.objective(torch.tensor(X), Zt)
    want = (0.5 * ((Zt.numpy() - X) ** 2).sum((1, 2)) + np_logsumexp(Zt.numpy(), ax).sum(1)
            + (np_softmax(Zt.numpy(), ax) * X).sum((1, 2)))
    np.testing.assert_allclose(value.numpy(), want, rtol=1e-12)
    from dpc import reference
    from dpc.pipeline import compile_program
    got = reference.evaluate(compile_program(text, "l.dp"), inputs={"X": X})
    np.testing.assert_allclose(np.asarray(got), Z, atol=1e-12)


def test_the_vector_forms_are_unchanged():
    net = build("network V\ndims n\ninput x : R[n]\nvar z : R[n] = 0\n"
                "update z <- softmax(x) + softmax(x, axis = 0) + logsumexp(x) * z\nunroll 2\n")(n=5)
    x = 800 * np.random.default_rng(6).standard_normal((3, 5))
    s = np_softmax(x, 1)
    z1 = 2 * s
    want = 2 * s + np_logsumexp(x, 1)[:, None] * z1
    np.testing.assert_allclose(net(torch.tensor(x)).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("call, message, hint", [
    ("softmax(X)", "softmax(v) of a matrix R[N, k] needs the axis it acts along",
     "add `, axis = 1` after the matrix, for every row (axis = 0: every column)"),
    ("softmax(X, axis = 2)", "softmax(v) has no axis 2: a matrix R[N, k] has axes 0 (its N rows) and 1 (its k "
     "columns)", "write axis = 1"),
    ("softmax(X, dim = 1)", "softmax(v) takes no keyword argument 'dim'", "write `axis = 1` in place of `dim = 1`"),
    ("softmax(X, axis = 0.5)", "softmax(..., axis = ...) takes a non-negative integer literal",
     "write e.g. axis = 1"),
])
def test_an_axis_the_value_does_not_have_is_an_error_with_a_hint(call, message, hint):
    text = f"network A\ndims N, k\ninput X : R[N, k]\nvar Z : R[N, k] = 0\nupdate Z <- {call} + Z\nunroll 1\n"
    got = _error(text)
    assert got.startswith("prog.dp:5:"), got
    assert message in got and f"hint: {hint}" in got, got


def test_a_vector_has_only_axis_0():
    got = _error("network A\ndims n\ninput x : R[n]\nvar z : R[n] = 0\nupdate z <- softmax(x, axis = 1) + z\n"
                 "unroll 1\n")
    assert got.startswith("prog.dp:5:13: error: softmax(v) has no axis 1: a vector R[n] has one axis, 0"), got
    assert "hint: delete `, axis = 1` (a vector's softmax is along its one axis)" in got


def test_logsumexp_of_a_vector_in_an_objective_has_softmax_as_its_gradient():
    net = build("network V\ndims n\ninput x : R[n]\nvar z : R[n] = 0\n"
                "minimize 0.5 * sqnorm(z - x) + logsumexp(z)\nderive gd(step = 0.2)\nunroll 3\n")(n=4)
    x = 500 * np.random.default_rng(7).standard_normal((2, 4))
    z = np.zeros_like(x)
    for _ in range(3):
        z = z - 0.2 * (z - x + np_softmax(z, 1))
    np.testing.assert_allclose(net(torch.tensor(x)).numpy(), z, rtol=0, atol=1e-10)
    value = net.objective(torch.tensor(x), torch.tensor(x)).numpy()  # at z = x: logsumexp(x), no overflow
    np.testing.assert_allclose(value, np_logsumexp(x, 1), rtol=1e-14)
