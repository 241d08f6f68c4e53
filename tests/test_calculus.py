"""dpc's own reverse-mode calculus: smooth entrywise atoms composed with affine maps, differentiated without a
dense diagonal matrix, against numpy gradients checked by finite differences, in float64."""
import re

import numpy as np
import pytest
import torch
from scipy.special import expit

from conftest import build, dictionary, soft, sparse_batch

from dpc import reference
from dpc.api import compile_source
from dpc.errors import DpcError
from dpc.pipeline import compile_program


def finite_difference(energy, u, h=1e-6):
    """Central differences of a scalar function of a vector."""
    grad = np.zeros_like(u)
    for i in range(u.size):
        e = np.zeros_like(u)
        e[i] = h
        grad[i] = (energy(u + e) - energy(u - e)) / (2 * h)
    return grad


def assert_layers_equal(got, want, tol=1e-9):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert np.abs(g.detach().numpy() - w).max() < tol, f"layer {k}"


# --- field of experts: a smooth non-quadratic energy, by gradient descent ---------------------------

FOE = """
network FoE
dims n, k
input f : R[n]
param K : R[k, n]
hyper lam = 0.3
let L = 1 + 2 * lam * opnorm(K)^2
var u : R[n] = f
minimize 0.5 * sqnorm(u - f) + lam * sum(log1p(square(K @ u)))
derive gd(step = 1/L)
unroll 12
"""


def foe_energy(u, f, K, lam):
    return 0.5 * np.sum((u - f) ** 2) + lam * np.sum(np.log(1 + (K @ u) ** 2))


def foe_gradient(u, f, K, lam):
    """d/du of the Lorentzian expert log(1 + v^2) at v = K u is 2v / (1 + v^2), pulled back by K.T."""
    v = K @ u
    return u - f + lam * K.T @ (2 * v / (1 + v * v))


def test_foe_numpy_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    K, f, u = rng.standard_normal((6, 9)), rng.standard_normal(9), rng.standard_normal(9)
    fd = finite_difference(lambda w: foe_energy(w, f, K, 0.3), u)
    assert np.abs(fd - foe_gradient(u, f, K, 0.3)).max() < 1e-7


def test_foe_gd_equals_numpy_gradient_descent_layer_by_layer():
    source = compile_source(FOE, "foe.dp")
    assert "diag_embed" not in source and "torch.diag(" not in source
    Net = build(FOE, "foe.dp")
    rng = np.random.default_rng(4)
    K, f = rng.standard_normal((12, 8)), rng.standard_normal((5, 8))
    lam = 0.3
    us = Net(K=torch.tensor(K), lam=lam)(torch.tensor(f), trace=True)
    L = 1 + 2 * lam * np.linalg.norm(K, 2) ** 2
    want, u = [], f.copy()
    for _ in range(12):
        u = np.stack([w - foe_gradient(w, g, K, lam) / L for w, g in zip(u, f)])
        want.append(u)
    assert_layers_equal(us, want)
    # gradient descent with step 1/L decreases this energy: the network is the algorithm, not a lookalike
    energies = [np.mean([foe_energy(w, g, K, lam) for w, g in zip(layer, f)]) for layer in want]
    assert all(b <= a + 1e-12 for a, b in zip(energies, energies[1:]))
    # and dpc.reference (numpy, from the IR) agrees: the new atoms' rules
    program = compile_program(FOE, "foe.dp")
    ref = reference.evaluate(program, {"f": f}, {"K": K}, {"lam": lam}, trace=True)
    assert_layers_equal(us, ref)


def test_gradient_prints_as_a_pullback_not_a_diagonal_matrix():
    program = compile_program(FOE, "foe.dp")
    notes = "\n".join(note.text for note in program.notes)
    grad = next(line for line in notes.splitlines() if line.startswith("grad f(u) = "))
    assert re.search(r"lam\*K\.T @ \(\(2\*K @ u\) / \((square\(K @ u\) \+ ones\(k\)|ones\(k\) \+ "
                     r"square\(K @ u\))\)\)", grad), grad
    assert "Diag" not in notes


# --- the issue's second example: an entrywise product of the same affine map ---------------------------

def test_sum_of_entrywise_squares_compiles_and_takes_the_hessian_bound():
    text = """
network Quad
dims n, k
input f : R[n]
param K : R[k, n]
var u : R[n] = f
minimize 0.5 * sqnorm(u - f) + sum((K @ u) * (K @ u))
derive gd
unroll 6
"""
    Net = build(text)
    rng = np.random.default_rng(5)
    K, f = rng.standard_normal((7, 5)), rng.standard_normal((3, 5))
    H = np.eye(5) + 2 * K.T @ K  # the Hessian; no step given: 1/||H||
    step = 1 / np.linalg.norm(H, 2)
    want, u = [], f.copy()
    for _ in range(6):
        u = u - step * (u - f + 2 * u @ K.T @ K)
        want.append(u)
    assert_layers_equal(Net(K=torch.tensor(K))(torch.tensor(f), trace=True), want)


