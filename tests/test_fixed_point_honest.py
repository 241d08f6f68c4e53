"""Honest fixed points (issue 21 item 3): `unroll until` reports, per sample, the iterations it ran and the
last residual, warns once when a sample stops at max without meeting tol, keeps a converged sample's scalar
states too (its output never depends on the batch), and `backward implicit` solves the adjoint equation by
Anderson acceleration in far fewer iterations than the plain fixed-point adjoint, with the gradient of a
numpy solver's finite differences (float64)."""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

from conftest import build
from test_fixed_point import LASSO, ista_until, problem


def test_info_gives_each_samples_iterations_and_residual():
    D, x = problem(seed=5)
    net = build(LASSO + "unroll until(tol = 1e-8, max = 3000)\n")(D=torch.tensor(D))
    z, info = net(torch.tensor(x), info=True)
    _, counts = ista_until(D, x, 0.1, 1e-8, 3000)
    assert info["iterations"].tolist() == counts and bool(info["converged"].all())
    assert bool((info["residual"] <= 1e-8).all()) and bool((info["residual"] > 0).all())
    assert net.last_info["iterations"].tolist() == counts  # the last call's, kept on the module


def test_a_converged_sample_keeps_its_scalar_state():
    """FISTA's t is a state: a sample that converged keeps it, so an output that reads t is the same
    whether the sample came alone or beside slower ones (before: t kept counting for the whole batch)."""
    text = LASSO.replace("derive proxgrad", "derive fista") + "unroll until(tol = 1e-7, max = 4000)\noutput z / t\n"
    D, x = problem(seed=6, batch=6)
    net = build(text)(D=torch.tensor(D))
    together, info = net(torch.tensor(x), info=True)
    assert len(set(info["iterations"].tolist())) > 1  # the samples stop at different iterations
    for i in range(len(x)):
        alone = net(torch.tensor(x[i:i + 1]))
        np.testing.assert_allclose(together[i].numpy(), alone[0].numpy(), rtol=0, atol=1e-12)


def slow_lasso(seed=0, m=40, n=20, batch=3, spread=0.01):
    """D with two nearly parallel columns: ISTA's contraction factor is 1 - 1e-4 or so."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n)) / np.sqrt(m)
    D[:, 1] = D[:, 0] + spread * rng.standard_normal(m) / np.sqrt(m)
    return D, rng.standard_normal((batch, m))


def test_a_sample_stopped_at_max_is_warned_about_once():
    D, x = slow_lasso()
    net = build(LASSO + "unroll until(tol = 1e-12, max = 200)\n")(D=torch.tensor(D), lam=0.001)
    with pytest.warns(RuntimeWarning, match=r"samples stopped at 200 iterations of unroll until without meeting"):
        _, info = net(torch.tensor(x), info=True)
    assert not bool(info["converged"].any()) and info["iterations"].tolist() == [200] * 3
    assert bool((info["residual"] > 1e-12).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(torch.tensor(x))  # once per module


def lasso_exact(D, x, lam):
    """The LASSO's solution: its support and signs from numpy ISTA, then the solution on that support in
    closed form, (D_S^T D_S) z_S = D_S^T x - lam sign_S (the optimality conditions checked)."""
    z, _ = ista_until(D, x, lam, 1e-7, 100000)
    out = np.zeros_like(z)
    for i, (zi, xi) in enumerate(zip(z, x)):
        S = np.abs(zi) > 1e-7
        s = np.sign(zi[S])
        out[i, S] = np.linalg.solve(D[:, S].T @ D[:, S], D[:, S].T @ xi - lam * s)
        grad = D.T @ (D @ out[i] - xi)
        assert np.all(np.sign(out[i, S]) == s) and np.abs(grad[~S]).max(initial=0) < lam
    return out


def implicit_gradient(net_cls, D, x, target, lam, memory=None):
    net = net_cls(D=torch.tensor(D), lam=lam, constrain=False)
    if memory is not None:  # the plain fixed-point adjoint is Anderson with a memory of one iterate
        helper = net_cls.forward.__globals__["_implicit_layer"]
        net_cls.forward.__globals__["_implicit_layer"] = functools.partial(helper, memory=memory)
    try:
        z, info = net(torch.tensor(x), info=True)
        ((z - torch.tensor(target)) ** 2).sum().backward()
    finally:
        if memory is not None:
            net_cls.forward.__globals__["_implicit_layer"] = helper
    return net.D.grad.numpy(), float(net.lam_raw.grad), info


def test_anderson_adjoint_matches_finite_differences_in_far_fewer_iterations():
    D, x = slow_lasso(seed=1, batch=1, spread=0.05)  # ISTA's contraction: 1 - 1/2000 or so
    lam = 0.02
    target = np.random.default_rng(3).standard_normal((len(x), D.shape[1]))
    cls = build(LASSO + "unroll until(tol = 1e-11, max = 20000)\nbackward implicit\nlearn D, lam\n")
    dD, dlam, info = implicit_gradient(cls, D, x, target, lam)
    dD_plain, dlam_plain, plain = implicit_gradient(cls, D, x, target, lam, memory=1)
    assert bool(info["converged"].all()) and bool(info["adjoint_converged"].all())
    anderson, fixed = info["adjoint_iterations"], plain["adjoint_iterations"]
    # here: forward 1620 iterations, the plain adjoint 818, Anderson's 79
    assert bool((5 * anderson <= fixed).all()), (anderson, fixed, info["iterations"])

    def loss_at(Dv, lam_v):  # at a numpy LASSO solution: independent of the module
        return ((lasso_exact(Dv, x, lam_v) - target) ** 2).sum()
    h = 1e-6
    fd = (loss_at(D, lam + h) - loss_at(D, lam - h)) / (2 * h)
    assert abs(fd - dlam) <= 1e-6 * max(1, abs(fd)), (fd, dlam, dlam_plain)
    for i, j in [(0, 0), (7, 1)]:
        E = np.zeros_like(D)
        E[i, j] = h
        fd = (loss_at(D + E, lam) - loss_at(D - E, lam)) / (2 * h)
        assert abs(fd - dD[i, j]) <= 1e-6 * max(1, abs(fd)), (i, j, fd, dD[i, j])
