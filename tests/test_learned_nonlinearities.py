"""Issue 20, item 4: learned nonlinearities, `learn influence` (TNRD's RBF influence functions) and `learn shrink`
(Zuo et al.'s learned shrinkage). Float64; every reference is numpy/scipy written here (dense matrices of
scipy.ndimage.correlate with mode 'mirror', numpy least squares, a numpy sum over all centres), never the code
under test."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage
import torch

from conftest import EXAMPLES, build

torch.set_default_dtype(torch.float64)

TNRD_TEXT = (EXAMPLES / "tnrd.dp").read_text()
ANALYTIC_TEXT = TNRD_TEXT.replace("learn  K, lam untied, influence untied", "learn  K, lam untied")
A, B, LAM = 0.008, 50.0, 0.05
LEARN_LINE = TNRD_TEXT.splitlines().index("learn  K, lam untied, influence untied") + 1


def numpy_dct_bank(k, s):
    import scipy.fft
    C = scipy.fft.dct(np.eye(s), norm="ortho", axis=0)
    pairs = sorted(((i, j) for i in range(s) for j in range(s) if (i, j) != (0, 0)), key=lambda p: (p[0] + p[1], p[0]))
    return np.stack([np.outer(C[i], C[j]) for i, j in pairs[:k]])


def mirror_matrix(kernel, h, w):
    """The dense matrix of u -> scipy.ndimage.correlate(u, kernel, mode='mirror') on h x w images."""
    cols = [scipy.ndimage.correlate(np.eye(h * w)[i].reshape(h, w), kernel, mode="mirror").ravel()
            for i in range(h * w)]
    return np.stack(cols, axis=1)


def numpy_rbf(z, w, r):
    """sum_j w_j exp(-(z - mu_j)^2 / (2 gamma^2)) over ALL M centres mu_j on [-r, r], gamma their spacing."""
    M = w.shape[-1]
    mu = np.linspace(-r, r, M)
    gamma = 2 * r / (M - 1)
    return (w * np.exp(-(z[..., None] - mu) ** 2 / (2 * gamma ** 2))).sum(-1)


def numpy_fit(fn, r, M, points):
    """numpy least squares: the weights of M RBFs on [-r, r] fitted to fn on `points` points; the fit's max error."""
    z = np.linspace(-r, r, points)
    mu = np.linspace(-r, r, M)
    Amat = np.exp(-0.5 * ((z[:, None] - mu) / (2 * r / (M - 1))) ** 2)
    w = np.linalg.lstsq(Amat, fn(z), rcond=None)[0]
    return w, np.abs(Amat @ w - fn(z)).max()


def numpy_tnrd(f, K, lams, influence):
    """Gradient descent (step 1) on lam/2 ||u - f||^2 + sum rho(K u): u <- u - lam (u - f) - sum_k A_k^T
    influence(t, k, A_k u), every stage's u; A_k the dense mirror-correlation matrix of filter k."""
    h, w = f.shape
    mats = [mirror_matrix(Kk, h, w) for Kk in K]
    u, out = f.ravel().copy(), []
    for t, lam in enumerate(lams):
        grad = lam * (u - f.ravel())
        for k, Amat in enumerate(mats):
            grad += Amat.T @ influence(t, k, Amat @ u)
        u = u - grad
        out.append(u.reshape(h, w))
    return out, mats


def noisy_images(h, w, count=2, seed=0):
    rng = np.random.default_rng(seed)
    clean = 255 * np.clip(0.5 + 0.3 * np.sin(np.arange(h)[:, None] / 3) * np.cos(np.arange(w)[None, :] / 4), 0, 1)
    return np.stack([clean + 25 * rng.standard_normal((h, w)) for _ in range(count)])


# --- learn influence ------------------------------------------------------------------------------------

def test_the_initial_fit_is_numpys_least_squares_fit_of_rho_prime():
    net = build(TNRD_TEXT, "tnrd.dp")(k=6, s=3)
    w, err = numpy_fit(lambda z: A * z / (1 + (z / B) ** 2), 310.0, 63, 20 * 62 + 1)
    assert abs(net.influence_fit_error["phi"] - err) < 1e-12 and 1e-4 < err < 5e-3
    for t in range(5):
        W = net.phi[t].detach().numpy()
        assert W.shape == (6, 63) and np.abs(W - w).max() < 1e-10, t
    # the fit follows the hypers given to the constructor (it runs there, from their values)
    other = build(TNRD_TEXT, "tnrd.dp")(k=6, s=3, a=0.02, b=20)
    w2, err2 = numpy_fit(lambda z: 0.02 * z / (1 + (z / 20) ** 2), 310.0, 63, 20 * 62 + 1)
    assert np.abs(other.phi[0].detach().numpy()[0] - w2).max() < 1e-10
    assert abs(other.influence_fit_error["phi"] - err2) < 1e-12


