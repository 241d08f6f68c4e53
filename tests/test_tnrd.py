"""Issue 20, second slice: filter initialisations (`param K : R[k, s, s] = dct | random`) and examples/tnrd.dp
untrained and with `learn K, lam untied`. Float64; every reference is numpy/scipy written here (scipy.fft's
DCT matrix, scipy.ndimage.correlate with mode 'mirror' as dense matrices), never the code under test."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

from conftest import EXAMPLES, build

torch.set_default_dtype(torch.float64)

# the analytic influence rho' (tnrd.dp without `learn influence`; the learned one: test_learned_nonlinearities.py)
TNRD_TEXT = (EXAMPLES / "tnrd.dp").read_text().replace("learn  K, lam untied, influence untied", "learn  K, lam untied")
BANK = """network Bank
dims k, s, h, w
input f : R[h, w]
param K : R[k, s, s] = {init}
var u : R[h, w] = f
minimize 0.5*sqnorm(u - f) + sum(logcosh(conv(K, u)))
derive gd(step = 0.01)           # below 2/L: L = opnorm(conv(K, .))^2 + 1, up to 4*25 + 1 for 24 dct filters
unroll 1
output u
"""


def numpy_dct_bank(k, s):
    """The first k non-constant elements of the orthonormal 2-D DCT-II basis of s x s patches, ordered by
    frequency i + j, then i: scipy.fft.dct of the identity gives the 1-D basis (its columns)."""
    C = scipy.fft.dct(np.eye(s), norm="ortho", axis=0)  # C @ x = DCT(x): the rows are the basis vectors
    pairs = sorted(((i, j) for i in range(s) for j in range(s) if (i, j) != (0, 0)), key=lambda p: (p[0] + p[1], p[0]))
    return np.stack([np.outer(C[i], C[j]) for i, j in pairs[:k]])


@pytest.mark.parametrize("k, s", [(24, 5), (8, 3), (5, 4), (48, 7)])
def test_dct_init_equals_the_numpy_dct_basis(k, s):
    net = build(BANK.format(init="dct"))(k=k, s=s)
    K = net.K.detach().numpy()
    want = numpy_dct_bank(k, s)
    assert np.abs(K - want).max() < 1e-14
    assert np.abs(K.sum(axis=(1, 2))).max() < 1e-14  # zero mean
    G = K.reshape(k, -1) @ K.reshape(k, -1).T
    assert np.abs(G - np.eye(k)).max() < 1e-14  # orthonormal


def test_dct_init_refuses_too_many_filters_and_missing_sizes():
    cls = build(BANK.format(init="dct"))
    with pytest.raises(ValueError, match="8 zero-mean elements, not 9"):
        cls(k=9, s=3)
    with pytest.raises(ValueError, match="give K, or its sizes k and s"):
        cls(k=9)
    K = 0.1 * torch.randn(3, 5, 5)  # small enough for the step 0.01
    net = cls(K=K)  # a given tensor wins; the sizes come from it
    assert torch.equal(net.K, K) and (net.k, net.s) == (3, 5)
    with pytest.raises(ValueError, match="k is 4 but K.shape"):
        cls(K=K, k=4)


def test_random_init_is_zero_mean_unit_norm_and_follows_torchs_seed():
    cls = build(BANK.format(init="random"))
    torch.manual_seed(3)
    a = cls(k=6, s=5).K
    torch.manual_seed(3)
    b = cls(k=6, s=5).K
    c = cls(k=6, s=5).K
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (6, 5, 5) and a.dtype == torch.float64
    assert a.sum((-2, -1)).abs().max() < 1e-14
    assert (torch.linalg.vector_norm(a, dim=(-2, -1)) - 1).abs().max() < 1e-14
    assert a.std() > 0.1  # not a constant


@pytest.mark.parametrize("line, message, hint", [
    ("param K : R[k, s, s] = dtc", "a param's initial value is a word, one of dct, random", "write `dct` in place of `dtc`"),
    ("param K : R[k, s, s] = 2*x", "a param's initial value is a word", "write `dct` (or `random`) in place of `2*x`"),
    ("param K : R[s, s] = dct", "`= dct` builds a filter bank R[k, s, s], but K is R[s, s]", "drop `= dct`"),
    ("param K : R[9, 3, 3] = dct", "the DCT basis of 3 x 3 filters has 8 zero-mean elements, not 9",
     "write R[8, 3, 3]"),
])
def test_a_wrong_initialisation_is_a_located_error(tmp_path, line, message, hint):
    path = tmp_path / "bad.dp"
    path.write_text(BANK.format(init="dct").replace("param K : R[k, s, s] = dct", line))
    done = subprocess.run([sys.executable, "-m", "dpc", "check", str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"bad.dp:4:" in done.stderr and message in done.stderr and hint in done.stderr, done.stderr


def mirror_matrix(kernel, h, w):
    """The dense matrix of u -> scipy.ndimage.correlate(u, kernel, mode='mirror') on h x w images."""
    cols = [scipy.ndimage.correlate(np.eye(h * w)[i].reshape(h, w), kernel, mode="mirror").ravel()
            for i in range(h * w)]
    return np.stack(cols, axis=1)


def numpy_tnrd(f, Ks, lams, a, b):
    """Gradient descent (step 1) on lam/2 ||u - f||^2 + a b^2/2 sum log(1 + (K u)^2 / b^2) per stage t with
    filters Ks[t] and lams[t]; every stage's u. The conv and its adjoint as dense matrices (A and A.T)."""
    h, w = f.shape
    out, u, cache = [], f.ravel().copy(), {}
    for K, lam in zip(Ks, lams):
        key = K.tobytes()
        if key not in cache:
            cache[key] = [mirror_matrix(Kk, h, w) for Kk in K]
        grad = lam * (u - f.ravel())
        for A in cache[key]:
            z = A @ u
            grad += A.T @ (a * z / (1 + z ** 2 / b ** 2))
        u = u - grad
        out.append(u.reshape(h, w))
    return out


