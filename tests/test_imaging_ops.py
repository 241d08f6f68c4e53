"""Issue 20, first slice: the image operators diff, grad2d and conv (matrix-free, each with its exact adjoint),
image-shaped values, dims read from the inputs at every call, and examples/tv2d.dp. Float64 throughout;
every reference below is numpy/scipy written here (dense matrices, scipy.ndimage), never the code under test."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from conftest import EXAMPLES, build
from dpc import atoms
from dpc.declare import HELPERS, ordered_helpers

torch.set_default_dtype(torch.float64)


def _helpers(*names):
    """The generated modules' runtime helpers, executed as a module would define them."""
    namespace = {"torch": torch, "F": F, "nn": torch.nn}
    for h in ordered_helpers(names):
        exec(h.source, namespace)
    return namespace


H = _helpers("_diff", "_diff_t", "_grad2d", "_grad2d_t", "_conv", "_conv_t")
PADS = {"zero": "constant", "reflect": "reflect", "circular": "circular"}
SCIPY = {"zero": "constant", "reflect": "mirror", "circular": "wrap"}  # torch's reflect is scipy's mirror


def _inner(a, b):
    return float((a * b).sum())


def _dense(apply, shape):
    """The matrix of a linear map, column by column (a test-size image only)."""
    n = int(np.prod(shape))
    cols = [apply(torch.eye(n)[i].reshape(shape)).reshape(-1) for i in range(n)]
    return torch.stack(cols, dim=1).numpy()


# --- the adjoint identity <A u, v> = <u, A.T v>, every operator and boundary ---------------------------

def test_adjoint_identity_diff_and_grad2d():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(4, 17, generator=g), torch.randn(4, 16, generator=g)
    assert abs(_inner(H["_diff"](z), y) - _inner(z, H["_diff_t"](y))) < 1e-12 * z.norm() * y.norm()
    u, p = torch.randn(3, 9, 7, generator=g), torch.randn(3, 2, 9, 7, generator=g)
    Du = H["_grad2d"](u)
    assert Du.shape == (3, 2, 9, 7)
    assert abs(_inner(Du, p) - _inner(u, H["_grad2d_t"](p))) < 1e-12 * float(u.norm() * p.norm())


@pytest.mark.parametrize("pad", list(PADS))
@pytest.mark.parametrize("s", [3, 4, 5])
@pytest.mark.parametrize("bank", [True, False])
def test_adjoint_identity_conv(pad, s, bank):
    g = torch.Generator().manual_seed(s)
    K = torch.randn(*((6,) if bank else ()), s, s, generator=g)
    u = torch.randn(2, 11, 8, generator=g)
    Ku = H["_conv"](K, u, PADS[pad])
    assert Ku.shape == ((2, 6, 11, 8) if bank else (2, 11, 8))
    v = torch.randn(Ku.shape, generator=g)
    KTv = H["_conv_t"](K, v, PADS[pad])
    assert KTv.shape == u.shape
    assert abs(_inner(Ku, v) - _inner(u, KTv)) < 1e-12 * float(u.norm() * v.norm() * K.abs().sum())


def test_reference_evaluator_adjoints_agree_with_the_identity():
    """dpc.reference's numpy rules (the fuzzer's oracle) satisfy the identity too."""
    rng = np.random.default_rng(1)
    K = rng.standard_normal((3 * 5, 5))  # R[3, 5, 5] in the algebra's layout
    for pad in range(3):
        u, v = rng.standard_normal((9, 7)), rng.standard_normal((27, 7))
        Ku = atoms.Conv.reference(np, K, u, pad)
        assert abs(_inner(Ku, v) - _inner(u, atoms.ConvT.reference(np, K, v, pad))) < 1e-12 * 100
    u, p = rng.standard_normal((6, 5)), rng.standard_normal((12, 5))
    assert abs(_inner(atoms.Grad2D.reference(np, u), p) - _inner(u, atoms.Grad2DT.reference(np, p))) < 1e-12 * 100


# --- the operators against scipy / numpy ----------------------------------------------------------------

