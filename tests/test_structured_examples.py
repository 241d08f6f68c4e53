"""The NMF encoder (examples/nmf.dp) and group LISTA (examples/group_lista.dp) of issue 19, and `learn weights`
on per-sample matrices (row-wise block thresholds, singular-value thresholds), each against an independent
numpy loop written here. float64 throughout (conftest)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, build, layers

NMF = (EXAMPLES / "nmf.dp").read_text()
GROUP = (EXAMPLES / "group_lista.dp").read_text()
RPCA = (EXAMPLES / "rpca.dp").read_text()


def construct(cls, **kwargs):
    """cls(**kwargs) without the sizes its constructor does not take (a dim that comes with an input's shape
    may be read from it in forward instead)."""
    import inspect
    taken = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in taken or k not in ("m", "n", "T")})


# --- independent numpy references ------------------------------------------------------------------

def np_projected_gradient(W, x, lam, steps):
    """Every iterate of projected gradient on 0.5||x - W h||^2 + lam*sum(h), h >= 0, from h = 0."""
    L = np.linalg.norm(W, 2) ** 2
    h = np.zeros((x.shape[0], W.shape[1]))
    out = []
    for _ in range(steps):
        grad = (h @ W.T - x) @ W + lam  # the gradient of the smooth objective on h >= 0 (sum(h) = norm1(h))
        h = np.maximum(h - grad / L, 0.0)
        out.append(h)
    return out


def np_group_ista(D, X, lam, steps):
    """Every iterate of group ISTA on 0.5||X - D Z||_F^2 + lam*sum_i ||Z_i,:||, from Z = 0, one sample at a
    time, one row at a time."""
    L = np.linalg.norm(D, 2) ** 2
    Z = np.zeros((X.shape[0], D.shape[1], X.shape[2]))
    out = []
    for _ in range(steps):
        Z = Z.copy()
        for b in range(X.shape[0]):
            V = Z[b] - D.T @ (D @ Z[b] - X[b]) / L
            for i, row in enumerate(V):
                norm = np.sqrt(np.sum(row * row))
                Z[b, i] = 0.0 if norm <= lam / L else row * (1 - lam / L / norm)
        out.append(Z)
    return out


def np_svt(A, t):
    U, s, Vh = np.linalg.svd(A, full_matrices=False)
    return (U * np.maximum(s - t, 0)) @ Vh


def nmf_data(batch=16, m=20, n=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    W = np.abs(rng.standard_normal((m, n)))
    h = np.zeros((batch, n))
    for row in h:
        row[rng.choice(n, k, replace=False)] = rng.uniform(0.5, 2.0, k)
    return W, h @ W.T + 0.05 * np.abs(rng.standard_normal((batch, m)))


def group_data(batch=6, m=10, n=16, T=5, k=3, seed=0):
    """Row-sparse codes (k active rows of n), X = D Z + noise; sample 0 is X = 0 (every row zero)."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n)) / np.sqrt(m)
    Z = np.zeros((batch, n, T))
    for b in range(1, batch):
        Z[b, rng.choice(n, k, replace=False)] = rng.standard_normal((k, T))
    X = D @ Z + 0.01 * rng.standard_normal((batch, m, T))
    X[0] = 0.0
    return D, Z, X


# --- NMF --------------------------------------------------------------------------------------------

def test_nmf_untrained_equals_numpy_projected_gradient_layer_by_layer():
    W, x = nmf_data()
    net = build(NMF, "nmf.dp")(W=torch.tensor(W), lam=0.1)
    trace = net(torch.tensor(x), trace=True)
    reference = np_projected_gradient(W, x, 0.1, 10)
    assert len(trace) == 10
    for layer, (h, h_np) in enumerate(zip(trace, reference)):
        np.testing.assert_allclose(h.detach().numpy(), h_np, rtol=0, atol=1e-9, err_msg=f"layer {layer + 1}")
    assert (reference[-1] == 0).any() and (reference[-1] > 0).any()  # the projection acts: the test can fail


