"""Issue 20, item 2: `opnorm` of each image operator against a dense computation on small images (float64).

conv's declared norm is read from the symbol (atoms._conv_norm, the helper _conv_symbol): S bounds
sup_w sum_k |K_k^(w)|^2 within 1 %; zero and circular padding have norm <= sqrt(S) at every size, reflect
<= 2 sqrt(S). Every reference here is numpy written in this file: dense matrices built column by column from the
numpy correlation below (np.pad + sums of shifted slices, not the code under test) and their SVDs, the
symbol by np.fft on a much finer grid than the helper's."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from conftest import build
from dpc import atoms
from dpc.backends.torch.runtime import namespace

torch.set_default_dtype(torch.float64)
H = namespace("_conv_symbol", "_dct_filters", "_conv")
NP_PAD = {"zero": "constant", "reflect": "reflect", "circular": "wrap"}  # numpy's names; torch's reflect = np's


def _correlate(K, u, pad):
    """numpy: images u (..., h, w) padded by (s-1)//2 before and s//2 after each axis, correlated with each
    filter of K (k, s, s): (..., k, h, w)."""
    s = K.shape[-1]
    lo, hi = (s - 1) // 2, s // 2
    h, w = u.shape[-2:]
    x = np.pad(u, ((0, 0),) * (u.ndim - 2) + ((lo, hi), (lo, hi)), mode=NP_PAD[pad])
    out = np.zeros(u.shape[:-2] + (K.shape[0], h, w))
    for a in range(s):
        for b in range(s):
            out += K[:, a, b][:, None, None] * x[..., None, a:a + h, b:b + w]
    return out


def _dense_conv(K, pad, h, w):
    K = K.reshape(-1, K.shape[-2], K.shape[-1])
    return _correlate(K, np.eye(h * w).reshape(h * w, h, w), pad).reshape(h * w, -1).T


def _symbol_sup(K, n=512):
    """sup_w sum_k |K_k^(w)|^2 on a 512 x 512 grid: below the true sup by a factor at most 1 - 2(pi(s-1)/512)^2,
    above 0.998 for these filters (s <= 5)."""
    K = K.reshape(-1, K.shape[-2], K.shape[-1])
    return (np.abs(np.fft.fft2(K, s=(n, n))) ** 2).sum(axis=0).max()


def _filters(kind, rng):
    if kind == "dct":
        return H["_dct_filters"](8, 3, 3).numpy()
    if kind == "dct5":
        return H["_dct_filters"](24, 5, 5).numpy()
    if kind == "bank":
        return rng.standard_normal((4, 4, 4))
    if kind == "single3":
        return rng.standard_normal((3, 3))
    if kind == "single5":
        return rng.standard_normal((5, 5))
    if kind == "shift":
        return np.eye(1, 9).reshape(3, 3)  # K[0, 0] = 1: out(i, j) = u(i - 1, j - 1)
    raise AssertionError(kind)


KINDS = ["dct", "dct5", "bank", "single3", "single5", "shift"]
SIZES = [(6, 5), (9, 7), (13, 11)]


def _declared(K, pad):
    """The compiler's opnorm of conv(K, u, pad): its sympy bound, with the generated helper's value of
    convsymbol(K) (the value the constructor or forward computes)."""
    s = K.shape[-1]
    Ksym = sp.MatrixSymbol("K", K.reshape(-1, s).shape[0], s)
    bound = atoms._conv_norm(atoms.Conv(Ksym, sp.MatrixSymbol("u", 5, 5), sp.Integer(atoms.PADS.index(pad))))
    S = float(H["_conv_symbol"](torch.tensor(K)))
    return float(bound.subs(atoms.ConvSymbol(Ksym), S)), S


@pytest.mark.parametrize("kind", KINDS)
def test_conv_symbol_bounds_the_sup_within_one_percent(kind):
    K = _filters(kind, np.random.default_rng(KINDS.index(kind)))
    S = float(H["_conv_symbol"](torch.tensor(K)))
    fine = _symbol_sup(K)
    assert fine <= S <= 1.01 * fine
    # the reference evaluator's rule (the fuzzer's oracle) gives the same number
    assert abs(atoms.ConvSymbol.reference(np, K.reshape(-1, K.shape[-1])) - S) < 1e-10 * S


@pytest.mark.parametrize("pad", ["zero", "reflect", "circular"])
def test_the_dense_matrices_are_the_generated_operator(pad):
    K = np.random.default_rng(5).standard_normal((3, 4, 4))
    u = np.random.default_rng(6).standard_normal((6, 5))
    got = H["_conv"](torch.tensor(K), torch.tensor(u)[None], {"zero": "constant"}.get(pad, pad))[0].numpy()
    np.testing.assert_allclose(_dense_conv(K, pad, 6, 5) @ u.reshape(-1), got.reshape(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pad", ["zero", "reflect", "circular"])
@pytest.mark.parametrize("kind", KINDS)
def test_conv_opnorm_is_at_least_the_dense_norm_at_every_size(pad, kind):
    K = _filters(kind, np.random.default_rng(10 + KINDS.index(kind)))
    norm, S = _declared(K, pad)
    s = K.shape[-1]
    small = [(h, w) for h, w in [(3, 3), (4, 3), (2, 5)] if h > s // 2 and w > s // 2]  # images at most s wide too
    for h, w in SIZES + small:
        sigma = np.linalg.norm(_dense_conv(K, pad, h, w), 2)
        assert sigma <= norm * (1 + 1e-12)
        if pad != "reflect":
            assert sigma <= np.sqrt(_symbol_sup(K) / 0.998)  # the sup of the symbol bounds every size
        if pad == "circular" and h >= s and w >= s:  # exact at h x w: the largest sqrt(sum_k |K_k^|^2) on the
            grid = np.zeros((K.reshape(-1, s, s).shape[0], h, w))  # h x w DFT grid
            grid[:, :s, :s] = K.reshape(-1, s, s)
            assert abs(sigma - np.sqrt((np.abs(np.fft.fft2(grid)) ** 2).sum(0).max())) < 1e-10 * sigma


@pytest.mark.parametrize("kind", ["dct", "dct5", "single3"])
def test_conv_opnorm_zero_and_circular_are_tight_as_the_image_grows(kind):
    """The zero-padded norm climbs to sqrt(S) with the size (a compression of the infinite convolution):
    within 3 % at 24 x 24 for these filters, and the bound is within 1 % of sqrt(S)."""
    K = _filters(kind, np.random.default_rng(20))
    norm, _ = _declared(K, "zero")
    sigma = np.linalg.norm(_dense_conv(K, "zero", 24, 24), 2)
    assert norm / 1.005 <= np.sqrt(_symbol_sup(K)) and sigma >= 0.97 * norm


def test_reflect_needs_the_factor_two():
    """A shift filter with reflect padding reads pixel (1, 1) four times: its norm is 2 = 2 sqrt(S) at every size,
    so no bound read from the symbol alone can be below 2 sqrt(S); the DCT bank's is 1.2 sqrt(S)."""
    K = _filters("shift", None)
    for h, w in SIZES:
        assert abs(np.linalg.norm(_dense_conv(K, "reflect", h, w), 2) - 2) < 1e-12
    D = _filters("dct5", None)
    ratio = np.linalg.norm(_dense_conv(D, "reflect", 13, 11), 2) / 5
    assert 1.15 < ratio < 1.25


