"""The LISTA family (issue 4): LISTA-CP, LISTA-CPSS, ALISTA, LFISTA and SC2Net's Sparse LSTM.

Every reference below is plain numpy written here: ISTA, FISTA, support selection (the rule of
the LISTA-CPSS code: the top p_t percent of magnitudes per sample, above the threshold, skip the
shrinkage), ALISTA's analytic weight by projected gradient, and the Sparse LSTM cell.
"""
import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

import dpc
from conftest import EXAMPLES, build, dictionary, layers, learned_shapes, load_benchmark, set_layers, soft, sparse_batch
from dpc.api import compile_file
from dpc.errors import DpcError
from dpc.pipeline import run_text

FAMILY = ["lista_cp.dp", "lista_cpss.dp", "alista.dp", "lfista.dp", "sc2net.dp"]


# --- numpy references ----------------------------------------------------------------

def ista(D, x, lam, T):
    L = np.linalg.norm(D, 2) ** 2
    z, out = np.zeros((x.shape[0], D.shape[1])), []
    for _ in range(T):
        z = soft(z - (z @ D.T - x) @ D / L, lam / L)
        out.append(z)
    return out


def fista(D, x, lam, T):
    L = np.linalg.norm(D, 2) ** 2
    z = y = np.zeros((x.shape[0], D.shape[1]))
    t, out = 1.0, []
    for _ in range(T):
        z_next = soft(y - (y @ D.T - x) @ D / L, lam / L)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = z_next + (t - 1) / t_next * (z_next - z)
        z, t = z_next, t_next
        out.append(z)
    return out


def support_count(layer, p, pmax, n):
    """k = floor(min(layer * p, pmax) percent of n), in exact arithmetic."""
    return math.floor(min(layer * Fraction(p), Fraction(pmax)) * n / 100)


def select_support(v, t, p, pmax, layer):
    """Per sample (row): the k largest |v_i| with |v_i| > t pass as they are; the rest are soft-thresholded."""
    k = support_count(layer, p, pmax, v.shape[1])
    keep = np.zeros(v.shape, dtype=bool)
    for row in range(v.shape[0]):
        top = np.argsort(-np.abs(v[row]), kind="stable")[:k]
        keep[row, top] = True
    keep &= np.abs(v) > t
    return np.where(keep, v, soft(v, t)), keep


def ista_with_support_selection(D, x, lam, T, p="1.2", pmax="13"):
    L = np.linalg.norm(D, 2) ** 2
    z, out = np.zeros((x.shape[0], D.shape[1])), []
    for layer in range(1, T + 1):
        z, _ = select_support(z - (z @ D.T - x) @ D / L, lam / L, p, pmax, layer)
        out.append(z)
    return out


def analytic_weight_pgd(D, iters=20000):
    """ALISTA's W: min sum_{i != j} (W_i . D_j)^2 s.t. W_i . D_i = 1, by projected gradient descent."""
    G = D @ D.T
    step = 1 / (2 * np.linalg.norm(G, 2))
    W = D / np.sum(D * D, axis=0)
    for _ in range(iters):
        W = W - step * 2 * G @ W  # the gradient of sum_i W_i.T G W_i; the diagonal is fixed by the projection
        W = W - D * ((np.sum(W * D, axis=0) - 1) / np.sum(D * D, axis=0))
    return W


def off_diagonal(W, D):
    M = W.T @ D
    return np.sum(M ** 2) - np.sum(np.diag(M) ** 2)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def sparse_lstm(params, x, T):
    """SC2Net's cell without output gate, from z = c = 0, with the given (numpy) parameters."""
    P = {k: v.detach().numpy() for k, v in params.items()}
    z = c = np.zeros((x.shape[0], P["S"].shape[0]))
    out = []
    for _ in range(T):
        i = sigmoid(x @ P["U_i"].T + z @ P["V_i"].T + P["b_i"])
        f = sigmoid(x @ P["U_f"].T + z @ P["V_f"].T + P["b_f"])
        c = f * c + i * (x @ P["W"].T + z @ P["S"].T)
        z = soft(c, P["theta"])
        out.append(z)
    return out


def close(got, want, tol=1e-9):
    return np.abs(got.detach().numpy() - want).max() < tol