# --- robust sparse coding: Huber data term + l1 by proxgrad ---------------------------------------------

HUBER = """
network RobustISTA
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.05
hyper delta = 0.2
var z : R[n] = 0
minimize sum(huber(x - D @ z, delta)) + lam * norm1(z)
derive proxgrad
unroll 15
"""


def huber_gradient_in_residual(r, delta):
    """d/dr of sum(huber(r)): r inside [-delta, delta], delta * sign(r) outside."""
    return np.where(np.abs(r) <= delta, r, delta * np.sign(r))


def test_huber_numpy_derivative_matches_finite_differences():
    rng = np.random.default_rng(6)
    r, delta = rng.standard_normal(20), 0.4
    huber = lambda v: np.sum(np.where(np.abs(v) <= delta, v * v / 2, delta * (np.abs(v) - delta / 2)))  # noqa: E731
    assert np.abs(finite_difference(huber, r) - huber_gradient_in_residual(r, delta)).max() < 1e-7


def test_huber_l1_proxgrad_equals_numpy_ista_step_by_step():
    Net = build(HUBER, "huber.dp")
    D = dictionary(20, 40)
    x, _ = sparse_batch(D, 6)
    x = x + np.random.default_rng(7).standard_normal(x.shape) * (np.random.default_rng(8).random(x.shape) < 0.1)
    lam, delta = 0.05, 0.2
    zs = Net(D=torch.tensor(D), lam=lam, delta=delta)(torch.tensor(x), trace=True)
    L = np.linalg.norm(D, 2) ** 2  # huber'' <= 1: no step given, dpc takes 1/||D||^2
    want, z = [], np.zeros((6, 40))
    for _ in range(15):
        grad = -huber_gradient_in_residual(x - z @ D.T, delta) @ D
        z = soft(z - grad / L, lam / L)
        want.append(z)
    assert_layers_equal(zs, want)
    assert np.abs(want[-1]).sum() > 0  # the data reach past the threshold: a test that can fail
    r = x - want[-1] @ D.T
    energy = np.sum(np.where(np.abs(r) <= delta, r * r / 2, delta * (np.abs(r) - delta / 2)), axis=1) \
        + lam * np.abs(want[-1]).sum(1)
    got = Net(D=torch.tensor(D), lam=lam, delta=delta).objective(torch.tensor(x), zs[-1]).numpy()
    assert np.abs(got - energy).max() < 1e-9


# --- l1-regularised logistic regression (one regression problem per sample: labels are the input) ---------

LOGISTIC_01 = """
network SparseLogistic
dims m, n
input y : R[m]
param A : R[m, n]
hyper lam = 0.02
var w : R[n] = 0
minimize sum(softplus(A @ w)) - y @ (A @ w) + lam * norm1(w)
derive fista
unroll 20
"""

LOGISTIC_PM = """
network SparseLogisticPM
dims m, n
input y : R[m]
param A : R[m, n]
hyper lam = 0.02
hyper s = 1.5
var w : R[n] = 0
minimize sum(softplus(-y * (A @ w))) + lam * norm1(w)
derive proxgrad(step = s)
unroll 20
"""


def logistic_data(seed=9, m=40, n=10, batch=4):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)) / np.sqrt(n)
    w_true = rng.standard_normal((batch, n)) * (rng.random((batch, n)) < 0.4)
    y01 = (rng.random((batch, m)) < expit(w_true @ A.T * 3)).astype(float)
    return A, y01


def test_logistic_numpy_gradient_matches_finite_differences():
    A, y01 = logistic_data()
    w = np.random.default_rng(10).standard_normal(A.shape[1])
    loss = lambda v: np.sum(np.logaddexp(0, A @ v) - y01[0] * (A @ v))  # noqa: E731
    assert np.abs(finite_difference(loss, w) - A.T @ (expit(A @ w) - y01[0])).max() < 1e-6


def test_logistic_l1_fista_equals_numpy_fista():
    Net = build(LOGISTIC_01, "logistic.dp")
    A, y = logistic_data()
    lam = 0.02
    ws = Net(A=torch.tensor(A), lam=lam)(torch.tensor(y), trace=True)
    L = np.linalg.norm(A, 2) ** 2 / 4  # softplus'' <= 1/4: no step given, dpc takes 4/||A||^2
    w_prev, v, t = np.zeros((4, 10)), np.zeros((4, 10)), 1.0
    want = []
    for _ in range(20):
        w = soft(v - (expit(v @ A.T) - y) @ A / L, lam / L)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        v = w + (t - 1) / t_next * (w - w_prev)
        w_prev, t = w, t_next
        want.append(w)
    assert_layers_equal(ws, want)
    assert np.count_nonzero(want[-1]) > 0
    margin = want[-1] @ A.T
    loss = np.sum(np.logaddexp(0, margin) - y * margin, axis=1) + lam * np.abs(want[-1]).sum(1)
    got = Net(A=torch.tensor(A), lam=lam).objective(torch.tensor(y), ws[-1]).numpy()
    assert np.abs(got - loss).max() < 1e-9


