"""`learn NAME untied` (one copy of a param or hyper per layer) and `output EXPR` (issue #10, items 3, 4).

Every number is checked in float64 against a numpy loop written here, independently of the compiler.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

import dpc
from dpc import graph
from dpc.errors import DpcError
from dpc.pipeline import compile_program
from dpc.reference import evaluate

from conftest import layers, set_layers

ADMM = """\
network ADMMNet
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
hyper rho = 1
let A = D.T @ D + rho * eye(n)
var v : R[n] = 0
var u : R[n] = 0
update {
  let zn = solve(A, D.T @ x + rho * (v - u))
  let vn = soft(zn + u, lam / rho)
  v <- vn
  u <- u + zn - vn
}
unroll 6
learn LEARN
"""

# the dual of TV-like denoising, min 0.5 |x - Dd.T u|^2 over |u|_inf <= lam, by projected gradient;
# the network returns the primal solution x - Dd.T u
DUAL = """\
network DualNet
dims n, p
input x : R[n]
param Dd : R[p, n]
hyper lam = 0.3
let L = opnorm(Dd)^2
var u : R[p] = 0
update u <- clamp(u + Dd @ (x - Dd.T @ u) / L, -lam, lam)
unroll 5
LEARN
OUTPUT
"""

LISTA = """\
network LISTA
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
derive proxgrad(step = 1/L)
unroll 4
learn LEARN
"""


def _load(text, tmp_path, name="net.dp"):
    path = tmp_path / name
    path.write_text(text)
    return dpc.load(str(path))


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0)


def _admm_numpy(x, D, lam, rhos):
    """ADMM for the LASSO, one rho per iteration; returns v after every iteration."""
    n = D.shape[1]
    v, u, out = np.zeros((len(x), n)), np.zeros((len(x), n)), []
    for rho in rhos:
        A = D.T @ D + rho * np.eye(n)
        z = np.linalg.solve(A, (x @ D + rho * (v - u)).T).T
        v_new = _soft(z + u, lam / rho)
        u = u + z - v_new
        v = v_new
        out.append(v)
    return out


def _data(m=6, n=9, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n))
    return D / np.linalg.norm(D, axis=0), rng.standard_normal((batch, m))


# --- learn NAME untied -----------------------------------------------------------------------

def test_untied_hyper_untrained_is_admm(tmp_path):
    Net = _load(ADMM.replace("LEARN", "rho untied"), tmp_path)
    D, x = _data()
    net = Net(D=torch.tensor(D), lam=0.1, rho=2.0)
    assert Net.per_layer_parameters == ("rho",)
    assert torch.equal(layers(net, "rho"), torch.full((6,), 2.0, dtype=torch.float64))
    trace = net(torch.tensor(x), trace=True)
    want = _admm_numpy(x, D, 0.1, [2.0] * 6)
    for got, ref in zip(trace, want):
        np.testing.assert_allclose(got.detach().numpy(), ref, rtol=0, atol=1e-12)


def test_untied_hyper_each_layer_reads_its_own_copy(tmp_path):
    Net = _load(ADMM.replace("LEARN", "rho untied"), tmp_path)
    D, x = _data(seed=1)
    net = Net(D=torch.tensor(D), lam=0.1)
    rhos = [0.5, 1.0, 2.0, 4.0, 0.7, 1.3]
    set_layers(net, "rho", rhos)
    trace = net(torch.tensor(x), trace=True)
    for got, ref in zip(trace, _admm_numpy(x, D, 0.1, rhos)):
        np.testing.assert_allclose(got.detach().numpy(), ref, rtol=0, atol=1e-12)
    # the reference evaluator takes the copies in weights= and agrees
    program = compile_program(ADMM.replace("LEARN", "rho untied"), "admm.dp")
    nodes = [n for n in graph.layers(program) if n[:2] == ("param", "rho")]
    assert len(nodes) == 6 and graph.sharing_summary(program) == ["rho: 6 copies, one per layer"]
    ref = evaluate(program, {"x": x}, params={"D": D}, weights={"rho": np.array(rhos)}, trace=True)
    for got, want in zip(trace, ref):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=1e-12)


def test_untied_hyper_copies_are_independent_and_each_gets_a_gradient(tmp_path):
    Net = _load(ADMM.replace("LEARN", "rho untied"), tmp_path)
    D, x = _data(seed=2)
    net = Net(D=torch.tensor(D), lam=0.05)
    net(torch.tensor(x)).square().sum().backward()
    grad = torch.stack([copy.grad for copy in net.rho])  # each copy its own parameter and gradient
    assert grad.shape == (6,) and bool((grad != 0).all())
    assert len({round(float(g), 12) for g in grad}) == 6  # six values, not one shared gradient copied
    # moving layer 3's copy leaves layers 0..2 as they were and changes layer 3
    before = [t.detach().clone() for t in net(torch.tensor(x), trace=True)]
    with torch.no_grad():
        net.rho[3] += 0.5
    after = net(torch.tensor(x), trace=True)
    for k in range(3):
        assert torch.equal(before[k], after[k])
    assert not torch.allclose(before[3], after[3])


def test_tying_word_closes_the_list_of_names(tmp_path):
    text = ADMM.replace("LEARN", "lam, rho untied")
    Net = _load(text, tmp_path)
    D, _ = _data()
    net = Net(D=torch.tensor(D))
    assert set(Net.per_layer_parameters) == {"lam", "rho"}
    assert layers(net, "lam").shape == (6,) and layers(net, "rho").shape == (6,)
    tied = _load(ADMM.replace("LEARN", "lam tied, rho untied"), tmp_path, "tied.dp")(D=torch.tensor(D))
    assert tied.lam.shape == () and layers(tied, "rho").shape == (6,)
    assert type(tied).per_layer_parameters == ("rho",)
    # `learn rho tied` is what `learn rho` is: one copy, shared by every layer
    shared = _load(ADMM.replace("LEARN", "rho tied"), tmp_path, "shared.dp")
    assert shared(D=torch.tensor(D)).rho.shape == () and not hasattr(shared, "per_layer_parameters")


def test_learn_weights_untied_then_a_name_keeps_the_name_shared(tmp_path):
    Net = _load(LISTA.replace("LEARN", "weights untied, lam"), tmp_path)
    D, _ = _data()
    net = Net(D=torch.tensor(D))
    assert net.lam.shape == () and net.W.shape[0] == 4
    assert "lam" not in Net.per_layer_parameters


def test_untied_param_matrix_and_its_lets_per_layer(tmp_path):
    """learn D untied: D is (steps, m, n); L = opnorm(D)^2 is computed per layer from its copy; the
    objective reads the D given at construction."""
    text = LISTA.replace("LEARN", "D untied")
    Net = _load(text, tmp_path)
    D, x = _data(seed=3)
    net = Net(D=torch.tensor(D), lam=0.1)
    assert Net.per_layer_parameters == ("D",) and tuple(layers(net, "D").shape) == (4,) + D.shape
    rng = np.random.default_rng(4)
    copies = [D + 0.1 * rng.standard_normal(D.shape) for _ in range(4)]
    set_layers(net, "D", np.stack(copies))
    z, want = np.zeros((len(x), D.shape[1])), []
    for Dk in copies:  # ISTA with each layer's own dictionary and step 1/|D_k|^2
        L = np.linalg.norm(Dk, 2) ** 2
        z = _soft(z - (z @ Dk.T - x) @ Dk / L, 0.1 / L)
        want.append(z)
    for got, ref in zip(net(torch.tensor(x), trace=True), want):
        np.testing.assert_allclose(got.detach().numpy(), ref, rtol=0, atol=1e-12)
    objective = 0.5 * ((x - z @ D.T) ** 2).sum(1) + 0.1 * np.abs(z).sum(1)
    np.testing.assert_allclose(net.objective(torch.tensor(x), torch.tensor(z)).detach().numpy(), objective,
                               rtol=1e-13)
    net(torch.tensor(x)).sum().backward()
    assert all(float(copy.grad.abs().sum()) > 0 for copy in net.D)  # every copy gets a gradient


def test_untied_steps_limited_to_layers_built(tmp_path):
    Net = _load(ADMM.replace("LEARN", "rho untied"), tmp_path)
    D, x = _data()
    net = Net(D=torch.tensor(D), steps=3)
    assert len(net.rho) == 3
    with pytest.raises(ValueError, match="between 1 and 3"):
        net(torch.tensor(x), steps=4)


@pytest.mark.parametrize("learn, message", [
    ("rho sideways", "at most one word after it, tied or untied (got 'sideways')"),
    ("rho untied tied", "(got 'tied')"),
    ("A untied", "'A' is a let"),
])
def test_learn_name_errors(learn, message):
    with pytest.raises(DpcError) as err:
        dpc.compile_source(ADMM.replace("LEARN", learn), "admm.dp")
    text = err.value.format()
    assert message in text and "admm.dp:17:" in text


def test_closed_form_cannot_be_untied():
    text = """\
