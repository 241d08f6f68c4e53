"""The rewrites made for speed (issue #13) still compute the algorithm: batch products (all layers' W @ x
in one product before the loop), the in-place soft threshold and addmm, one factorisation per batch for a
solve. Each is checked in float64 against a numpy loop written here, and against the reference semantics."""
import numpy as np
import pytest
import torch

import dpc
from dpc.api import compile_source
from dpc.passes.batch_products import AllLayers
from dpc.reference import evaluate

from conftest import layers

LISTA = """network LISTA
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  lam = 0.1
let    L = opnorm(D)^2
var    z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
derive proxgrad(step = 1/L)
unroll 7
learn  weights {tying}
output z
"""


def build(text, tmp_path, name="net.dp"):
    path = tmp_path / name
    path.write_text(text)
    return dpc.load(path), path


def problem(seed=0, m=6, n=9, batch=5):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n)) / np.sqrt(m)
    return D, rng.standard_normal((batch, m))


def moved(net, seed, scale):
    """net with every parameter moved by scale * N(0, 1), as training would move it."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.tensor(rng.standard_normal(tuple(p.shape)) * scale))
    return net


def ista(D, x, lam, steps):
    """ISTA, one sample at a time, in numpy: the algorithm the untrained network must be."""
    L = np.linalg.norm(D, 2) ** 2
    out = []
    for sample in x:
        z = np.zeros(D.shape[1])
        for _ in range(steps):
            v = z - D.T @ (D @ z - sample) / L
            z = np.sign(v) * np.maximum(np.abs(v) - lam / L, 0)
        out.append(z)
    return np.array(out)


def test_untied_products_with_the_input_are_marked_and_explained(tmp_path):
    from dpc.pipeline import run_text
    stages = run_text(LISTA.format(tying="untied"))
    program = stages[-1].program
    assert stages[-1].label == "batch products"
    marked = [a for _, e in program.step.equations() for a in e.atoms(AllLayers)]
    assert [str(a.args[0]) for a in marked] == ["W*x"]
    assert any(n.pass_name == "batch products" for n in program.notes)
    source = compile_source(LISTA.format(tying="untied"))
    assert "Wx = torch.matmul(x, (self.W if steps == len(self.W) else self.W[:steps]).mT).unbind(0)" in source
    assert "Wx[k]" in source and "self.W.unbind" not in source and "W, S" not in source


def test_tied_weights_are_not_batched(tmp_path):
    from dpc.pipeline import run_text
    program = run_text(LISTA.format(tying="tied"))[-1].program
    assert not any(e.has(AllLayers) for _, e in program.step.equations())
    assert "torch.matmul" not in compile_source(LISTA.format(tying="tied"))


@pytest.mark.parametrize("steps", [None, 1, 4, 7])
def test_batched_lista_is_ista_untrained(tmp_path, steps):
    Net, _ = build(LISTA.format(tying="untied"), tmp_path)
    D, x = problem(1)
    net = Net(D=torch.tensor(D), lam=0.2)
    got = net(torch.tensor(x), steps=steps).detach().numpy()
    assert np.abs(got - ista(D, x, 0.2, steps or 7)).max() < 1e-12
    trace = net(torch.tensor(x), trace=True, steps=steps)
    for k, z in enumerate(trace):
        assert np.abs(z.detach().numpy() - ista(D, x, 0.2, k + 1)).max() < 1e-12


def test_batched_lista_matches_the_reference_with_trained_weights(tmp_path):
    """Distinct weights per layer (as after training): layer k must read its own W[k] @ x."""
    Net, _ = build(LISTA.format(tying="untied"), tmp_path)
    from dpc.pipeline import compile_program
    program = compile_program(LISTA.format(tying="untied"))
    D, x = problem(2)
    net = moved(Net(D=torch.tensor(D)), seed=3, scale=0.1)
    weights = {name: layers(net, name).detach().numpy() for name in net.per_layer_parameters}
    for steps in (3, 7):
        want = evaluate(program, {"x": x}, params={"D": D}, weights=weights, steps=steps)
        got = net(torch.tensor(x), steps=steps).detach().numpy()
        assert np.abs(got - want).max() < 1e-12


def test_batched_weight_gradient_is_per_layer(tmp_path):
    """W's gradient from the one batched product equals the per-layer products' (finite differences would be
    slow: compared with the same network written per layer here)."""
    Net, _ = build(LISTA.format(tying="untied"), tmp_path)
    D, x = problem(4)
    net = Net(D=torch.tensor(D))
    with torch.no_grad():
        net.W.add_(torch.randn(net.W.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.1)
    xt = torch.tensor(x)
    net(xt, steps=5).square().sum().backward()
    W, S, theta = (layers(net, name).detach().clone().requires_grad_() for name in ("W", "S", "theta"))

    def soft(v, t):
        return torch.sign(v) * torch.clamp(v.abs() - t, min=0)

    z = soft(xt @ W[0].T, theta[0])
    for k in range(1, 5):
        z = soft(xt @ W[k].T + z @ S[k].T, theta[k])
    z.square().sum().backward()
    assert torch.allclose(net.W.grad, W.grad, atol=1e-12, rtol=0)
    for k in range(1, 5):  # S[0] is frozen: the first layer starts from z = 0
        assert torch.allclose(net.S[k].grad, S.grad[k], atol=1e-12, rtol=0)
        assert torch.allclose(net.theta[k].grad, theta.grad[k], atol=1e-12, rtol=0)
    assert net.S[0].grad is None and not net.S[0].requires_grad
    assert all(net.S[k].grad is None and net.theta[k].grad is None for k in range(5, net.steps))  # not run
    assert net.W.grad[5:].abs().max() == 0


def _parameter_stacks(output):
    """The backward nodes that gather several gradients into one tensor (unbind's and stack's backward)
    and lead straight to a parameter: a per-layer gradient copied into a stack."""
    found, seen, frontier = [], set(), [output.grad_fn]
    while frontier:
        node = frontier.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        parents = [f for f, _ in node.next_functions if f is not None]
        if node.name().startswith(("UnbindBackward", "StackBackward")) and any(
                f.name() == "torch::autograd::AccumulateGrad" for f in parents):
            found.append(node.name())
        frontier += parents
    return found


def test_untied_weights_backward_stacks_no_gradient(tmp_path):
    """W is one stacked parameter whose gradient comes whole from the batched product; S and theta are
    ParameterLists, so each layer's gradient accumulates into its own parameter: nothing is stacked."""
    Net, _ = build(LISTA.format(tying="untied"), tmp_path)
    D, x = problem(5)
    net = Net(D=torch.tensor(D))
    assert isinstance(net.W, torch.nn.Parameter) and net.W.shape == (7, 9, 6)
    assert isinstance(net.S, torch.nn.ParameterList) and isinstance(net.theta, torch.nn.ParameterList)
    out = net(torch.tensor(x))
    assert _parameter_stacks(out) == []
    out.square().sum().backward()
    assert all(net.S[k].grad.shape == (9, 9) and net.theta[k].grad.shape == () for k in range(1, 7))
    # the check can fail: the stacked form this replaced gathers S's and theta's gradients with unbind
    stacked = torch.stack([p.detach() for p in net.S]).requires_grad_()
    z = torch.zeros(5, 9, dtype=torch.float64)
    for S_k in stacked.unbind(0):
        z = z @ S_k.T
    assert _parameter_stacks(z) == ["UnbindBackward0"]