@pytest.fixture(scope="module")
def nets():
    return {f: dpc.load(EXAMPLES / f) for f in FAMILY}


@pytest.fixture
def problem():
    D = dictionary(20, 40)
    x, _ = sparse_batch(D, batch=6, p=0.2)
    return D, x


# --- every example ----------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILY)
def test_example_compiles_deterministically_to_torch_only_code(name):
    first, second = compile_file(str(EXAMPLES / name)), compile_file(str(EXAMPLES / name))
    assert first == second
    imports = [line for line in first.splitlines() if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] == "torch" for line in imports), imports


def test_lista_cp_untrained_is_ista_and_learns_only_coupled_weights(nets, problem):
    D, x = problem
    net = nets["lista_cp.dp"](D=torch.tensor(D), lam=0.3)
    for got, want in zip(net(torch.tensor(x), trace=True), ista(D, x, 0.3, 16)):
        assert close(got, want)
    assert learned_shapes(net) == {"W": (16, 40, 20), "theta": (16,)}
    assert "D" in dict(net.named_buffers())


def test_lista_cp_keeps_the_residual_form_for_any_weights(nets, problem):
    D, x = problem
    net = nets["lista_cp.dp"](D=torch.tensor(D), lam=0.3, steps=4)
    rng = np.random.default_rng(3)
    W, theta = rng.standard_normal((4, 40, 20)) * 0.1, rng.random(4) * 0.05
    set_layers(net, "W", W)
    set_layers(net, "theta", theta)
    z = np.zeros((x.shape[0], 40))
    for k, got in enumerate(net(torch.tensor(x), trace=True)):
        z = soft(z + (x - z @ D.T) @ W[k].T, theta[k])
        assert close(got, z)


def test_lfista_untrained_is_fista(nets, problem):
    D, x = problem
    net = nets["lfista.dp"](D=torch.tensor(D), lam=0.2)
    for got, want in zip(net(torch.tensor(x), trace=True), fista(D, x, 0.2, 16)):
        assert close(got, want)
    assert learned_shapes(net) == {"W": (16, 40, 20), "S": (16, 40, 40), "theta": (16,)}


def test_lista_cpss_untrained_is_ista_with_support_selection(nets):
    D = dictionary(60, 120, seed=4)
    x, _ = sparse_batch(D, batch=5, p=0.15, seed=5)
    net = nets["lista_cpss.dp"](D=torch.tensor(D), lam=0.1)
    want = ista_with_support_selection(D, x, 0.1, 16)
    for k, got in enumerate(net(torch.tensor(x), trace=True)):
        assert close(got, want[k]), f"layer {k + 1}"
    plain = ista(D, x, 0.1, 16)
    assert np.abs(want[-1] - plain[-1]).max() > 1e-3  # the selection matters here


# --- support selection -------------------------------------------------------------------

SELECT = """
network Select
dims n
input v : R[n]
hyper t = 0.3
var z : R[n] = 0
update z <- softss(v, t, {p}, {pmax})
unroll {T}
{learn}
output z
"""


@pytest.mark.parametrize("p, pmax", [("1.2", "13"), ("5", "12.5"), ("0.1", "1")])
def test_support_selection_matches_numpy_and_passes_at_most_its_share(p, pmax):
    Select = build(SELECT.format(p=p, pmax=pmax, T=16, learn=""))
    v = np.random.default_rng(7).standard_normal((6, 500))
    outs = Select(n=500)(torch.tensor(v), trace=True)
    for layer, got in enumerate(outs, start=1):
        want, keep = select_support(v, 0.3, p, pmax, layer)
        assert close(got, want, 1e-12), f"layer {layer}"
        got = got.numpy()
        unshrunk = (got == v) & (np.abs(v) > 0.3)
        k = support_count(layer, p, pmax, 500)
        assert (unshrunk.sum(axis=1) <= k).all()
        assert (unshrunk.sum(axis=1) == np.minimum(k, (np.abs(v) > 0.3).sum(axis=1))).all()
        assert (unshrunk == keep).all()