@pytest.mark.parametrize("h, w", [(9, 11), (12, 10)])
def test_untrained_learned_influence_tnrd_equals_numpy_gradient_descent_within_the_fit_error(h, w):
    """Against numpy stages with the same RBF weights summed over all 63 centres: the 10-nearest sum of the
    module is right (to 1e-5 relative); against numpy stages with the analytic rho': within the propagated fit
    error, each stage adding at most ||A^T||_inf * fit error (||A^T||_inf = max row sum of |A^T|) to what the
    previous stages' errors grow to through the stage's Jacobian (bounded by its inf-norm)."""
    k, s = 8, 5
    net = build(TNRD_TEXT, "tnrd.dp")(k=k, s=s)
    f = noisy_images(h, w, seed=h)
    got = net(torch.tensor(f), trace=True)
    K = numpy_dct_bank(k, s)
    Wt = [net.phi[t].detach().numpy() for t in range(5)]
    fit = net.influence_fit_error["phi"]
    for i in range(2):
        rbf_stages, mats = numpy_tnrd(f[i], K, [LAM] * 5, lambda t, kk, z: numpy_rbf(z, Wt[t][kk], 310.0))
        exact, _ = numpy_tnrd(f[i], K, [LAM] * 5, lambda t, kk, z: A * z / (1 + (z / B) ** 2))
        adjoint_norm = sum(np.abs(Amat.T).sum(1) for Amat in mats).max()
        lipschitz = 1 - LAM + A * sum(np.abs(Amat.T) @ np.abs(Amat) for Amat in mats).sum(1).max()  # |rho''| <= a
        bound = 0.0
        for t in range(5):
            g = got[t][i].detach().numpy()
            scale = np.abs(rbf_stages[t]).max()
            assert np.abs(g - rbf_stages[t]).max() < 1e-5 * scale, (i, t)
            bound = lipschitz * bound + adjoint_norm * fit
            err = np.abs(g - exact[t]).max()
            assert err <= bound, (i, t, err, bound)
            assert err > 1e-9  # the fit is not rho' itself: the comparison sees the difference
        assert np.abs(exact[-1] - f[i]).max() > 1.0  # the stages move u


def test_the_analytic_tnrd_is_kept_and_the_learned_one_is_near_it():
    analytic = build(ANALYTIC_TEXT, "tnrd.dp")(k=8, s=3)
    learned = build(TNRD_TEXT, "tnrd.dp")(k=8, s=3)
    assert not hasattr(analytic, "influence_fit_error") and not hasattr(analytic, "phi")
    f = torch.tensor(noisy_images(10, 12))
    d = (analytic(f) - learned(f)).abs().max()
    assert 0 < d < 0.05  # 255-scale images: the fit's error, propagated over 5 stages


def test_influence_curves_sample_each_layers_functions():
    net = build(TNRD_TEXT, "tnrd.dp")(k=4, s=3)
    with torch.no_grad():
        net.phi[3][2].mul_(-1)
    z, values = net.influence_curves()
    assert z.shape == (1001,) and values.shape == (5, 4, 1001) and values.dtype == torch.float64
    want = numpy_rbf(z.numpy()[None, :], net.phi[0].detach().numpy()[:, None, :], 310.0)
    assert np.abs(values[0].numpy() - want).max() < 1e-5 * np.abs(want).max()
    assert torch.allclose(values[3, 2], -values[0, 2])
    zs = torch.linspace(-50, 50, 7)
    z2, v2 = net.influence_curves(zs)
    assert torch.equal(z2, zs) and v2.shape == (5, 4, 7)
    assert np.abs(v2[1, 0].numpy() - A * zs.numpy() / (1 + (zs.numpy() / B) ** 2)).max() < 2 * net.influence_fit_error["phi"]


