"""Each derive pass against an independent numpy/scipy reference, in float64."""
import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear

from conftest import build, dictionary, soft, sparse_batch

LASSO = """
network {name}
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
{extra}
derive {method}(step = 1/L)
unroll {T}
"""


def fista_reference(D, x, lam, T):
    """Beck & Teboulle (2009), FISTA with constant step 1/L, y1 = x0 = 0, t1 = 1."""
    L = np.linalg.norm(D, 2) ** 2
    z_prev = np.zeros((x.shape[0], D.shape[1]))
    y, t = z_prev.copy(), 1.0
    out = []
    for _ in range(T):
        z = soft(y - (y @ D.T - x) @ D / L, lam / L)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = z + (t - 1) / t_next * (z - z_prev)
        z_prev, t = z, t_next
        out.append(z)
    return out


def test_fista_equals_beck_teboulle():
    Net = build(LASSO.format(name="FISTA", extra="", method="fista", T=25))
    D = dictionary(20, 50)
    x, _ = sparse_batch(D, 7)
    zs = Net(D=torch.tensor(D), lam=0.05)(torch.tensor(x), trace=True)
    ref = fista_reference(D, x, 0.05, 25)
    for k, (got, want) in enumerate(zip(zs, ref)):
        assert np.abs(got.numpy() - want).max() < 1e-9, f"iteration {k}"


def test_nonneg_lasso_equals_projected_ista_step_by_step():
    Net = build(LASSO.format(name="NonnegLasso", extra="subject to z >= 0", method="proxgrad", T=30))
    D = dictionary(20, 40)
    x, _ = sparse_batch(D, 5)
    lam, L = 0.05, np.linalg.norm(D, 2) ** 2
    zs = Net(D=torch.tensor(D), lam=lam)(torch.tensor(x), trace=True)
    z = np.zeros((5, 40))
    for k in range(30):
        z = np.maximum(z - (z @ D.T - x) @ D / L - lam / L, 0.0)  # prox of lam|z| + [z >= 0]
        assert np.abs(zs[k].numpy() - z).max() < 1e-9, f"iteration {k}"
    assert (zs[-1] >= 0).all()


def test_box_least_squares_converges_to_lsq_linear():
    Net = build("""
network BoxLS
dims m, n
input b : R[m]
param A : R[m, n]
hyper lo = -0.3
hyper hi = 0.4
var z : R[n] = 0
minimize 0.5 * sqnorm(A @ z - b)
subject to z >= lo, z <= hi
derive fista
unroll 3000
""")
    rng = np.random.default_rng(3)
    A = rng.standard_normal((30, 12))
    b = rng.standard_normal((4, 30)) * 2
    got = Net(A=torch.tensor(A))(torch.tensor(b)).numpy()
    for i in range(4):
        want = lsq_linear(A, b[i], bounds=(-0.3, 0.4), tol=1e-14, lsmr_tol="auto", max_iter=10000).x
        assert np.abs(got[i] - want).max() < 1e-6
    assert got.min() >= -0.3 - 1e-15 and got.max() <= 0.4 + 1e-15


def test_gradient_descent_on_ridge_regression():
    Net = build("""
network Ridge
dims m, n
input b : R[m]
param A : R[m, n]
hyper mu = 0.5
var z : R[n]
minimize 0.5 * sqnorm(A @ z - b) + 0.5 * mu * sqnorm(z)
derive gd
unroll 400
""")
    rng = np.random.default_rng(4)
    A, b = rng.standard_normal((15, 8)), rng.standard_normal((3, 15))
    got = Net(A=torch.tensor(A))(torch.tensor(b)).numpy()
    want = np.linalg.solve(A.T @ A + 0.5 * np.eye(8), A.T @ b.T).T
    assert np.abs(got - want).max() < 1e-9


def test_elastic_net_prox_scales_the_soft_threshold():
    """lam*norm1 + c*sqnorm(z) on the var: prox = soft(v, s*lam) / (1 + 2*s*c)."""
    Net = build(LASSO.format(name="ElasticNet", extra="", method="proxgrad", T=10)
                .replace("lam * norm1(z)", "lam * norm1(z) + 0.25 * sqnorm(z)"))
    D = dictionary(10, 20)
    x, _ = sparse_batch(D, 3)
    lam, L = 0.1, np.linalg.norm(D, 2) ** 2
    got = Net(D=torch.tensor(D), lam=lam)(torch.tensor(x), trace=True)
    z = np.zeros((3, 20))
    for k in range(10):
        z = soft(z - (z @ D.T - x) @ D / L, lam / L) / (1 + 2 * 0.25 / L)
        assert np.abs(got[k].numpy() - z).max() < 1e-9