def test_logistic_pm_labels_proxgrad_equals_numpy_ista():
    Net = build(LOGISTIC_PM, "logistic_pm.dp")
    A, y01 = logistic_data(seed=11)
    y = 2 * y01 - 1
    lam, s = 0.02, 1.5
    ws = Net(A=torch.tensor(A), lam=lam, s=s)(torch.tensor(y), trace=True)
    want, w = [], np.zeros((4, 10))
    for _ in range(20):
        margin = y * (w @ A.T)
        grad = -(y * expit(-margin)) @ A  # d/dw sum log(1 + exp(-y a.w)) = -sum y sigmoid(-y a.w) a
        w = soft(w - s * grad, s * lam)
        want.append(w)
    assert_layers_equal(ws, want)


# --- every smooth atom's derivative rule against finite differences of an independent numpy function -----

ATOMS = {  # name: (numpy function, offset keeping the argument in its domain)
    "square": (lambda v: v * v, 0.0),
    "softplus": (lambda v: np.log1p(np.exp(v)), 0.0),
    "log1p": (np.log1p, 2.0),
    "logcosh": (lambda v: np.log(np.cosh(v)), 0.0),
    "exp": (np.exp, 0.0),
    "log": (np.log, 3.0),
    "sigmoid": (lambda v: 1 / (1 + np.exp(-v)), 0.0),
    "tanh": (np.tanh, 0.0),
    "huber": (lambda v: np.where(np.abs(v) <= 0.3, v * v / 2, 0.3 * (np.abs(v) - 0.15)), 0.0),
}


@pytest.mark.parametrize("atom", sorted(ATOMS))
def test_atom_derivative_matches_finite_differences(atom):
    phi, offset = ATOMS[atom]
    call = "huber(A @ z + b, 0.3)" if atom == "huber" else f"{atom}(A @ z + b)"
    Net = build(f"""
network G
dims m, n
input z0 : R[n]
param A : R[m, n]
param b : R[m]
var z : R[n] = z0
minimize sum({call})
derive gd(step = 0.5)
unroll 1
""")
    rng = np.random.default_rng(12)
    A = rng.standard_normal((6, 4)) * 0.3
    b = rng.standard_normal(6) * 0.3 + offset
    z0 = rng.standard_normal((2, 4))
    z1 = Net(A=torch.tensor(A), b=torch.tensor(b))(torch.tensor(z0)).numpy()
    for sample in range(2):  # one step of size 0.5 (below 2/L, which gd requires): z0 - z1 is half the gradient
        fd = finite_difference(lambda z: np.sum(phi(A @ z + b)), z0[sample])
        assert np.abs(2 * (z0[sample] - z1[sample]) - fd).max() < 1e-7, atom


def test_smooth_atoms_are_stable_far_out():
    Net = build("""
network Far
dims n
input x : R[n]
var z : R[n] = 0
minimize 0.5 * sqnorm(z - softplus(x)) + 0.5 * sqnorm(z - logcosh(x))
derive gd(step = 0.5)
unroll 1
""")
    x = np.array([[800.0, -800.0, 30.0, 1e-3]])
    z = Net(n=4)(torch.tensor(x)).numpy()[0]
    want = 0.5 * (np.logaddexp(0, x[0]) + (np.logaddexp(x[0], -x[0]) - np.log(2)))
    assert np.isfinite(z).all() and np.abs(z - want).max() < 1e-9


# --- what has no gradient rule or no Lipschitz bound is an error at the term -----------------------------

HEAD = """network E
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
var z : R[n] = 0
"""


def error_of(text):
    with pytest.raises(DpcError) as info:
        compile_source(text, "e.dp")
    return info.value.format()


@pytest.mark.parametrize("objective, message, column", [
    ("minimize sum(exp(D @ z)) + lam * norm1(z)", r"needs step = \.\.\. here: dpc knows no Lipschitz constant", 10),
    ("minimize 0.5 * sqnorm(x - D @ z) + sum(relu(z))", r"cannot differentiate relu\(z\)", 36),
    ("minimize 0.5 * sqnorm(x - D @ z) + abs(sum(z))", r"cannot differentiate (?i:abs)\(sum\(z\)\)", 36),
])
def test_error_at_the_term(objective, message, column):
    text = HEAD + objective + "\nderive proxgrad\nunroll 2\n"
    out = error_of(text)
    assert re.match(rf"e\.dp:7:{column}: error: .*{message}", out), out
    assert "nested too deeply" not in out


def test_scalar_argument_to_an_entrywise_atom_is_an_error():
    out = error_of(HEAD + "minimize 0.5 * sqnorm(x - D @ z) + softplus(lam)\nderive gd(step = 0.1)\nunroll 2\n")
    assert re.match(r"e\.dp:7:36: error: softplus\(v\) needs a vector or matrix", out), out