def test_learn_influence_tied_shares_one_weight_and_gradients_reach_it():
    text = TNRD_TEXT.replace("influence untied", "influence(rbfs = 31, range = 200) tied")
    net = build(text, "tnrd.dp")(k=4, s=3)
    assert isinstance(net.phi, torch.nn.Parameter) and net.phi.shape == (4, 31)
    w, err = numpy_fit(lambda z: A * z / (1 + (z / B) ** 2), 200.0, 31, 20 * 30 + 1)
    assert np.abs(net.phi.detach().numpy() - w).max() < 1e-10 and abs(net.influence_fit_error["phi"] - err) < 1e-12
    net(torch.tensor(noisy_images(8, 9))).square().mean().backward()
    assert net.phi.grad is not None and net.phi.grad.abs().max() > 0


# --- the runtime helper: the 10-nearest sum against numpy's full sum, values and gradients ---------------

def _helpers():
    from dpc.api import compile_source
    source = compile_source(TNRD_TEXT, "tnrd.dp")
    namespace = {}
    exec(compile(source, "tnrd_generated", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("channels", [1, 3])
def test_rbf_helper_equals_the_numpy_full_sum_and_gradchecks(channels):
    ns = _helpers()
    rbf = ns["_rbf"]
    gen = torch.Generator().manual_seed(channels)
    M, r = 21, 30.0
    W = torch.randn(channels, M, generator=gen)
    shape = (2, channels, 4, 5) if channels > 1 else (3, 7)
    z = 45 * torch.randn(*shape, generator=gen)  # some beyond [-r, r], some beyond the last centre by 5 spacings
    z.view(-1)[:3] = torch.tensor([0.0, 30.0, -30.0])  # on centres
    got = rbf(z, W, r).numpy()
    zn = z.numpy()
    if channels > 1:
        want = np.stack([numpy_rbf(zn[:, c], W[c].numpy(), r) for c in range(channels)], axis=1)
    else:
        want = numpy_rbf(zn, W[0].numpy(), r)
    from dpc.atoms import rbf_tail_bound
    assert np.abs(got - want).max() <= rbf_tail_bound() * float(W.abs().max())
    assert np.abs(got - want).max() < 1e-5 * np.abs(want).max()
    # gradients: the custom backward against numerical derivatives (gradcheck), and against numpy's full sum
    zg = (12 * torch.randn(*shape, generator=gen)).requires_grad_()
    Wg = W.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: rbf(a, b, r), (zg, Wg), eps=1e-6, atol=1e-6)
    out = rbf(zg, Wg, r)
    g = torch.randn(out.shape, generator=gen)
    dz, dW = torch.autograd.grad(out, (zg, Wg), g)
    mu, gamma = np.linspace(-r, r, M), 2 * r / (M - 1)
    zz = zg.detach().numpy()
    if channels == 1:
        e = np.exp(-(zz[..., None] - mu) ** 2 / (2 * gamma ** 2))
        want_dz = (W[0].numpy() * e * -(zz[..., None] - mu) / gamma ** 2).sum(-1) * g.numpy()
        want_dW = (g.numpy()[..., None] * e).reshape(-1, M).sum(0)[None]
    else:
        e = np.exp(-(zz[..., None] - mu) ** 2 / (2 * gamma ** 2))  # (2, c, 4, 5, M)
        want_dz = (W.numpy()[None, :, None, None, :] * e * -(zz[..., None] - mu) / gamma ** 2).sum(-1) * g.numpy()
        want_dW = (g.numpy()[..., None] * e).sum((0, 2, 3))
    # the derivative's tail: each centre left out (at d >= 5 spacings) adds at most |g| max|W| d exp(-d^2 / 2) / gamma
    slope_tail = 2 * sum(d * np.exp(-d * d / 2) for d in range(5, 40)) / gamma
    assert np.abs(dz.numpy() - want_dz).max() <= slope_tail * float(W.abs().max() * g.abs().max())
    assert np.abs(dz.numpy() - want_dz).max() < 1e-4 * np.abs(want_dz).max()
    assert np.abs(dW.numpy() - want_dW).max() < 1e-5 * np.abs(want_dW).max()


def test_rbf_helper_is_nan_free_and_flat_far_outside():
    rbf = _helpers()["_rbf"]
    W = torch.randn(1, 15)
    z = torch.tensor([-1e30, -1e6, 1e6, 1e30, float("inf"), -float("inf")], requires_grad=True)
    out = rbf(z, W, 10.0)
    assert torch.isfinite(out).all() and out.abs().max() < 1e-5 * W.abs().max()
    out.sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad == 0).all()
    nan = rbf(torch.tensor([float("nan"), 1.0]), W, 10.0)  # a NaN stays a NaN, no index error
    assert torch.isnan(nan[0]) and torch.isfinite(nan[1])


