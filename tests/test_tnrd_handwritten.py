"""benchmarks/tnrd_handwritten.py, the speed and accuracy reference for the compiled TNRD of issue 20: its
convolution and adjoint, its influence functions and whole stages against numpy/scipy written here (float64)."""
import numpy as np
import pytest
import torch

from conftest import load_benchmark

ndimage = pytest.importorskip("scipy.ndimage")


@pytest.fixture(scope="module")
def T():
    return load_benchmark("tnrd_handwritten")


def dense_correlation(K, h, w):
    """The matrix of u -> scipy.ndimage.correlate(u, K, mode='mirror') on h x w images (row-major)."""
    cols = []
    for i in range(h * w):
        e = np.zeros(h * w)
        e[i] = 1.0
        cols.append(ndimage.correlate(e.reshape(h, w), K, mode="mirror").ravel())
    return np.stack(cols, axis=1)


def numpy_rbf(z, w, centres, gamma):
    return np.exp(-(z[..., None] - centres) ** 2 / (2 * gamma ** 2)) @ w


@pytest.mark.parametrize("size", [3, 5, 7])
def test_conv_and_its_adjoint_match_scipy(T, size):
    rng = np.random.default_rng(size)
    h, w = 9, 8
    K = rng.standard_normal((2, size, size))
    u = rng.standard_normal((h, w))
    v = rng.standard_normal((2, h, w))
    Kt = torch.tensor(K[:, None])
    got = T.conv(torch.tensor(u)[None, None], Kt)[0].numpy()
    for k in range(2):
        np.testing.assert_allclose(got[k], ndimage.correlate(u, K[k], mode="mirror"), atol=1e-12)
    adjoint = T.conv_adjoint(torch.tensor(v)[None], Kt)[0, 0].numpy()
    expected = sum(dense_correlation(K[k], h, w).T @ v[k].ravel() for k in range(2)).reshape(h, w)
    np.testing.assert_allclose(adjoint, expected, atol=1e-12)
    assert T.check_adjoint(size) < 1e-14


def test_dct_filters_are_orthonormal_zero_mean_and_low_frequency_first(T):
    B = T.dct_filters(5).numpy().reshape(24, 25)
    np.testing.assert_allclose(B @ B.T, np.eye(24), atol=1e-12)
    np.testing.assert_allclose(B.sum(1), 0.0, atol=1e-12)
    first = B[0].reshape(5, 5)  # frequency (0, 1): constant down the columns, a cosine along the rows
    np.testing.assert_allclose(first, np.tile(first[0], (5, 1)), atol=1e-12)
    assert T.dct_filters(7, 10).shape == (10, 1, 7, 7)


def test_local_rbf_sum_equals_the_full_sum(T):
    rng = np.random.default_rng(0)
    centres = np.linspace(-310, 310, 63)
    w = rng.standard_normal((3, 63))
    z = np.concatenate([rng.uniform(-400, 400, 500), centres, [-310 - 50.0, 310 + 49.9, 0.0]])
    z = np.broadcast_to(z, (2, 3, 1, z.size)).copy()
    expected = np.stack([numpy_rbf(z[:, k], w[k], centres, 10.0) for k in range(3)], axis=1)
    args = (torch.tensor(w), torch.tensor(centres), 10.0)
    full = T.rbf(torch.tensor(z), *args).numpy()
    local = T.rbf_local(torch.tensor(z), *args).numpy()
    np.testing.assert_allclose(full, expected, atol=1e-12)
    bound = 2 * sum(np.exp(-d * d / 2) for d in range(5, 40)) * np.abs(w).max()
    assert np.abs(local - expected).max() <= bound
    assert np.abs(local - expected).max() > 1e-12  # the truncation is there and the bound is not vacuous


def test_rbf_init_fits_the_lorentzian_derivative(T):
    centres = torch.linspace(-310, 310, 63, dtype=torch.float64)
    fn = lambda z: 0.008 * z / (1 + (z / 50) ** 2)  # noqa: E731
    w = T.rbf_fit(fn, centres, 10.0, 310.0)
    z = np.linspace(-300, 300, 601)
    np.testing.assert_allclose(numpy_rbf(z, w.numpy(), centres.numpy(), 10.0), fn(z), atol=0.01 * 0.2)  # 1 % of the peak, 0.2


@pytest.mark.parametrize("rbf", ["full", "local"])
def test_two_stages_equal_numpy_gradient_steps(T, rbf):
    torch.manual_seed(0)
    net = T.TNRD(stages=2, size=3, rbfs=15, rbf=rbf)
    with torch.no_grad():  # make the stages differ
        net.R.add_(0.1 * torch.randn_like(net.R))
        net.w.add_(0.01 * torch.randn_like(net.w))
        net.lam.copy_(torch.tensor([0.05, 0.2]))
    rng = np.random.default_rng(1)
    f = rng.uniform(0, 255, (7, 6))
    got = net(torch.tensor(f)[None, None])[0, 0].detach().numpy()
    centres, gamma = np.linspace(-310, 310, 15), 620 / 14
    u = f.copy()
    for t in range(2):
        step = np.zeros(f.size)
        for k in range(8):
            K = net.R[t, k, 0].detach().numpy()
            K = K - K.mean()
            A = dense_correlation(K, 7, 6)
            step += A.T @ numpy_rbf(A @ u.ravel(), net.w[t, k].detach().numpy(), centres, gamma)
        u = u - step.reshape(7, 6) - net.lam[t].item() * (u - f)
    tol = 1e-9 if rbf == "full" else 1e-4
    np.testing.assert_allclose(got, u, atol=tol * np.abs(u).max())
    assert np.abs(u - f).max() > 1.0  # the stages do something