network Ridge
dims m, n
input x : R[m]
param D : R[m, n]
hyper mu = 0.5
var z : R[n]
minimize 0.5 * sqnorm(x - D @ z) + mu * sqnorm(z)
derive closed
learn mu untied
"""
    with pytest.raises(DpcError, match="closed form is one layer") as err:
        dpc.compile_source(text, "ridge.dp")
    assert "ridge.dp:9:" in err.value.format()


# --- output EXPR --------------------------------------------------------------------------------

def _dual_numpy(x, Dd, lams):
    L = np.linalg.norm(Dd, 2) ** 2
    u, out = np.zeros((len(x), Dd.shape[0])), []
    for lam in lams:
        u = np.clip(u + (x - u @ Dd) @ Dd.T / L, -lam, lam)
        out.append(x - u @ Dd)
    return out


def test_output_expression_is_the_primal_of_the_dual(tmp_path):
    Net = _load(DUAL.replace("LEARN", "").replace("OUTPUT", "output x - Dd.T @ u"), tmp_path)
    rng = np.random.default_rng(5)
    Dd, x = rng.standard_normal((7, 8)), 2 * rng.standard_normal((3, 8))
    net = Net(Dd=torch.tensor(Dd))
    want = _dual_numpy(x, Dd, [0.3] * 5)
    trace = net(torch.tensor(x), trace=True)
    assert len(trace) == 5
    for got, ref in zip(trace, want):
        np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    for s in range(1, 6):  # forward(steps=s) is the trace's layer s
        assert torch.equal(net(torch.tensor(x), steps=s), trace[s - 1])
    np.testing.assert_allclose(net(torch.tensor(x)).numpy(), want[-1], rtol=0, atol=1e-12)


def test_output_expression_with_untied_hyper_and_reference(tmp_path):
    text = DUAL.replace("LEARN", "learn lam untied").replace("OUTPUT", "output x - Dd.T @ u")
    Net = _load(text, tmp_path)
    rng = np.random.default_rng(6)
    Dd, x = rng.standard_normal((7, 8)), 2 * rng.standard_normal((3, 8))
    net = Net(Dd=torch.tensor(Dd))
    lams = [0.1, 0.2, 0.3, 0.4, 0.5]
    set_layers(net, "lam", lams)
    trace = net(torch.tensor(x), trace=True)
    want = _dual_numpy(x, Dd, lams)
    program = compile_program(text, "dual.dp")
    ref = evaluate(program, {"x": x}, params={"Dd": Dd}, weights={"lam": np.array(lams)}, trace=True)
    for got, w, r in zip(trace, want, ref):
        np.testing.assert_allclose(got.detach().numpy(), w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(r, w, rtol=0, atol=1e-12)


def test_default_output_is_still_the_first_vector_var(tmp_path):
    Net = _load(DUAL.replace("LEARN", "").replace("OUTPUT", ""), tmp_path)
    rng = np.random.default_rng(7)
    Dd, x = rng.standard_normal((7, 8)), rng.standard_normal((3, 8))
    u = Net(Dd=torch.tensor(Dd))(torch.tensor(x))
    assert u.shape == (3, 7)  # u, not the primal


def test_output_expression_in_explain(tmp_path):
    path = tmp_path / "dual.dp"
    path.write_text(DUAL.replace("LEARN", "learn lam untied").replace("OUTPUT", "output x - Dd.T @ u"))
    run = subprocess.run([sys.executable, "-m", "dpc", "explain", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "== output x - Dd.T @ u" in run.stdout
    assert "out = x - Dd.T @ u" in run.stdout
    assert "lam: 5 copies, one per layer" in run.stdout


@pytest.mark.parametrize("output, message, column", [
    ("output x - Dd @ u", "cannot multiply Dd : R[p, n] by u : R[p]: inner sizes n and p differ", 12),
    ("output sqnorm(u)", "the output is R; the network's output is a vector", 8),
    ("output Dd @ x", "the output reads no var", 8),
    ("output x - x", "the output reads no var", 8),
    ("output lam", "'lam' is not a var", 8),
    ("output u + nothere", "undefined name 'nothere' in the output", 12),
])
def test_output_expression_errors(tmp_path, output, message, column):
    path = tmp_path / "bad.dp"
    path.write_text(DUAL.replace("LEARN", "").replace("OUTPUT", output))
    run = subprocess.run([sys.executable, "-m", "dpc", "check", str(path)], capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"bad.dp:11:{column}: error: " in run.stderr and message in run.stderr
    assert output in run.stderr and "^" in run.stderr