def test_lowering_steps_attribute_runs_only_those_layers(tmp_path):
    """Layer-wise trainers lower net.steps while layer t trains (examples/sparse_coding._Truncated): the
    batched product then takes W's first t layers, and the output is forward(steps=t)'s."""
    Net, _ = build(LISTA.format(tying="untied"), tmp_path)
    D, x = problem(8)
    net = moved(Net(D=torch.tensor(D)), seed=8, scale=0.05)
    xt = torch.tensor(x)
    want = net(xt, steps=3)
    net.steps = 3
    assert torch.equal(net(xt), want)
    source = compile_source(LISTA.format(tying="untied"))
    assert "self.W if steps == len(self.W) else self.W[:steps]" in source


def test_state_dict_keys_of_per_layer_values(tmp_path):
    """The listed per-layer values (S, theta) have one key per layer and load back exactly; a state_dict with
    them stacked on a steps axis (a layout no released dpc wrote) is refused by torch's own key check."""
    Net, _ = build(LISTA.format(tying="untied"), tmp_path)
    D, x = problem(6)
    trained = moved(Net(D=torch.tensor(D)), seed=7, scale=0.05)
    state = trained.state_dict()
    assert {"S.1", "theta.6", "W"} <= set(state) and "S" not in state
    fresh = Net(D=torch.tensor(D))
    fresh.load_state_dict(state)
    xt = torch.tensor(x)
    assert torch.equal(fresh(xt), trained(xt))
    stacked = {"W": state["W"], "D": state["D"], "S": layers(trained, "S").detach(),
               "theta": layers(trained, "theta").detach()}
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "S", "theta"'):
        Net(D=torch.tensor(D)).load_state_dict(stacked)
    source = compile_source(LISTA.format(tying="untied"))
    assert "_load_from_state_dict" not in source and "_unstack_layers" not in source