@pytest.mark.parametrize("n", [3, 5, 9, 16])
def test_diff_opnorm_exact_and_its_sup(n):
    sigma = np.linalg.norm(np.diff(np.eye(n), axis=0), 2)  # the (n-1) x n difference matrix
    assert abs(sigma - 2 * np.cos(np.pi / (2 * n))) < 1e-12
    assert sigma <= atoms.ATOMS["diff"].linear.opnorm(None) == 2


@pytest.mark.parametrize("h,w", [(2, 2), (5, 4), (6, 5), (9, 3)])
def test_grad2d_opnorm_exact_and_its_sup(h, w):
    Dh, Dw = np.diff(np.eye(h), axis=0), np.diff(np.eye(w), axis=0)
    G = np.vstack([np.kron(np.vstack([Dh, np.zeros((1, h))]), np.eye(w)),
                   np.kron(np.eye(h), np.vstack([Dw, np.zeros((1, w))]))])
    sigma = np.linalg.norm(G, 2)
    exact = np.sqrt(4 * np.sin(np.pi * (h - 1) / (2 * h)) ** 2 + 4 * np.sin(np.pi * (w - 1) / (2 * w)) ** 2)
    assert abs(sigma - exact) < 1e-12
    assert sigma <= float(atoms.ATOMS["grad2d"].linear.opnorm(None)) == pytest.approx(np.sqrt(8), abs=1e-15)


PDHG_CONV = """network Filtered
dims   k, s, h, w
input  f : R[h, w]
param  K : R[k, s, s] = dct
hyper  lam = 0.1
var    u : R[h, w] = f
minimize 0.5 * sqnorm(u - f) + lam * norm1(conv(K, u, pad = PAD))
derive pdhg
unroll 3
LEARN
output u
"""