def test_hard_threshold_for_norm0():
    Net = build(LASSO.format(name="IHT", extra="", method="proxgrad", T=8).replace("norm1", "norm0"))
    D = dictionary(10, 20)
    x, _ = sparse_batch(D, 3)
    lam, L = 0.02, np.linalg.norm(D, 2) ** 2
    got = Net(D=torch.tensor(D), lam=lam)(torch.tensor(x), trace=True)
    z = np.zeros((3, 20))
    for k in range(8):
        v = z - (z @ D.T - x) @ D / L
        z = v * (np.abs(v) > np.sqrt(2 * lam / L))
        assert np.abs(got[k].numpy() - z).max() < 1e-12


@pytest.mark.parametrize("tying", ["tied", "untied"])
def test_learned_fista_starts_as_fista(tying):
    Net = build(LASSO.format(name="LFISTA", extra="", method="fista", T=10) + f"learn weights {tying}\n")
    D = dictionary(15, 30)
    x, _ = sparse_batch(D, 4)
    net = Net(D=torch.tensor(D), lam=0.1)
    ref = fista_reference(D, x, 0.1, 10)
    for got, want in zip(net(torch.tensor(x), trace=True), ref):
        assert np.abs(got.detach().numpy() - want).max() < 1e-9
    copies = 10 if tying == "untied" else 1
    assert net.W.shape == ((copies, 30, 15) if tying == "untied" else (30, 15))


def test_learn_named_params_recomputes_lets_in_forward():
    Net = build(LASSO.format(name="LearnD", extra="", method="proxgrad", T=5) + "learn D, lam\n")
    D = dictionary(10, 20)
    x, _ = sparse_batch(D, 3)
    net = Net(D=torch.tensor(D), lam=0.1)
    assert {n for n, _ in net.named_parameters()} == {"D", "lam_raw"}  # lam >= 0: lam = softplus(lam_raw)
    out = net(torch.tensor(x))
    assert np.abs(out.detach().numpy() - _ista(D, x, 0.1, 5)).max() < 1e-9
    out.square().sum().backward()
    assert net.D.grad.abs().sum() > 0 and net.lam_raw.grad.abs() > 0


def _ista(D, x, lam, T):
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((x.shape[0], D.shape[1]))
    for _ in range(T):
        z = soft(z - (z @ D.T - x) @ D / L, lam / L)
    return z


def _project_simplex(v):
    """Euclidean projection onto the probability simplex by bisection on the shift (independent of sparsemax)."""
    lo, hi = v.min() - 1, v.max()
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(v - (lo + hi) / 2, 0)


def test_simplex_constrained_least_squares_converges_to_projected_gradient():
    Net = build("""
network SimplexLS
dims m, n
input b : R[m]
param A : R[m, n]
var z : R[n] = 0
minimize 0.5 * sqnorm(A @ z - b)
subject to z in simplex
derive fista
unroll 3000
""")
    rng = np.random.default_rng(5)
    A, b = rng.standard_normal((20, 8)), rng.standard_normal((3, 20))
    got = Net(A=torch.tensor(A))(torch.tensor(b)).numpy()
    L = np.linalg.norm(A, 2) ** 2
    for i in range(3):
        z = np.full(8, 1 / 8)
        for _ in range(4000):
            z = _project_simplex(z - A.T @ (A @ z - b[i]) / L)
        assert np.abs(got[i] - z).max() < 1e-7 and abs(got[i].sum() - 1) < 1e-12 and got[i].min() >= 0


def test_learned_param_does_not_alias_the_callers_tensor():
    Net = build(LASSO.format(name="LearnD", extra="", method="proxgrad", T=2) + "learn D\n")
    D = torch.tensor(dictionary(6, 10))
    before = D.clone()
    net = Net(D=D)
    with torch.no_grad():
        net.D.add_(1.0)
    assert torch.equal(D, before)