def test_nmf_outputs_stay_non_negative_after_training_with_a_large_learning_rate():
    W, x = nmf_data(batch=64)
    net = build(NMF, "nmf.dp")(W=torch.tensor(W), lam=0.1)
    target = torch.tensor(np.abs(np.random.default_rng(1).standard_normal((64, 12))))
    start = layers(net, "S").detach().clone()
    optimiser = torch.optim.Adam(net.parameters(), lr=1.0)  # far too large: the weights go anywhere
    for _ in range(5):
        optimiser.zero_grad()
        ((net(torch.tensor(x)) - target) ** 2).sum().backward()
        optimiser.step()
    assert (layers(net, "S") - start).abs().max() > 0.5  # it did move the weights
    for h in net(torch.tensor(x), trace=True):
        assert torch.isfinite(h).all() and (h >= 0).all()
    # and with negative inputs, which the weights then map anywhere
    for h in net(-torch.tensor(x), trace=True):
        assert (h >= 0).all()


def test_nmf_trains():
    """A few Adam steps at a sane rate lower the code error: the weights get gradients."""
    W, x = nmf_data(batch=64, seed=2)
    rng = np.random.default_rng(2)
    codes = np.zeros((64, 12))
    for row in codes:
        row[rng.choice(12, 3, replace=False)] = rng.uniform(0.5, 2.0, 3)
    x = torch.tensor(codes @ W.T)
    net = build(NMF, "nmf.dp")(W=torch.tensor(W), lam=0.1)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = ((net(x) - torch.tensor(codes)) ** 2).sum(-1).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# --- group LISTA ------------------------------------------------------------------------------------

def test_group_lista_untrained_equals_numpy_group_ista_layer_by_layer():
    D, _, X = group_data()
    net = construct(build(GROUP, "group_lista.dp"), D=torch.tensor(D), T=5, lam=0.05)
    trace = net(torch.tensor(X), trace=True)
    reference = np_group_ista(D, X, 0.05, 10)
    for layer, (Z, Z_np) in enumerate(zip(trace, reference)):
        assert Z.shape == (6, 16, 5)
        np.testing.assert_allclose(Z.detach().numpy(), Z_np, rtol=0, atol=1e-9, err_msg=f"layer {layer + 1}")
    last = reference[-1]
    zero_rows = np.all(last == 0, axis=-1)
    assert zero_rows[1:].any() and (~zero_rows).any()  # rows below the threshold exist, and rows above
    np.testing.assert_array_equal(np.all(trace[-1].detach().numpy() == 0, axis=-1), zero_rows)  # exactly 0


def test_group_lista_zero_rows_and_a_zero_sample_have_finite_gradients():
    """X = 0 (sample 0) gives Z = 0 in every layer, and backward through the zero rows (every row of that
    sample, the inactive rows of the others) is finite; the thresholds get a non-zero gradient."""
    D, _, X = group_data()
    net = construct(build(GROUP, "group_lista.dp"), D=torch.tensor(D), T=5, lam=0.05)
    trace = net(torch.tensor(X), trace=True)
    for Z in trace:
        assert torch.equal(Z[0], torch.zeros(16, 5))
    (trace[-1] ** 2).sum().backward()
    for name, p in net.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    assert all(torch.isfinite(t.grad) and t.grad != 0 for t in net.theta)


def test_group_lista_trains():
    D, Z, X = group_data(batch=64, seed=3)
    net = construct(build(GROUP, "group_lista.dp"), D=torch.tensor(D), T=5, lam=0.05)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = ((net(torch.tensor(X)) - torch.tensor(Z)) ** 2).sum((-2, -1)).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# --- learn weights on per-sample matrices ------------------------------------------------------------