@pytest.mark.parametrize("t", [0.3, 0.0, -0.2, "per entry", "float"])
def test_soft_threshold_under_torch_compile_has_the_eager_values_and_gradients(t):
    """Under torch.compile _soft is _SoftCompiled (a backward inductor's CPU code runs fast): the same values
    and gradients as the eager form, for thresholds of both signs, at ties (v = +-t), per entry and a float."""
    from dpc.backends.torch.runtime import namespace as helpers
    namespace = helpers("_soft")
    soft_ = namespace["_soft"]
    rng = np.random.default_rng(9)
    v = torch.tensor(rng.standard_normal((6, 8)), requires_grad=True)
    if t == "per entry":
        t = torch.tensor(rng.standard_normal(8) * 0.3, requires_grad=True)
    elif t != "float":
        t = torch.tensor(t, dtype=torch.float64, requires_grad=True)
        with torch.no_grad():
            v[0, :3] = t
            v[1, :3] = -t
    else:
        t = 0.25
    grad = torch.tensor(rng.standard_normal((6, 8)))
    wrt = (v, t) if isinstance(t, torch.Tensor) else (v,)
    want = soft_(v, t)
    want_grads = torch.autograd.grad(want, wrt, grad)
    # count the calls of _SoftCompiled.forward (a function of the module's globals: dynamo replays its side effect)
    namespace.update(calls=[], compiled_forward=namespace["_SoftCompiled"].forward)
    exec("def counted(v, t):\n    calls.append(1)\n    return compiled_forward(v, t)", namespace)
    namespace["_SoftCompiled"].forward = staticmethod(namespace["counted"])
    calls = namespace["calls"]
    torch._dynamo.reset()
    got = torch.compile(soft_, backend="aot_eager", fullgraph=True)(v, t)  # is_compiling(): _SoftCompiled
    got_grads = torch.autograd.grad(got, wrt, grad)
    assert calls, "the compiled path did not take _SoftCompiled"
    assert torch.equal(got, want)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=0, atol=1e-13)