@pytest.mark.parametrize("pad", ["zero", "reflect", "circular"])
@pytest.mark.parametrize("learned", [False, True])
def test_pdhg_steps_read_the_symbol_bound(pad, learned):
    """derive pdhg on a conv: the module's normK (a let at construction, in forward when K is learned) is the
    declared bound of the filters it holds, and tau*sigma*||A||^2 < 1 for the dense A at two sizes."""
    text = PDHG_CONV.replace("PAD", pad).replace("LEARN", "learn K" if learned else "")
    cls = build(text)
    K = torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(3))
    net = cls(K=K)
    norm, _ = _declared(K.numpy(), pad)
    traced = {}
    if learned:
        captured = net.forward.__func__.__globals__["_conv_symbol"]

        def spy(x):
            traced["S"] = float(captured(x.detach()))
            return captured(x)
        net.forward.__func__.__globals__["_conv_symbol"] = spy
        try:
            net(torch.randn(2, 8, 7))
        finally:
            net.forward.__func__.__globals__["_conv_symbol"] = captured
        assert abs(np.sqrt(traced["S"]) * (2 if pad == "reflect" else 1) - norm) < 1e-12 * norm
    else:
        assert abs(float(net.tau) - 0.99 / norm) < 1e-12 / norm
    for h, w in [(8, 7), (12, 10)]:
        sigma = np.linalg.norm(_dense_conv(K.numpy(), pad, h, w), 2)
        assert (0.99 / norm) ** 2 * sigma ** 2 < 1


GD_CONV = """network G
dims   k, h, w
input  f : R[h, w]
param  K : R[k, 3, 3] = dct
hyper  lam = 0.5
var    u : R[h, w] = f
minimize 0.5 * sqnorm(u - f) + lam * sum(softplus(conv(K, u, pad = zero) / 2))
derive gd
unroll 3
output u
"""

FISTA_BLUR = """network B
dims   h, w
input  f : R[h, w]
param  K : R[3, 3]
hyper  lam = 0.05
var    u : R[h, w] = f
minimize 0.5 * sqnorm(conv(K, u, pad = circular) - f) + 0.5*sqnorm(grad2d(u)) + lam * norm1(u)
derive fista
unroll 4
output u
"""


def test_gd_finds_its_step_from_the_operators_norm():
    """derive gd without a step on c*sum(phi(conv(K, u)/2)): L = 1 + |lam| * sup|softplus''| * (1/2)^2 * S (no
    eye(h) of an image size known only at the call); the module's L is within 1 % above numpy's and the layers
    equal numpy gradient descent with the dense operator at that step."""
    net = build(GD_CONV)(k=4)
    K = net.K.numpy()
    L_np = 1 + 0.5 * 0.25 * 0.25 * _symbol_sup(K)
    L = float(net.L)
    assert L_np <= L <= 1.01 * L_np
    f = np.random.default_rng(2).standard_normal((2, 6, 5))
    A = _dense_conv(K, "zero", 6, 5)
    got = net(torch.tensor(f), trace=True)
    for b in range(2):
        u = f[b].reshape(-1)
        for layer in range(3):
            grad = u - f[b].reshape(-1) + 0.5 * 0.5 * A.T @ (1 / (1 + np.exp(-0.5 * A @ u)))
            u = u - grad / L
            np.testing.assert_allclose(got[layer][b].numpy().reshape(-1), u, rtol=0, atol=1e-12)


def test_fista_finds_its_step_from_a_blur_and_grad2d():
    """0.5*sqnorm(conv(K, u) - f) + 0.5*sqnorm(grad2d(u)): L = S + 8 (each c*sqnorm(OP(u) - b) gives 2|c| opnorm^2);
    the module equals numpy FISTA with the dense operators at the module's L (within 1 % above numpy's S + 8)."""
    K = np.random.default_rng(4).standard_normal((3, 3))
    net = build(FISTA_BLUR)(K=torch.tensor(K))
    L = float(net.L) if hasattr(net, "L") else None
    L_np = _symbol_sup(K) + 8
    assert L is not None and L_np <= L <= 1.01 * L_np
    h, w = 6, 5
    f = np.random.default_rng(5).standard_normal((2, h, w))
    A = _dense_conv(K, "circular", h, w)
    Dh = np.vstack([np.diff(np.eye(h), axis=0), np.zeros((1, h))])
    Dw = np.vstack([np.diff(np.eye(w), axis=0), np.zeros((1, w))])
    G = np.vstack([np.kron(Dh, np.eye(w)), np.kron(np.eye(h), Dw)])
    got = net(torch.tensor(f), trace=True)
    for b in range(2):
        x = y = f[b].reshape(-1)
        t = 1.0
        for layer in range(4):
            v = y - (A.T @ (A @ y - f[b].reshape(-1)) + G.T @ G @ y) / L
            x_next = np.sign(v) * np.maximum(np.abs(v) - 0.05 / L, 0)
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            y = x_next + (t - 1) / t_next * (x_next - x)
            x, t = x_next, t_next
            np.testing.assert_allclose(got[layer][b].numpy().reshape(-1), x, rtol=0, atol=1e-10)