def test_rpca_with_learned_weights_is_untrained_proximal_gradient():
    """learn weights on robust PCA linearises both thresholds (svt for L, soft for S): every layer is
    L, S <- svt(W X + S_L L + S_S S, theta), soft(W2 X + ...), and untrained it is the joint proximal
    gradient loop."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 8, 6))
    Net = build(RPCA.replace("learn  mu, lam untied", "learn  weights untied"), "rpca.dp")
    net = construct(Net, m=8, n=6, steps=12)
    assert {"W", "theta", "W2", "theta2"} <= set(net.per_layer_parameters)
    trace = net(torch.tensor(X), trace=True)
    L, S = np.zeros_like(X), np.zeros_like(X)
    for layer in range(12):
        G = L + S - X
        L, S = (np.stack([np_svt(a, 0.5) for a in L - G / 2]),
                np.sign(S - G / 2) * np.maximum(np.abs(S - G / 2) - 0.1, 0))
        np.testing.assert_allclose(trace[layer].detach().numpy(), L, rtol=0, atol=1e-9)


def test_learn_weights_on_a_matrix_multiplied_on_the_right_is_an_error_with_an_applicable_hint():
    from dpc.api import compile_source
    from dpc.errors import DpcError
    text = ("network N\ndims m, n, T\ninput X : R[m, T]\nparam D : R[m, n]\nparam B : R[T, T]\nhyper lam = 0.1\n"
            "var Z : R[n, T] = 0\nminimize 0.5 * sqnorm(X - D @ Z @ B) + lam * norm1(Z)\n"
            "derive proxgrad(step = 0.1)\nunroll 3\nlearn weights untied\noutput Z\n")
    with pytest.raises(DpcError) as info:
        compile_source(text, "prog.dp")
    message = info.value.format()
    assert re.match(r"prog\.dp:11:1: error: learn weights learns a matrix on the left of each state and input "
                    r"\(W @ [XZ]\); in .* is multiplied on the right", message), message
    hint = re.search(r"hint: learn the params by name instead: (learn .*)$", message, re.M)
    assert hint, message
    compile_source(text.replace("learn weights untied", hint.group(1)), "prog.dp")  # the hint applies as written


# --- svt's written-out backward (issue 19 speed work: fewer products for non-square matrices) --------

@pytest.mark.parametrize("shape", [(5, 7, 4), (5, 4, 7), (5, 6, 6)])
def test_svt_backward_equals_autograd_through_the_svd_where_singular_values_are_distinct(shape):
    """On random matrices (distinct, non-zero singular values, where torch's own SVD backward is exact) the
    helper's gradient in A and t equals autograd through U max(s - t, 0) V^T, tall, wide and square, with
    some singular values below t."""
    from dpc.backends.torch import runtime
    svt = runtime.namespace("_svt")["_svt"]
    rng = np.random.default_rng(sum(shape))
    A = torch.tensor(rng.standard_normal(shape), requires_grad=True)
    G = torch.tensor(rng.standard_normal(shape))
    s = torch.linalg.svdvals(A.detach())
    t = torch.tensor(float(s.median()), requires_grad=True)  # about half the singular values below t
    svt(A, t).mul(G).sum().backward()
    dA, dt = A.grad.clone(), t.grad.clone()
    A.grad, t.grad = None, None
    U, s, Vh = torch.linalg.svd(A, full_matrices=False)
    ((U * torch.relu(s - t).unsqueeze(-2)) @ Vh).mul(G).sum().backward()
    np.testing.assert_allclose(dA.numpy(), A.grad.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(dt.numpy(), t.grad.numpy(), rtol=0, atol=1e-9)


# --- the benchmark scripts run (smoke) --------------------------------------------------------------

@pytest.mark.parametrize("name", ["group_lista", "rpca"])
def test_benchmark_script_smoke(name, capsys):
    """benchmarks/group_lista.py and benchmarks/rpca.py --quick: every network builds, trains a few steps and
    prints a row per layer (rpca: and its speed rows)."""
    from conftest import load_benchmark
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        load_benchmark(name).main(["--quick", "--layers", "3", "--plot", ""])
    finally:
        torch.set_default_dtype(old)
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\| [123] \|", line)]
    assert len(rows) == 3 and all("nan" not in r for r in rows), out
    if name == "rpca":
        assert out.count("| forward") == 2, out


def test_svt_overhead_script_smoke(capsys):
    """benchmarks/svt_overhead.py (docs/structured.md's RPCA speed section) runs and prints its two tables."""
    from conftest import load_benchmark
    threads = torch.get_num_threads()
    try:
        load_benchmark("svt_overhead").main(["--rounds", "1", "--calls", "1", "--batch", "2", "--m", "5", "--n", "3"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "| U M |" in out and "| _svt (the same lines called directly) |" in out