def test_soft_threshold_in_place_form_is_exact():
    """The emitted _soft (v + (-t) and (-t) - v, relus in place) is bitwise the plain relu form, and its
    gradient in v and t is the plain form's."""
    source = compile_source(LISTA.format(tying="untied"))
    scope: dict = {}
    exec(source, scope)
    soft = scope["_soft"]
    g = torch.Generator().manual_seed(5)
    v = torch.randn(64, 33, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    got = soft(v, t)
    want = torch.relu(v - t) - torch.relu(-v - t)
    assert torch.equal(got, want)
    seed = torch.randn(64, 33, dtype=torch.float64, generator=g)
    gv, gt = torch.autograd.grad((got * seed).sum(), (v, t))
    wv, wt = torch.autograd.grad((want * seed).sum(), (v, t))
    assert torch.equal(gv, wv) and torch.allclose(gt, wt, atol=1e-12, rtol=0)
    numpy = np.sign(v.detach().numpy()) * np.maximum(np.abs(v.detach().numpy()) - 0.4, 0)
    assert np.abs(got.detach().numpy() - numpy).max() < 1e-15


TWO_PRODUCTS = """network Two
dims   n
input  x : R[n]
param  A : R[n, n]
param  B : R[n, n]
var    z : R[n] = x
update z <- tanh(A @ z + B @ relu(z))
unroll 3
"""


def test_addmm_adds_in_place_into_a_fresh_product_only(tmp_path):
    """A z + B relu(z): the first product is a new tensor, so the second is added into it in place
    (F.linear(z, A).addmm_(...)); a hoisted or shared base keeps the copying torch.addmm."""
    source = compile_source(TWO_PRODUCTS)
    assert "F.linear(z, self.A).addmm_(torch.relu(z), self.B.mT)" in source
    tied = compile_source(LISTA.format(tying="tied"))  # Wx is computed once and read by every layer
    assert "addmm_(" not in tied and "torch.addmm(Wx, z, self.S.mT)" in tied
    Net, _ = build(TWO_PRODUCTS, tmp_path)
    rng = np.random.default_rng(8)
    A, B, x = rng.standard_normal((4, 4)) / 2, rng.standard_normal((4, 4)) / 2, rng.standard_normal((3, 4))
    xt = torch.tensor(x, requires_grad=True)
    got = Net(A=torch.tensor(A), B=torch.tensor(B))(xt)
    want = []
    for sample in x:
        z = sample
        for _ in range(3):
            z = np.tanh(A @ z + B @ np.maximum(z, 0))
        want.append(z)
    assert np.abs(got.detach().numpy() - np.array(want)).max() < 1e-12
    got.sum().backward()  # the in-place add is legal for autograd, and the input is not written
    assert np.array_equal(xt.detach().numpy(), x) and xt.grad is not None


def test_tied_lista_is_ista(tmp_path):
    Net, _ = build(LISTA.format(tying="tied"), tmp_path)
    D, x = problem(6)
    got = Net(D=torch.tensor(D), lam=0.15)(torch.tensor(x))
    assert np.abs(got.detach().numpy() - ista(D, x, 0.15, 7)).max() < 1e-12


RIDGE = """network Ridge
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  lam = 0.1
var    z : R[n]
minimize 0.5 * sqnorm(x - D @ z) + 0.5 * lam * sqnorm(z)
derive closed
output z
"""


def test_ridge_factors_once_at_construction(tmp_path, monkeypatch):
    """derive closed's Hessian H = D.T D + lam I is factored (Cholesky) once, in __init__; forward only applies
    the factor (two triangular solves for the whole batch), and equals numpy's solve."""
    Net, _ = build(RIDGE, tmp_path, "ridge.dp")
    from dpc.api import compile_source
    source = compile_source(RIDGE, "ridge.dp")
    rng = np.random.default_rng(7)
    D, x = rng.standard_normal((8, 5)), rng.standard_normal((6, 8))
    factorisations, applications = [], []
    real_factor, real_apply = torch.linalg.cholesky_ex, torch.cholesky_solve

    def factor(A, *args, **kwargs):
        factorisations.append(tuple(A.shape))
        return real_factor(A, *args, **kwargs)

    def apply(B, L, *args, **kwargs):
        applications.append((tuple(B.shape), tuple(L.shape)))
        return real_apply(B, L, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", factor)
    monkeypatch.setattr(torch, "cholesky_solve", apply)
    monkeypatch.setattr(torch.linalg, "solve", None)  # no general solve anywhere
    net = Net(D=torch.tensor(D), lam=0.3)
    assert factorisations == [(5, 5)]
    z = net(torch.tensor(x)).detach().numpy()
    z2 = net(torch.tensor(x[:2])).detach().numpy()
    assert factorisations == [(5, 5)]  # not again in forward
    assert applications == [((5, 6), (5, 5)), ((5, 2), (5, 5))]  # the batch as the columns of one solve
    want = np.linalg.solve(D.T @ D + 0.3 * np.eye(5), D.T @ x.T).T
    np.testing.assert_allclose(z, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(z2, want[:2], rtol=0, atol=1e-12)
    assert "torch.linalg.solve" not in source.split("class Ridge")[1]


def test_a_singular_hessian_is_a_value_error_naming_it(tmp_path):
    Net, _ = build(RIDGE.replace("lam = 0.1", "lam = 1e-30"), tmp_path, "ridge.dp")
    with pytest.raises(ValueError, match="H is not positive definite to working precision"):
        Net(D=torch.ones(3, 5, dtype=torch.float64))


def test_an_invariant_product_of_a_per_layer_let_is_computed_once():
    """ADMM-Net's A_k = rho_k * Dd.T @ Dd + eye: Dd.T @ Dd is the same in every layer, computed once per call
    (the network still equals its per-layer ADMM: tests/test_per_layer_and_output.py, test_splitting_methods.py)."""
    from dpc.api import compile_source
    from conftest import EXAMPLES
    source = compile_source((EXAMPLES / "admm_net.dp").read_text(), "admm_net.dp")
    forward = source.split("def forward(self")[1]
    assert forward.count("self.Dd.mT @ self.Dd") == 1
    before_loop = forward.split("for k in range")[0]
    assert "DdTDd = self.Dd.mT @ self.Dd" in before_loop and "rho[k] * DdTDd" in forward
