"""CRF as RNN (issue 19, examples/crf_rnn.dp): untrained, the network is the mean field of a Potts CRF,
layer by layer, against a numpy loop written here; finite, with rows summing to 1, for huge unaries; and
`learn Mu, w` makes the compatibility and the weight trainable. float64 throughout (conftest)."""
from __future__ import annotations

import numpy as np
import torch

from conftest import EXAMPLES, build

CRF = (EXAMPLES / "crf_rnn.dp").read_text()


def grid_affinity(side, theta=1.5):
    """A Gaussian kernel on the positions of a side x side grid, zero diagonal."""
    pos = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2).astype(float)
    d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    A = np.exp(-d2 / (2 * theta ** 2))
    np.fill_diagonal(A, 0.0)
    return A


def np_mean_field(U, A, Mu, w, layers):
    """Mean-field inference, written from the update equations of Zheng et al. (2015), one sample at a
    time: Q_i(l) proportional to exp(-U_i(l) - w sum_l' Mu[l', l] sum_j A_ij Q_j(l')), from softmax(-U)."""
    out = []
    for u in U:
        q = np.exp(-u - (-u).max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        qs = []
        for _ in range(layers):
            energy = -u - w * np.einsum("ij,jm,ml->il", A, q, Mu)
            energy -= energy.max(1, keepdims=True)
            q = np.exp(energy) / np.exp(energy).sum(1, keepdims=True)
            qs.append(q)
        out.append(qs)
    return [np.stack([sample[t] for sample in out]) for t in range(layers)]


def _setup(seed=0, side=4, k=3, scale=1.0):
    rng = np.random.default_rng(seed)
    A = grid_affinity(side)
    Mu = 1.0 - np.eye(k)
    U = scale * rng.standard_normal((3, side * side, k))
    return U, A, Mu


def test_untrained_crf_rnn_is_the_potts_mean_field_layer_by_layer():
    U, A, Mu = _setup()
    net = build(CRF)(A=torch.tensor(A), Mu=torch.tensor(Mu), w=0.7)
    got = net(torch.tensor(U), trace=True)
    want = np_mean_field(U, A, Mu, 0.7, 5)
    assert len(got) == 5
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=0, atol=1e-9)


def test_the_reference_evaluator_agrees():
    from dpc import reference
    from dpc.pipeline import compile_program
    U, A, Mu = _setup(seed=1)
    got = reference.evaluate(compile_program(CRF, "crf_rnn.dp"), inputs={"U": U}, params={"A": A, "Mu": Mu},
                             hypers={"w": 0.7})
    np.testing.assert_allclose(np.asarray(got), np_mean_field(U, A, Mu, 0.7, 5)[-1], rtol=0, atol=1e-9)


def test_huge_unaries_stay_finite_and_rows_sum_to_one():
    U, A, Mu = _setup(seed=2, scale=1e4)
    net = build(CRF)(A=torch.tensor(A), Mu=torch.tensor(1e4 * Mu), w=1e2)
    for Q in net(torch.tensor(U), trace=True):
        Q = Q.detach().numpy()
        assert np.isfinite(Q).all()
        np.testing.assert_allclose(Q.sum(-1), 1.0, rtol=0, atol=1e-12)
    want = np_mean_field(U, A, 1e4 * Mu, 1e2, 5)[-1]
    np.testing.assert_allclose(net(torch.tensor(U)).detach().numpy(), want, rtol=0, atol=1e-9)


def test_learn_makes_the_compatibility_and_the_weight_trainable():
    U, A, Mu = _setup(seed=3)
    net = build(CRF)(A=torch.tensor(A), Mu=torch.tensor(Mu), w=0.5)
    names = {n for n, _ in net.named_parameters()}
    assert names == {"Mu", "w"}
    assert "A" in dict(net.named_buffers())
    labels = torch.tensor(np.random.default_rng(4).integers(0, 3, (3, 16)))
    Q = net(torch.tensor(U))
    loss = torch.nn.functional.nll_loss(Q.clamp_min(1e-30).log().reshape(-1, 3), labels.reshape(-1))
    loss.backward()
    assert torch.isfinite(net.Mu.grad).all() and net.Mu.grad.abs().sum() > 0
    assert torch.isfinite(net.w.grad) and net.w.grad != 0