# --- learn shrink ---------------------------------------------------------------------------------------

ISTA = """network Ista
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5*sqnorm(x - D @ z) + lam*norm1(z)
derive proxgrad(step = 1/L)
unroll 6
learn shrink(rbfs = 81, range = 4) untied
output z
"""


def numpy_ista(D, x, lam, steps, shrink):
    L = np.linalg.norm(D, 2) ** 2
    z, out = np.zeros(D.shape[1]), []
    for t in range(steps):
        v = z - D.T @ (D @ z - x) / L
        z = shrink(t, v, lam / L)
        out.append(z)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_untrained_learn_shrink_ista_is_within_the_fit_error_of_ista(seed):
    rng = np.random.default_rng(seed)
    m, n = 12, 20
    D = rng.standard_normal((m, n)) / np.sqrt(m)
    xs = rng.standard_normal((3, m))
    net = build(ISTA, "ista.dp")(D=torch.tensor(D))
    theta = 0.1 / np.linalg.norm(D, 2) ** 2
    w, err = numpy_fit(lambda v: v - np.sign(v) * np.maximum(np.abs(v) - theta, 0), 4.0, 81, 20 * 80 + 1)
    assert abs(net.shrink_fit_error["psi"] - err) < 1e-12 and err < 0.02
    assert np.abs(net.psi[0].detach().numpy()[0] - w).max() < 1e-10
    got = net(torch.tensor(xs), trace=True)
    for i in range(3):
        soft = numpy_ista(D, xs[i], 0.1, 6, lambda t, v, th: np.sign(v) * np.maximum(np.abs(v) - th, 0))
        same = numpy_ista(D, xs[i], 0.1, 6, lambda t, v, th: v - numpy_rbf(v, w, 4.0))
        for t in range(6):
            g = got[t][i].detach().numpy()
            assert np.abs(g - same[t]).max() < 1e-5 * np.abs(same[t]).max(), (i, t)
            # each layer adds at most sqrt(n) * fit error in the 2-norm, the soft-threshold step is nonexpansive
            assert np.linalg.norm(g - soft[t]) <= (t + 1) * np.sqrt(n) * err, (i, t)
        assert np.abs(soft[-1]).max() > 0.1 and np.linalg.norm(same[-1] - soft[-1]) > 1e-9


def test_learn_shrink_curves_and_the_hard_threshold():
    text = ISTA.replace("lam*norm1(z)", "lam^2/2*norm0(z)").replace("learn shrink(rbfs = 81, range = 4) untied",
                                                                    "learn shrink(rbfs = 81, range = 4) tied")
    rng = np.random.default_rng(3)
    D = rng.standard_normal((8, 10)) / np.sqrt(8)
    net = build(text, "iht.dp")(D=torch.tensor(D))
    assert isinstance(net.psi, torch.nn.Parameter)
    L = np.linalg.norm(D, 2) ** 2
    theta = np.sqrt(2 * 0.1 ** 2 / 2 / L)  # prox of (lam^2/2) norm0 with step 1/L: hard at sqrt(2 lam^2/2 / L)
    w, err = numpy_fit(lambda v: v * (np.abs(v) <= theta), 4.0, 81, 20 * 80 + 1)
    assert np.abs(net.psi.detach().numpy()[0] - w).max() < 1e-10, (theta,)
    z, values = net.shrink_curves(torch.linspace(-3, 3, 13))
    assert values.shape == (6, 1, 13)
    want = z.numpy() - numpy_rbf(z.numpy(), w, 4.0)
    assert np.abs(values[2, 0].numpy() - want).max() < 1e-5 * np.abs(want).max()


# --- explain and errors ---------------------------------------------------------------------------------

def _dpc(*args):
    return subprocess.run([sys.executable, "-m", "dpc", *args], capture_output=True, text=True)


def test_explain_shows_the_replacement_the_grid_the_weights_and_the_fit_error():
    done = _dpc("explain", str(EXAMPLES / "tnrd.dp"))
    assert done.returncode == 0, done.stderr
    _, err = numpy_fit(lambda z: A * z / (1 + (z / B) ** 2), 310.0, 63, 20 * 62 + 1)
    text = done.stdout
    assert "learn K, lam untied, influence untied" in text
    assert f"phi: fit error {err:.3g}" in text
    assert "63 Gaussian RBFs, centres equally spaced on [-310, 310], width gamma = 10" in text
    assert "1241 points" in text and "phi k x 63, one copy per layer" in text
    assert "convT(K, rbf(conv(K, u, pad = reflect), phi, 310), pad = reflect)" in text
    assert "7.5e-06 max|W|" in text