@pytest.mark.parametrize("pad", list(PADS))
def test_conv_is_scipy_correlate_with_the_same_boundary(pad):
    rng = np.random.default_rng(2)
    K, u = rng.standard_normal((4, 5, 5)), rng.standard_normal((2, 12, 9))
    got = H["_conv"](torch.tensor(K), torch.tensor(u), PADS[pad]).numpy()
    want = np.stack([[scipy.ndimage.correlate(img, k, mode=SCIPY[pad], cval=0.0) for k in K] for img in u])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_grad2d_is_numpy_forward_differences_neumann():
    u = np.random.default_rng(3).standard_normal((5, 6))
    got = H["_grad2d"](torch.tensor(u)[None])[0].numpy()
    gh, gw = np.zeros_like(u), np.zeros_like(u)
    gh[:-1] = np.diff(u, axis=0)
    gw[:, :-1] = np.diff(u, axis=1)
    np.testing.assert_allclose(got, np.stack([gh, gw]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(H["_diff"](torch.tensor(u[0])).numpy(), np.diff(u[0]), rtol=0, atol=1e-15)


# --- operator norms: diff and grad2d against a dense SVD (conv: tests/test_operator_norms.py) ------------

def test_opnorm_bounds_against_dense_svd():
    n = 9
    dense = np.diff(np.eye(n), axis=0)  # the (n-1) x n difference matrix
    sigma = np.linalg.norm(dense, 2)
    assert abs(sigma - 2 * np.cos(np.pi / (2 * n))) < 1e-12 and sigma <= 2  # diff's bound: 2
    shape = (6, 5)
    G = _dense(lambda u: H["_grad2d"](u[None])[0], shape)
    sigma = np.linalg.norm(G, 2)
    exact = np.sqrt(4 + 2 * np.cos(np.pi / shape[0]) + 2 * np.cos(np.pi / shape[1]))  # the Neumann symbol
    assert abs(sigma - exact) < 1e-12 and sigma <= np.sqrt(8)
    # conv's norm from its symbol, every boundary, sizes and filters: tests/test_operator_norms.py


# --- examples/tv2d.dp: any image size, against an independent TV solution ---------------------------------

def _tv_dual_solution(f, lam, iters=20000):
    """min_u 0.5||u - f||^2 + lam*||D u||_1 (D: dense forward differences, Neumann) by FISTA on the dual
    min_{|p| <= lam} 0.5||f - D.T p||^2 (u = f - D.T p), step 1/8: an independent solver."""
    h, w = f.shape
    Dh = np.diff(np.eye(h), axis=0)
    Dw = np.diff(np.eye(w), axis=0)
    D = np.vstack([np.kron(Dh, np.eye(w)), np.kron(np.eye(h), Dw)])
    x = f.reshape(-1)
    p = q = np.zeros(D.shape[0])
    t = 1.0
    for _ in range(iters):
        p_next = np.clip(q + D @ (x - D.T @ q) / 8, -lam, lam)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        q = p_next + (t - 1) / t_next * (p_next - p)
        p, t = p_next, t_next
    return (x - D.T @ p).reshape(h, w)


def _numpy_pdhg(f, lam, steps):
    """Chambolle-Pock as tv2d.dp's derivation states it, in numpy: every layer."""
    tau = sigma = 0.99 / np.sqrt(8)

    def grad(u):
        gh, gw = np.zeros_like(u), np.zeros_like(u)
        gh[:-1] = u[1:] - u[:-1]
        gw[:, :-1] = u[:, 1:] - u[:, :-1]
        return np.stack([gh, gw])

    def grad_t(p):
        out = np.zeros(p.shape[1:])
        out[1:] += p[0, :-1]
        out[:-1] -= p[0, :-1]
        out[:, 1:] += p[1, :, :-1]
        out[:, :-1] -= p[1, :, :-1]
        return out
    u, ubar, y, out = f.copy(), f.copy(), np.zeros((2,) + f.shape), []
    for _ in range(steps):
        y = np.clip(y + sigma * grad(ubar), -lam, lam)
        u_next = (u - tau * grad_t(y) + tau * f) / (1 + tau)
        ubar, u = 2 * u_next - u, u_next
        out.append(u)
    return out


def test_tv2d_runs_on_two_image_sizes_layer_by_layer_equal_to_numpy():
    TV2D = build((EXAMPLES / "tv2d.dp").read_text(), "tv2d.dp")
    net = TV2D(lam=0.3, steps=20)
    rng = np.random.default_rng(5)
    for shape in [(12, 10), (7, 15)]:
        f = rng.standard_normal((2,) + shape)
        trace = net(torch.tensor(f), trace=True)
        assert trace[-1].shape == (2,) + shape
        for b in range(2):
            want = _numpy_pdhg(f[b], 0.3, 20)
            for k in range(20):
                np.testing.assert_allclose(trace[k][b].numpy(), want[k], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="must have shape"):
        net(torch.zeros(2, 5))


def test_tv2d_many_layers_reach_the_tv_solution():
    TV2D = build((EXAMPLES / "tv2d.dp").read_text(), "tv2d.dp")
    f = np.random.default_rng(6).standard_normal((8, 7))
    want = _tv_dual_solution(f, 0.25)
    got = TV2D(lam=0.25, steps=4000)(torch.tensor(f)[None])[0].numpy()
    assert np.abs(got - want).max() < 1e-5


def test_a_given_size_is_checked():
    TV2D = build((EXAMPLES / "tv2d.dp").read_text(), "tv2d.dp")
    net = TV2D(h=6, w=5, steps=3)
    net(torch.zeros(1, 6, 5))
    with pytest.raises(ValueError, match="h = 6"):
        net(torch.zeros(1, 7, 5))


# --- the gradient of sum(phi(conv(K, u))) is the adjoint conv of phi'(conv(K, u)) --------------------------

GD_CONV = """network FieldOfExperts
dims   k, s, h, w
input  f : R[h, w]
param  K : R[k, s, s]
var    u : R[h, w] = f
minimize 0.5 * sqnorm(u - f) + sum(logcosh(conv(K, u, pad = {pad})))
derive gd(step = 0.01)
unroll 3
output u
"""


@pytest.mark.parametrize("pad", list(PADS))
def test_gradient_of_a_conv_energy_against_finite_differences(pad):
    rng = np.random.default_rng(7)
    K, f = 0.3 * rng.standard_normal((3, 3, 3)), rng.standard_normal((1, 6, 5))  # 0.3: step 0.01 < 2/L, reflect too
    net = build(GD_CONV.format(pad=pad))(K=torch.tensor(K))
    trace = net(torch.tensor(f), trace=True)

    def energy(u):
        z = np.stack([scipy.ndimage.correlate(u, k, mode=SCIPY[pad], cval=0.0) for k in K])
        return 0.5 * ((u - f[0]) ** 2).sum() + np.log(np.cosh(z)).sum()

    u = f[0].copy()
    for k in range(3):
        grad = np.zeros_like(u)
        for i in np.ndindex(u.shape):  # central differences, one pixel at a time
            e = np.zeros_like(u)
            e[i] = 1e-5
            grad[i] = (energy(u + e) - energy(u - e)) / 2e-5
        u = u - 0.01 * grad
        np.testing.assert_allclose(trace[k][0].numpy(), u, rtol=0, atol=1e-8)
    # and the module's objective is the same energy
    assert abs(float(net.objective(torch.tensor(f), trace[-1])[0]) - energy(trace[-1][0].numpy())) < 1e-10


def test_tv1d_with_diff_equals_numpy_pdhg_with_a_dense_difference_matrix_on_two_lengths():
    TV1D = build((EXAMPLES / "tv1d.dp").read_text(), "tv1d.dp")
    net = TV1D(lam=0.4, steps=30)
    rng = np.random.default_rng(8)
    for n in (12, 19):
        x = rng.standard_normal((3, n))
        D = np.diff(np.eye(n), axis=0)
        tau = sigma = 0.99 / 2
        z, zbar, y = np.zeros((3, n)), np.zeros((3, n)), np.zeros((3, n - 1))
        trace = net(torch.tensor(x), trace=True)
        for k in range(30):
            y = np.clip(y + sigma * zbar @ D.T, -0.4, 0.4)
            z_next = (z - tau * y @ D + tau * x) / (1 + tau)
            zbar, z = 2 * z_next - z, z_next
            np.testing.assert_allclose(trace[k].numpy(), z, rtol=0, atol=1e-12)


@pytest.mark.parametrize("pad", ["reflect", "circular"])
def test_an_image_smaller_than_half_the_filter_is_a_clear_error(pad):
    """Reflect and circular borders are taken from inside the image: an image of width 1 under 4 x 4 filters
    (found by the fuzzer as torch's 'Padding size should be less than ...') is a ValueError naming the sizes;
    zero padding has no such limit."""
    K = torch.randn(2, 4, 4)
    with pytest.raises(ValueError, match=r"images of 5 x 1 are too small for 4 x 4 filters .* w above 2"):
        H["_conv"](K, torch.randn(3, 5, 1), PADS[pad])
    assert H["_conv"](K, torch.randn(3, 5, 1), "constant").shape == (3, 2, 5, 1)
    assert H["_conv"](K, torch.randn(3, 3, 3), PADS[pad]).shape == (3, 2, 3, 3)


@pytest.mark.parametrize("pad", ["reflect", "circular"])
def test_the_adjoint_refuses_an_image_too_small_for_its_border_as_conv_does(pad):
    """Fuzz finding (session 7, operator program 58 of seed 20261206): a folded first layer called only
    `_conv_t`, which had no size check: under reflect padding a 6 x 6 filter on 3 x 5 images folded its border
    with negative pads and returned silently wrong values (0.0055 off at scale 0.021). It now raises the same
    error as `_conv`; images large enough still satisfy <conv(K, u), v> = <u, conv_t(K, v)>."""
    K = torch.randn(2, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"images of 3 x 5 are too small for 6 x 6 filters .* h must be above 3"):
        H["_conv_t"](K, torch.randn(4, 2, 3, 5, dtype=torch.float64), PADS[pad])
    u = torch.randn(4, 4, 5, dtype=torch.float64)
    v = torch.randn(4, 2, 4, 5, dtype=torch.float64)
    left = (H["_conv"](K, u, PADS[pad]) * v).sum()
    right = (u * H["_conv_t"](K, v, PADS[pad])).sum()
    assert abs(float(left - right)) <= 1e-10 * float(left.abs() + 1)