def test_support_selection_schedule_is_min_of_t_p_and_pmax():
    assert [support_count(t, "1.2", "13", 500) for t in (1, 2, 3, 10, 11, 16)] == [6, 12, 18, 60, 65, 65]
    Select = build(SELECT.format(p="1.2", pmax="13", T=16, learn=""))
    v = np.random.default_rng(8).standard_normal((2, 500)) + 10  # every entry above the threshold
    counts = [int((out.numpy() == v).sum(axis=1).max()) for out in Select(n=500)(torch.tensor(v), trace=True)]
    assert counts == [min(6 * t, 65) for t in range(1, 17)]


def test_support_selection_mask_carries_no_gradient():
    Select = build(SELECT.format(p="10", pmax="10", T=1, learn="learn t"))
    rng = np.random.default_rng(9)
    v = rng.standard_normal((3, 50))
    weights = rng.standard_normal((3, 50))
    net = Select(n=50)
    vt = torch.tensor(v, requires_grad=True)
    (net(vt) * torch.tensor(weights)).sum().backward()
    _, keep = select_support(v, 0.3, "10", "10", 1)
    passes = keep | (np.abs(v) > 0.3)  # kept as is, or shrunk but non-zero: slope 1 in v
    assert np.allclose(vt.grad.numpy(), weights * passes, atol=1e-12)
    shrunk = ~keep & (np.abs(v) > 0.3)  # only the soft-thresholded entries depend on t
    assert abs(net.t.grad.item() - np.sum(-np.sign(v) * weights * shrunk)) < 1e-10


# --- ALISTA -----------------------------------------------------------------------------

def test_analytic_weight_solves_the_coherence_problem(nets):
    D = dictionary(10, 24, seed=11)
    net = nets["alista.dp"](D=torch.tensor(D), lam=0.1)
    W = net.Wa.numpy()
    assert np.abs(np.diag(W.T @ D) - 1).max() < 1e-10
    reference = analytic_weight_pgd(D)
    assert np.abs(np.diag(reference.T @ D) - 1).max() < 1e-10
    assert np.abs(W - reference).max() < 1e-6
    assert off_diagonal(W, D) <= off_diagonal(reference, D) + 1e-9
    assert off_diagonal(W, D) < off_diagonal(D / np.sum(D * D, axis=0), D)  # better than D itself


def test_alista_learns_two_numbers_a_layer_and_starts_as_documented(nets, problem):
    D, x = problem
    net = nets["alista.dp"](D=torch.tensor(D), lam=0.2)
    assert learned_shapes(net) == {"gamma": (16,), "theta": (16,)}
    assert sum(p.numel() for p in net.parameters()) == 2 * 16
    W = analytic_weight_pgd(D)
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((x.shape[0], 40))
    for layer, got in enumerate(net(torch.tensor(x), trace=True), start=1):
        # the reference code's start: step 1, threshold lam / L, support selection 1.2 / 13
        z, _ = select_support(z - (z @ D.T - x) @ W, 0.2 / L, "1.2", "13", layer)
        assert close(got, z, 1e-6)


def test_learn_stepsizes_on_ista_learns_the_step(problem):
    Net = build("""
network TiISTA
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
derive proxgrad(step = 1/L)
unroll 5
learn stepsizes
output z
""")
    D, x = problem
    net = Net(D=torch.tensor(D), lam=0.1)
    L = np.linalg.norm(D, 2) ** 2
    assert np.allclose(layers(net, "gamma").detach().numpy(), 1 / L)
    assert np.allclose(layers(net, "theta").detach().numpy(), 0.1 / L)
    for got, want in zip(net(torch.tensor(x), trace=True), ista(D, x, 0.1, 5)):
        assert close(got, want)


# --- SC2Net -----------------------------------------------------------------------------

def sc2net(adapt: str = "adapt gates", tying: str = "tied", learn: bool = True):
    """examples/sc2net.dp with its `adapt gates` line (and tying) replaced."""
    text = re.sub(r"^adapt\s+gates(\([^)]*\))?", adapt, (EXAMPLES / "sc2net.dp").read_text(), flags=re.M)
    text = text.replace("learn  weights tied", f"learn  weights {tying}" if learn else "")
    return build(text)


def test_sc2net_example_untrained_is_ista(nets, problem):
    D, x = problem
    net = nets["sc2net.dp"](D=torch.tensor(D), lam=0.3)
    for got, want in zip(net(torch.tensor(x), trace=True), ista(D, x, 0.3, 16)):
        assert close(got, want)


