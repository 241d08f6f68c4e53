"""The group, ball and sparsity proxes (a*norm2, z in ball(r), z in l1ball(r), z in sparse(k)) and the
trainable hard threshold: each equals an independent numpy reference, is the minimiser of its prox
objective, stays finite at zero rows and ties, and compiles into networks equal to their numpy loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build, dictionary, sparse_batch


# --- independent numpy references, one sample (a 1-D array) at a time ---------------------------

def np_blocksoft(v, t):
    norm = np.linalg.norm(v)
    return np.zeros_like(v) if norm <= t else (1 - t / norm) * v


def np_projball(v, r):
    norm = np.linalg.norm(v)
    return v if norm <= r else v * (r / norm)


def np_projl1ball(v, r):
    """Bisection on theta: soft(v, theta) with ||.||_1 = r (a different method from the sort rule)."""
    if np.abs(v).sum() <= r:
        return v.copy()
    lo, hi = 0.0, np.abs(v).max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(np.abs(v) - mid, 0).sum() > r else (lo, mid)
    return np.sign(v) * np.maximum(np.abs(v) - hi, 0)


def np_topk(v, k):
    out = np.zeros_like(v)
    order = sorted(range(v.size), key=lambda i: (-abs(v[i]), i))[:k]  # ties: the lower index
    out[order] = v[order]
    return out


def _helper(name):
    from dpc.backends.torch.runtime import namespace
    return namespace(name)[name]


def _batch(seed=0, n=7):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((6, n))
    v[1] = 0                                  # a zero row
    v[2] = 0.01 * rng.standard_normal(n)      # a row below the threshold / inside the ball
    v[3] = np.array([1.0, -1.0, 1.0, 0.5, -0.5, 1.0, 0.25])[:n]  # ties in magnitude
    return v


CASES = [("_blocksoft", np_blocksoft, 0.7), ("_projball", np_projball, 0.9), ("_projl1ball", np_projl1ball, 1.3),
         ("_topk", np_topk, 3)]


@pytest.mark.parametrize("name, reference, arg", CASES)
def test_each_prox_equals_its_numpy_reference_and_has_finite_gradients(name, reference, arg):
    fn = _helper(name)
    v = torch.tensor(_batch(), requires_grad=True)
    out = fn(v, arg)
    want = np.stack([reference(row, arg) for row in _batch()])
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    assert torch.isfinite(v.grad).all()


@pytest.mark.parametrize("name, reference, arg", CASES)
def test_the_atom_reference_rule_equals_the_independent_one(name, reference, arg):
    from dpc import atoms
    rule = {"_blocksoft": atoms.BlockSoft, "_projball": atoms.ProjBall, "_projl1ball": atoms.ProjL1Ball,
            "_topk": atoms.TopK}[name].reference
    for row in _batch(3):
        np.testing.assert_allclose(rule(np, row.reshape(-1, 1), arg).ravel(), reference(row, arg), atol=1e-12)


def _feasible(name, u, arg):
    if name == "_projball":
        return np.linalg.norm(u) <= arg + 1e-12
    if name == "_projl1ball":
        return np.abs(u).sum() <= arg + 1e-12
    if name == "_topk":
        return np.count_nonzero(u) <= arg
    return True


@pytest.mark.parametrize("name, reference, arg", CASES)
def test_each_prox_is_the_minimiser(name, reference, arg):
    """g(u) + ||u - v||^2/2 at the prox is no larger than at 1000 random feasible perturbations."""
    fn = _helper(name)
    rng = np.random.default_rng(5)
    penalty = (lambda u: arg * np.linalg.norm(u)) if name == "_blocksoft" else (lambda u: 0.0)
    for row in _batch(1):
        best = fn(torch.tensor(row[None]), arg)[0].numpy()
        value = penalty(best) + 0.5 * np.sum((best - row) ** 2)
        tried = 0
        for scale in (1e-1, 1e-3, 1e-6):
            for _ in range(334):
                u = best + scale * rng.standard_normal(row.size)
                if name == "_topk":  # stay k-sparse: perturb the kept support, or move one entry
                    u = np_topk(u, arg)
                if not _feasible(name, u, arg):
                    u = reference(u, arg)  # back onto the set
                tried += 1
                assert penalty(u) + 0.5 * np.sum((u - row) ** 2) >= value - 1e-12
        assert tried >= 1000


def test_trainable_hard_threshold_equals_iht_untrained_and_its_threshold_gets_a_gradient():
    """Deep l0 encoder (Wang, Ling & Huang 2016): learn weights on the norm0 program. Untrained it is
    iterative hard thresholding exactly; after backward the thresholds' gradients are finite and non-zero."""
    program = """network L0Encoder
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  lam = 0.05
var    z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm0(z)
derive proxgrad
unroll 6
learn  weights untied
output z
"""
    D = dictionary(20, 40)
    x, _ = sparse_batch(D, batch=16)
    Net = build(program)
    net = Net(D=torch.tensor(D))
    trace = net(torch.tensor(x), trace=True)
    L = np.linalg.norm(D, 2) ** 2
    t = np.sqrt(2 * 0.05 / L)
    z = np.zeros((x.shape[0], D.shape[1]))
    for layer in range(6):
        v = z - (z @ D.T - x) @ D / L
        z = v * (np.abs(v) > t)
        np.testing.assert_array_equal(np.abs(trace[layer].detach().numpy()) > 0, np.abs(z) > 0)
        np.testing.assert_allclose(trace[layer].detach().numpy(), z, rtol=0, atol=1e-12)
    loss = (trace[-1] - torch.tensor(z * 0.9)).square().sum()
    loss.backward()
    grads = torch.stack([p.grad for p in net.theta if p.grad is not None])
    assert torch.isfinite(grads).all() and (grads != 0).any()


