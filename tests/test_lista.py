"""LISTA from examples/lista.dp: untrained it is ISTA, layer by layer; it trains."""
import numpy as np
import pytest
import torch

import dpc
from conftest import EXAMPLES, dictionary, soft, sparse_batch


def ista_iterates(D, x, lam, T):
    """Plain ISTA, step 1/||D||_2^2, from z = 0: every iterate."""
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((x.shape[0], D.shape[1]))
    out = []
    for _ in range(T):
        z = soft(z - (z @ D.T - x) @ D / L, lam / L)
        out.append(z)
    return out


@pytest.fixture(scope="module")
def LISTA():
    return dpc.load(EXAMPLES / "lista.dp")


def test_untrained_lista_is_ista_layer_by_layer(LISTA):
    D = dictionary(30, 60)
    x, _ = sparse_batch(D, batch=10)
    lam = 0.05
    net = LISTA(D=torch.tensor(D), lam=lam)
    assert net.steps == 16
    zs = net(torch.tensor(x), trace=True)
    ref = ista_iterates(D, x, lam, 16)
    assert len(zs) == 16
    for k, (got, want) in enumerate(zip(zs, ref)):
        assert np.abs(got.detach().numpy() - want).max() < 1e-9, f"layer {k}"
    assert np.abs(net(torch.tensor(x)).detach().numpy() - ref[-1]).max() < 1e-9


def test_steps_override_and_parameter_shapes(LISTA):
    D = dictionary(12, 25)
    net = LISTA(D=torch.tensor(D), lam=0.1, steps=5)
    # W one stacked tensor (one batched product reads it); S and theta one parameter per layer
    assert net.W.shape == (5, 25, 12) and len(net.S) == len(net.theta) == 5
    assert all(S.shape == (25, 25) and theta.shape == () for S, theta in zip(net.S, net.theta))
    x, _ = sparse_batch(D, 4)
    assert np.abs(net(torch.tensor(x)).detach().numpy() - ista_iterates(D, x, 0.1, 5)[-1]).max() < 1e-9
    with pytest.raises(ValueError, match="steps"):
        LISTA(D=torch.tensor(D), steps=0)


def test_update_form_compiles_to_the_same_network(LISTA):
    Update = dpc.load(EXAMPLES / "lista_update.dp")
    D = dictionary(15, 30)
    x, _ = sparse_batch(D, 6)
    a, b = LISTA(D=torch.tensor(D), lam=0.2), Update(D=torch.tensor(D), lam=0.2)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    for n, p in a.named_parameters():
        assert torch.allclose(p, dict(b.named_parameters())[n], atol=1e-12)
    xa = torch.tensor(x)
    assert torch.allclose(a(xa), b(xa), atol=1e-12)


def test_gradient_step_lowers_objective_and_every_parameter_learns(LISTA):
    D = dictionary(15, 30)
    x, _ = sparse_batch(D, 16)
    net = LISTA(D=torch.tensor(D), lam=0.1, steps=4)
    xt = torch.tensor(x)
    loss = net.objective(xt, net(xt)).mean()
    loss.backward()
    # S[0] is frozen: the first layer starts from z = 0 and never reads it
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["S.0"]
    for name, p in net.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p -= 1e-3 * p.grad
    assert net.objective(xt, net(xt)).mean() < loss


def test_objective_is_the_lasso_per_sample(LISTA):
    D = dictionary(10, 20)
    x, z = sparse_batch(D, 5)
    net = LISTA(D=torch.tensor(D), lam=0.3)
    want = 0.5 * ((x - z @ D.T) ** 2).sum(1) + 0.3 * np.abs(z).sum(1)
    got = net.objective(torch.tensor(x), torch.tensor(z)).numpy()
    assert got.shape == (5,) and np.abs(got - want).max() < 1e-12


def test_bad_shapes_name_the_dim(LISTA):
    D = torch.tensor(dictionary(10, 20))
    with pytest.raises(ValueError, match="matrix"):
        LISTA(D=D[0])
    net = LISTA(D=D)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 10\)"):
        net(torch.zeros(3, 11))


def test_dtype_and_device_follow_the_dictionary(LISTA):
    D = torch.tensor(dictionary(10, 20), dtype=torch.float32)
    net = LISTA(D=D)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    out = net(torch.zeros(2, 10, dtype=torch.float32))
    assert out.dtype == torch.float32 and out.shape == (2, 20)
    net = net.double()
    assert net(torch.zeros(2, 10)).dtype == torch.float64


def test_torch_compile_matches_eager(LISTA):
    D = dictionary(10, 20)
    x, _ = sparse_batch(D, 4)
    net = LISTA(D=torch.tensor(D), lam=0.1, steps=3)
    xt = torch.tensor(x)
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(xt), net(xt), atol=1e-12)
    assert all(torch.allclose(a, b) for a, b in zip(compiled(xt, trace=True), net(xt, trace=True)))


def test_torch_compile_inductor_matches_eager(LISTA):
    """The real compiler (inductor), once: generated code must compile and agree with eager."""
    D = dictionary(8, 16)
    x, _ = sparse_batch(D, 4)
    net = LISTA(D=torch.tensor(D), lam=0.1, steps=2)
    torch._dynamo.reset()
    compiled = torch.compile(net)
    xt = torch.tensor(x)
    assert torch.allclose(compiled(xt), net(xt), atol=1e-10)


def test_forward_can_run_the_first_layers_only(LISTA):
    D = dictionary(10, 20)
    x, _ = sparse_batch(D, 3)
    net = LISTA(D=torch.tensor(D), lam=0.1, steps=6)
    assert net.per_layer_parameters == ("W", "S", "theta")
    for t in (1, 3, 6):
        got = net(torch.tensor(x), steps=t).detach().numpy()
        assert np.abs(got - ista_iterates(D, x, 0.1, t)[-1]).max() < 1e-9
    assert len(net(torch.tensor(x), trace=True, steps=4)) == 4
    with pytest.raises(ValueError, match="between 1 and 6"):
        net(torch.tensor(x), steps=7)


def test_soft_threshold_formula_holds_for_any_threshold(LISTA):
    """soft(v, t) = relu(v - t) - relu(-v - t): the soft threshold for t >= 0, continuous if a learned t < 0."""
    D = dictionary(10, 20)
    x, _ = sparse_batch(D, 3)
    net = LISTA(D=torch.tensor(D), lam=0.1, steps=1)
    v = x @ (D / np.linalg.norm(D, 2) ** 2)  # W x, the first layer's pre-activation
    for t in (0.05, 0.0, -0.1):
        with torch.no_grad():
            net.theta[0].fill_(t)
        got = net(torch.tensor(x)).detach().numpy()
        assert np.abs(got - (np.maximum(v - t, 0) - np.maximum(-v - t, 0))).max() < 1e-12
        if t >= 0:
            assert np.abs(got - soft(v, t)).max() < 1e-12


def test_load_a_generated_file(LISTA, tmp_path):
    from dpc.api import compile_file
    path = tmp_path / "lista.py"
    path.write_text(compile_file(str(EXAMPLES / "lista.dp")))
    Loaded = dpc.load(path)
    D = torch.tensor(dictionary(6, 9))
    assert torch.allclose(Loaded(D=D)(torch.ones(2, 6)), LISTA(D=D)(torch.ones(2, 6)))