def test_sc2net_has_two_gates_no_output_gate_and_a_soft_threshold_output(problem):
    D, x = problem
    torch.manual_seed(0)
    net = sc2net()(D=torch.tensor(D), lam=0.2, steps=6)
    params = dict(net.named_parameters())
    assert set(params) == {"W", "S", "theta", "U_i", "V_i", "b_i", "U_f", "V_f", "b_f"}  # no U_o, V_o, b_o
    assert params["U_i"].shape == (40, 20) and params["V_f"].shape == (40, 40) and params["theta"].shape == ()
    # SC2Net's code: Xavier-uniform weights, zero biases; W, S, theta at their ISTA values
    for name, (rows, cols) in (("U_i", (40, 20)), ("V_i", (40, 40)), ("U_f", (40, 20)), ("V_f", (40, 40))):
        bound = math.sqrt(6 / (rows + cols))
        assert 0 < params[name].abs().max() <= bound and params[name].std() > bound / 3
    assert params["b_i"].abs().max() == 0 and params["b_f"].abs().max() == 0
    L = np.linalg.norm(D, 2) ** 2
    assert np.allclose(params["W"].detach().numpy(), D.T / L)
    for got, want in zip(net(torch.tensor(x), trace=True), sparse_lstm(params, x, 6)):
        assert close(got, want)


def test_sc2net_cell_for_any_weights(problem):
    D, x = problem
    net = sc2net()(D=torch.tensor(D), lam=0.2, steps=5)
    rng = np.random.default_rng(12)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.tensor(rng.standard_normal(p.shape) * 0.2))
        net.theta.fill_(0.01)
    for got, want in zip(net(torch.tensor(x), trace=True), sparse_lstm(dict(net.named_parameters()), x, 5)):
        assert close(got, want)


def test_sc2net_ista_init_is_ista_and_its_gates_can_learn(problem):
    Net = sc2net("adapt gates(init = ista)")
    D, x = problem
    net = Net(D=torch.tensor(D), lam=0.3)
    zs = net(torch.tensor(x), trace=True)
    for got, want in zip(zs, ista(D, x, 0.3, 16)):
        assert close(got, want)
    (zs[-1] - torch.tensor(ista(D, x, 0.0, 16)[-1])).square().sum().backward()
    assert net.a_i.grad.abs().max() > 0 and net.a_f.grad.abs().max() > 0
    net32 = Net(D=torch.tensor(D, dtype=torch.float32), lam=0.3)  # exact in float32 too: gates are 1 and 0
    assert np.abs(net32(torch.tensor(x, dtype=torch.float32)).detach().numpy() - zs[-1].detach().numpy()).max() < 1e-5


def test_sc2net_with_unit_amplitudes_is_the_sc2net_cell(problem):
    D, x = problem
    torch.manual_seed(1)
    xavier = sc2net()(D=torch.tensor(D), lam=0.2, steps=4)
    amplitudes = sc2net("adapt gates(init = ista)")(D=torch.tensor(D), lam=0.2, steps=4)
    with torch.no_grad():
        for name, p in xavier.named_parameters():
            dict(amplitudes.named_parameters())[name].copy_(p)
        amplitudes.a_i.fill_(1)
        amplitudes.a_f.fill_(1)
    assert torch.allclose(amplitudes(torch.tensor(x)), xavier(torch.tensor(x)), atol=1e-12)


def test_sc2net_untied_gives_every_layer_its_gates(problem):
    Net = sc2net("adapt gates(init = ista)", "untied")
    D, x = problem
    net = Net(D=torch.tensor(D), lam=0.3, steps=4)
    shapes = learned_shapes(net)
    assert shapes["U_i"] == (4, 40, 20) and shapes["a_f"] == (4, 40) and shapes["S"] == (4, 40, 40)
    assert close(net(torch.tensor(x)), ista(D, x, 0.3, 4)[-1])


def test_adapt_gates_before_or_after_learn_is_the_same_network():
    text = (EXAMPLES / "sc2net.dp").read_text()
    lines = text.splitlines()
    adapt = next(i for i, line in enumerate(lines) if line.startswith("adapt"))
    learn = next(i for i, line in enumerate(lines) if line.startswith("learn"))
    assert adapt < learn  # as the language draft writes it
    swapped = lines[:]
    swapped[adapt], swapped[learn] = lines[learn], lines[adapt]
    first, second = run_text(text, "a.dp")[-1].program, run_text("\n".join(swapped), "a.dp")[-1].program
    assert first.step == second.step and first.decls == second.decls