@pytest.mark.parametrize("h, w", [(9, 11), (14, 12)])
def test_untrained_tnrd_equals_numpy_gradient_descent_layer_by_layer(h, w):
    net = build(TNRD_TEXT, "tnrd.dp")(k=24, s=5)
    rng = np.random.default_rng(h)
    clean = 255 * np.clip(0.5 + 0.3 * np.sin(np.arange(h)[:, None] / 3) * np.cos(np.arange(w)[None, :] / 4), 0, 1)
    f = np.stack([clean + 25 * rng.standard_normal((h, w)) for _ in range(2)])
    got = net(torch.tensor(f), trace=True)
    K = numpy_dct_bank(24, 5)
    for i in range(2):
        want = numpy_tnrd(f[i], [K] * 5, [0.05] * 5, 0.008, 50.0)
        for t in range(5):
            err = np.abs(got[t][i].detach().numpy() - want[t]).max()
            assert err < 1e-9 * 255, (i, t, err)
        assert np.abs(want[-1] - f[i]).max() > 1.0  # the stages move u: the comparison can fail


def test_learn_K_lam_untied_gives_each_stage_its_own_parameters_with_gradients():
    net = build(TNRD_TEXT, "tnrd.dp")(k=8, s=3)
    assert len(net.K) == 5 and len(net.lam) == 5
    with torch.no_grad():  # stage 2 and 4 differ from the rest: each stage reads its own copy
        net.K[2].mul_(1.5)
        net.lam[4].fill_(0.2)
    h, w = 8, 10
    rng = np.random.default_rng(1)
    f = 255 * rng.random((1, h, w))
    out = net(torch.tensor(f))
    K = numpy_dct_bank(8, 3)
    Ks = [K, K, 1.5 * K, K, K]
    want = numpy_tnrd(f[0], Ks, [0.05, 0.05, 0.05, 0.05, 0.2], 0.008, 50.0)[-1]
    assert np.abs(out[0].detach().numpy() - want).max() < 1e-9 * 255
    out.square().mean().backward()
    for t in range(5):
        assert net.K[t].grad is not None and net.K[t].grad.abs().max() > 0, t
        # stage 1 starts at u = f, where lam's term lam (u - f) and its derivative are 0
        assert net.lam[t].grad is not None and (net.lam[t].grad != 0) == (t > 0), t
    # each stage's gradient is its own: a stage's K gradient against central differences of the loss
    eps, t, idx = 1e-6, 3, (1, 0, 2)
    def loss():
        with torch.no_grad():
            return float(net(torch.tensor(f)).square().mean())
    with torch.no_grad():
        net.K[t][idx] += eps
    up = loss()
    with torch.no_grad():
        net.K[t][idx] -= 2 * eps
    down = loss()
    fd = (up - down) / (2 * eps)
    assert abs(fd - float(net.K[t].grad[idx])) < 1e-6 * max(1.0, abs(fd))


def test_integer_sizes_need_no_keywords_and_one_random_kernel():
    net = build(BANK.format(init="dct").replace("R[k, s, s]", "R[8, 3, 3]"))()
    assert np.abs(net.K.detach().numpy() - numpy_dct_bank(8, 3)).max() < 1e-14
    torch.manual_seed(0)
    one = build(BANK.format(init="random").replace("R[k, s, s]", "R[s, s]"))(s=4)
    assert one.K.shape == (4, 4) and abs(float(one.K.sum())) < 1e-14 and abs(float(one.K.norm()) - 1) < 1e-14
    assert one(torch.rand(2, 6, 7)).shape == (2, 6, 7)


def test_each_stage_computes_conv_K_u_once():
    """rho'(conv(K, u)) reads the filter responses in its numerator and its denominator: the plan names them
    once a stage (plan.shared), so forward's loop calls _conv once and _conv_t once."""
    from dpc.api import compile_source
    source = compile_source(TNRD_TEXT, "tnrd.dp")
    forward = source[source.index("    def forward("):source.index("    def objective(")]
    loop = forward[forward.index("for k1 in range(steps):"):]
    assert loop.count("_conv(") == 1 and loop.count("_conv_t(") == 1
    assert "conv_Ku = _conv(K[k1], u, 'reflect')" in loop