def test_iht_program_equals_numpy_iht():
    program = """network IHT
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  k = 4
var    z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z)
subject to z in sparse(k)
derive proxgrad
unroll 12
output z
"""
    D = dictionary(20, 40, seed=2)
    x, _ = sparse_batch(D, batch=8, seed=3)
    net = build(program)(D=torch.tensor(D))
    trace = net(torch.tensor(x), trace=True)
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((x.shape[0], D.shape[1]))
    for layer in range(12):
        z = np.stack([np_topk(row, 4) for row in z - (z @ D.T - x) @ D / L])
        np.testing.assert_allclose(trace[layer].detach().numpy(), z, rtol=0, atol=1e-12)
        assert (np.count_nonzero(trace[layer].detach().numpy(), axis=1) <= 4).all()


@pytest.mark.parametrize("constraint, project", [("subject to z in ball(r)", np_projball),
                                                 ("subject to z in l1ball(r)", np_projl1ball),
                                                 ("+ r * norm2(z)", None)])
def test_ball_and_group_programs_equal_numpy_proximal_gradient(constraint, project):
    objective = "minimize 0.5 * sqnorm(x - D @ z)"
    text = f"""network P
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  r = 0.8
var    z : R[n] = 0
{objective} {constraint if constraint.startswith('+') else ''}
{constraint if not constraint.startswith('+') else ''}
derive proxgrad
unroll 15
output z
"""
    D = dictionary(15, 30, seed=4)
    x, _ = sparse_batch(D, batch=5, seed=6)
    net = build(text)(D=torch.tensor(D))
    trace = net(torch.tensor(x), trace=True)
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((x.shape[0], D.shape[1]))
    for layer in range(15):
        v = z - (z @ D.T - x) @ D / L
        z = np.stack([project(row, 0.8) if project else np_blocksoft(row, 0.8 / L) for row in v])
        np.testing.assert_allclose(trace[layer].detach().numpy(), z, rtol=0, atol=1e-12)


def test_a_norm_with_a_sparsity_constraint_is_a_located_error():
    from dpc.api import compile_source
    from dpc.errors import DpcError
    text = """network Bad
dims   m, n
input  x : R[m]
param  D : R[m, n]
var    z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + 0.1 * norm1(z)
subject to z in sparse(3)
derive proxgrad
unroll 3
output z
"""
    with pytest.raises(DpcError, match=r"bad\.dp:6:\d+: error: no known proximal operator"):
        compile_source(text, "bad.dp")


def test_a_negative_radius_is_refused_at_construction():
    text = """network B
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  r = 1
var    z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z)
subject to z in ball(r)
derive proxgrad
unroll 3
output z
"""
    Net = build(text)
    with pytest.raises(ValueError, match="radius"):
        Net(D=torch.tensor(dictionary(5, 8)), r=-1.0)


def test_topk_with_a_count_per_sample_equals_the_reference():
    """Found by the 20,000-program fuzz run: a count that reads the state (lam * norm1(h)) differs per sample;
    _topk took int() of it (a ValueError). Each sample keeps its own floor(k) largest entries."""
    from dpc.fuzz.check import classify
    text = """network K
dims   dim, m
input  y : R[dim]
param  Phi : R[dim, m]
hyper  lam = 1 / 10
let    L = opnorm(Phi)^2
var    h : R[m] = softpos(Phi.T @ y, lam)
update {
h <- topk(h - Phi.T @ (Phi @ h - y) , lam * norm1(h))
}
unroll 6
"""
    result = classify(text, seed=9380)
    assert result.outcome == "ok" and result.verified, result
    fn = _helper("_topk")
    v = torch.tensor(_batch(2))
    k = torch.tensor([[0.0], [3.7], [1.0], [2.0], [7.5], [-1.0]])
    want = np.stack([np_topk(row, max(int(np.floor(kk)), 0)) for row, kk in zip(_batch(2), k[:, 0].numpy())])
    np.testing.assert_array_equal(fn(v, k).numpy(), want)