def test_adapt_gates_without_learn_learns_only_the_gates(problem):
    Net = sc2net("adapt gates(init = ista)", learn=False)
    D, x = problem
    net = Net(D=torch.tensor(D), lam=0.3, steps=5)
    assert set(dict(net.named_parameters())) == {"U_i", "V_i", "b_i", "a_i", "U_f", "V_f", "b_f", "a_f"}
    assert close(net(torch.tensor(x)), ista(D, x, 0.3, 5)[-1])


def test_generated_family_runs_under_torch_compile(nets, problem):
    D, x = problem
    xt = torch.tensor(x)
    for name in ("lista_cpss.dp", "sc2net.dp", "alista.dp"):
        net = nets[name](D=torch.tensor(D), lam=0.2, steps=3)
        compiled = torch.compile(net, backend="eager", fullgraph=True)
        assert torch.allclose(compiled(xt), net(xt), atol=1e-12), name


def test_family_is_dtype_agnostic(nets, problem):
    D, x = problem
    for name in FAMILY:
        torch.manual_seed(0)
        net = nets[name](D=torch.tensor(D, dtype=torch.float32), lam=0.2, steps=3)
        out = net(torch.tensor(x, dtype=torch.float32))
        assert out.dtype == torch.float32 and out.shape == (6, 40), name


# --- the passes and their errors ----------------------------------------------------------

def test_explain_shows_each_family_form():
    def last(name):
        return "\n".join(n.text for n in run_text((EXAMPLES / name).read_text(), name)[-1].program.notes)
    assert "z <- soft(z + W @ (x - D @ z), theta)" in last("lista_cp.dp")
    assert "z <- softss(z + W @ (x - D @ z), theta, 1.2, 13)" in last("lista_cpss.dp")
    assert "z <- softss(z - gamma*Wa.T @ (D @ z - x), theta, 1.2, 13)" in last("alista.dp")
    assert "let c_next = (S @ z + W @ x) * i + c * f" in last("sc2net.dp")


LASSO = """
network Net
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
{body}
unroll 4
{passes}
output z
"""
PROXGRAD = "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\nderive proxgrad(step = 1/L)"


@pytest.mark.parametrize("body, passes, message", [
    (PROXGRAD, "adapt gates(init = random)", "init must be xavier or ista"),
    (PROXGRAD, "adapt gates(bias = 1)", "no option 'bias'"),
    (PROXGRAD, "adapt support(q = 2)", "no option 'q'"),
    ("update z <- hard(z - D.T @ (D @ z - x) / L, lam)", "adapt support", "no soft threshold"),
    ("update z <- soft(0.5 * z + D.T @ x, lam)", "learn weights coupled", "is not I - A @ R"),
    ("update z <- soft(D.T @ x, lam)", "learn stepsizes", "a state plus a step"),
    (PROXGRAD, "learn weights coupled sideways", "unknown option 'sideways'"),
    ("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\nderive fista(step = 1/L)", "adapt gates",
     "one soft threshold"),
])
def test_family_errors_name_the_problem(body, passes, message):
    with pytest.raises(DpcError, match=message):
        run_text(LASSO.format(body=body, passes=passes))


def test_benchmark_runs_end_to_end_on_a_tiny_schedule(tmp_path):
    """benchmarks/sparse_coding.py: two layers, a few iterations; it writes the table and the numbers."""
    import json
    bench = load_benchmark("sparse_coding")
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--layers", "2", "--iters", "6", "--only", "ALISTA,LISTA-CP", "--threads", "1",
                    "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "results.json").read_text())["results"]["noiseless"]
    assert set(results["nmse_db"]) == {"ISTA", "FISTA", "ALISTA", "LISTA-CP"}
    assert all(len(v) == 2 for v in results["nmse_db"].values())
    assert results["info"]["ALISTA"]["parameters"] == 4
    assert "| layer | ISTA | FISTA | LISTA-CP | ALISTA |" in (tmp_path / "results.md").read_text()