@pytest.mark.parametrize("edit, where, message, hint", [
    (("learn  K, lam untied, influence untied", "learn  K, lam untied, shrink untied"), f"{LEARN_LINE}:23",
     "learn shrink found no soft or hard threshold", "write `learn K, lam untied` in place of"),
    (("learn  K, lam untied, influence untied", "learn  K, lam untied, influence(rbfs = 1)"), f"{LEARN_LINE}:40",
     "rbfs must be an integer of at least 2", "e.g. rbfs = 63"),
    (("learn  K, lam untied, influence untied", "learn  K, lam untied, influence(width = 3)"), f"{LEARN_LINE}:33",
     "learn influence has no option 'width'", "write learn influence(rbfs = 63, range = 310)"),
    (("learn  K, lam untied, influence untied", "learn  K(rbfs = 3), lam untied"), f"{LEARN_LINE}:10",
     "learn K takes no options in parentheses", "write learn K"),
    (("a*b^2/2*sum(log1p(square(conv(K, u)/b)))", "a*sqnorm(u)"), f"{LEARN_LINE}:23",
     "learn influence found no operator adjoint", "write `learn K, lam untied` in place of"),
])
def test_mistakes_are_located_errors_with_a_hint(tmp_path, edit, where, message, hint):
    path = tmp_path / "bad.dp"
    path.write_text(TNRD_TEXT.replace(*edit))
    done = _dpc("check", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"bad.dp:{where}:" in done.stderr and message in done.stderr and hint in done.stderr, done.stderr


def test_the_fuzz_judge_compares_a_learned_influence_program_at_the_local_sums_tolerance():
    """The fuzzer mutates examples/tnrd.dp: its module (10 nearest centres) and the reference (all of them) differ
    by ~1e-6 of the output, so the judge compares such programs to RBF_RTOL, not RTOL (where they mismatch)."""
    import dpc.fuzz.check as check
    text = TNRD_TEXT.replace("influence untied", "influence(rbfs = 21, range = 40) tied")
    assert check.classify(text, seed=0).outcome == "ok"
    strict = check.RBF_RTOL
    try:
        check.RBF_RTOL = check.RTOL
        assert check.classify(text, seed=0).outcome == "mismatch"
    finally:
        check.RBF_RTOL = strict


SMOOTH_TV = """network SmoothTV
dims h, w
input f : R[h, w]
hyper eps = 10
var u : R[h, w] = f
minimize 1/2*sqnorm(u - f) + eps^2/2*sum(log1p(square(grad2d(u)/eps)))
derive gd(step = 0.1)
unroll 4
learn influence(rbfs = 41, range = 100) untied
output u
"""
SMOOTH_1D = """network Smooth1
dims n
input f : R[n]
var u : R[n] = f
minimize 1/2*sqnorm(u - f) + sum(logcosh(diff(u)))
derive gd(step = 0.2)
unroll 3
learn influence(rbfs = 41, range = 8) tied
output u
"""


def numpy_grad2d(h, w):
    """The dense forward differences of an h x w image, Neumann (the last difference each way is 0): (2hw, hw)."""
    Dh = np.eye(h, k=1) - np.eye(h)
    Dh[-1] = 0
    Dw = np.eye(w, k=1) - np.eye(w)
    Dw[-1] = 0
    return np.vstack([np.kron(Dh, np.eye(w)), np.kron(np.eye(h), Dw)])


@pytest.mark.parametrize("which", ["grad2d", "diff"])
def test_learn_influence_of_grad2d_and_diff(which):
    """grad2dT(E(grad2d(u))) gets one function per direction (phi : R[2, M]), diffT(E(diff(z))) one: untrained, the
    network equals numpy gradient descent with the same weights summed over all centres, and is within the fit
    error (propagated) of the analytic one."""
    rng = np.random.default_rng(7)
    if which == "grad2d":
        h, w = 6, 7
        net = build(SMOOTH_TV, "tv.dp")()
        Dm = numpy_grad2d(h, w)
        f = 30 * rng.standard_normal((2, h, w))
        step, layers, r, E = 0.1, 4, 100.0, lambda z: z / (1 + (z / 10) ** 2)  # rho', |rho''| <= 1
        W = [net.phi[t].detach().numpy() for t in range(layers)]
        assert W[0].shape == (2, 41)
        rows = lambda t: np.repeat(W[t], h * w, axis=0).reshape(2 * h * w, -1)  # noqa: E731  direction of each row
    else:
        n = 9
        net = build(SMOOTH_1D, "d1.dp")()
        Dm = np.eye(n - 1, n, k=1) - np.eye(n - 1, n)
        f = rng.standard_normal((2, n))
        step, layers, r, E = 0.2, 3, 8.0, np.tanh
        W = [net.phi.detach().numpy()] * layers
        assert W[0].shape == (1, 41)
        rows = lambda t: np.repeat(W[t], Dm.shape[0], axis=0)  # noqa: E731
    fit = net.influence_fit_error["phi"]
    got = net(torch.tensor(f), trace=True)
    norm_inf = np.abs(Dm.T).sum(1).max()
    lipschitz = (1 - step) + step * (np.abs(Dm.T) @ np.abs(Dm)).sum(1).max()  # the exact stage's Jacobian, |E'| <= 1
    for i in range(2):
        u_rbf, u_exact, bound = f[i].ravel(), f[i].ravel(), 0.0
        for t in range(layers):
            z = Dm @ u_rbf
            assert np.abs(z).max() < r  # the fit's error bounds phi - E on [-r, r] only
            mu, gamma = np.linspace(-r, r, W[t].shape[1]), 2 * r / (W[t].shape[1] - 1)
            phi = (rows(t) * np.exp(-(z[:, None] - mu) ** 2 / (2 * gamma ** 2))).sum(1)
            u_rbf = u_rbf - step * (u_rbf - f[i].ravel()) - Dm.T @ phi
            u_exact = u_exact - step * (u_exact - f[i].ravel()) - step * Dm.T @ E(Dm @ u_exact)
            g = got[t][i].detach().numpy().ravel()
            assert np.abs(g - u_rbf).max() < 1e-5 * np.abs(u_rbf).max(), (i, t)
            bound = lipschitz * bound + norm_inf * fit
            assert 1e-12 < np.abs(g - u_exact).max() <= bound, (i, t, np.abs(g - u_exact).max(), bound)


TV_HQS = """network TVShrink
dims h, w
input f : R[h, w]
hyper lam = 10
var u : R[h, w] = f
minimize 0.5*sqnorm(u - f) + lam*norm1(grad2d(u))
derive hqs(beta = 0.1, growth = 2)
unroll 3
learn shrink(rbfs = 41, range = 300) untied
output u
"""


def test_learn_shrink_of_grad2d_under_hqs_fits_each_layers_threshold_per_direction(tmp_path):
    """hqs's threshold lam/beta_t changes with the layer: one fit per layer (numpy least squares of v - soft(v,
    lam/beta_t)), a row per direction of grad2d; explain states each layer's fit error."""
    net = build(TV_HQS, "tvs.dp")()
    errors = []
    for t in range(3):
        theta = 10 / (0.1 * 2 ** t)
        w, err = numpy_fit(lambda v: v - np.sign(v) * np.maximum(np.abs(v) - theta, 0), 300.0, 41, 20 * 40 + 1)
        W = net.psi[t].detach().numpy()
        assert W.shape == (2, 41) and np.abs(W - w).max() < 1e-9 * max(1, np.abs(w).max()), t
        errors.append(err)
    assert abs(net.shrink_fit_error["psi"] - max(errors)) < 1e-9
    path = tmp_path / "tvs.dp"
    path.write_text(TV_HQS)
    done = _dpc("explain", str(path))
    assert done.returncode == 0, done.stderr
    assert all(f"layer {t + 1}: {e:.3g}" in done.stdout for t, e in enumerate(errors)), done.stdout


def test_a_tied_learned_function_of_a_layer_dependent_threshold_is_an_error(tmp_path):
    path = tmp_path / "bad.dp"
    path.write_text(TV_HQS.replace("range = 300) untied", "range = 300) tied"))
    done = _dpc("check", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bad.dp:9:7:" in done.stderr and "changes with the layer" in done.stderr
    assert "write `learn shrink(rbfs = 41, range = 300) untied` in place of" in done.stderr, done.stderr
