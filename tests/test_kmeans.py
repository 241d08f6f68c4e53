"""Relaxations, closed forms and the k-means network (issue 3), against numpy/scipy references."""
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from conftest import EXAMPLES, ROOT, build, run_dpc

KMEANS = (EXAMPLES / "kmeansnet.dp").read_text()
TELL = (EXAMPLES / "kmeansnet_tell.dp").read_text()

ASSIGN = """network Assign
dims   d, k
input  x : R[d]
param  C : R[k, d]
hyper  tau = 0.5
var    s : R[k]
minimize sum_j s[j] * sqnorm(x - C[j])
subject to s in onehot
{relax}
derive closed
output s
"""


def problem(k=5, d=7, batch=11, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((k, d)), rng.standard_normal((batch, d))


def sqdist(x, C):
    return ((x[:, None, :] - C[None, :, :]) ** 2).sum(-1)


def project_simplex(v):
    """Euclidean projection onto {s >= 0, sum s = 1}: bisection on the threshold t of max(v - t, 0)."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        t = (lo + hi) / 2
        lo, hi = (t, hi) if np.maximum(v - t, 0).sum() > 1 else (lo, t)
    return np.maximum(v - (lo + hi) / 2, 0)


def t(a):
    return torch.as_tensor(a, dtype=torch.float64)


# --- the k-means network ------------------------------------------------------------------

def test_untrained_kmeansnet_is_the_softmax_of_negative_squared_distances():
    C, x = problem()
    Net = build(KMEANS, "kmeansnet.dp")
    net = Net(C=t(C), tau=0.3)
    s = net(t(x)).detach().numpy()
    reference = softmax(-sqdist(x, C) / 0.3, axis=1)
    assert np.abs(s - reference).max() < 1e-10
    assert np.array_equal(s.argmax(1), sqdist(x, C).argmin(1))  # the nearest centroid
    assert s.dtype == np.float64 and s.shape == (11, 5)


def test_kmeansnet_is_one_affine_layer_tied_to_the_centroids():
    C, x = problem(seed=1)
    Net = build(KMEANS, "kmeansnet.dp")
    net = Net(C=t(C.copy()), tau=0.2)
    assert [n for n, _ in net.named_parameters()] == ["C"]  # learn C: W and b are computed from C
    with torch.no_grad():
        net.C.add_(0.5)
    s = net(t(x)).detach().numpy()
    assert np.abs(s - softmax(-sqdist(x, C + 0.5) / 0.2, axis=1)).max() < 1e-10
    source = dpc_source(KMEANS)
    forward = source[source.index("def forward(self"):source.index("def objective")]
    assert "W = 2 * self.C / self.tau" in forward and "self.C.square().sum(-1)" in forward
    assert "torch.softmax(torch.addmm(b, x, W.mT), dim=-1)" in forward


def test_objective_is_the_relaxed_objective_with_the_entropy_term():
    C, x = problem(seed=2)
    tau = 0.7
    net = build(KMEANS, "kmeansnet.dp")(C=t(C), tau=tau)
    rng = np.random.default_rng(3)
    s = softmax(rng.standard_normal((11, 5)), axis=1)
    value = net.objective(t(x), t(s)).detach().numpy()
    reference = (s * sqdist(x, C)).sum(1) + tau * (s * np.log(s)).sum(1)
    assert np.abs(value - reference).max() < 1e-10
    # at s = net(x) it is the soft-min -tau * logsumexp(-c / tau), below the relaxation's other points
    at_net = net.objective(t(x), net(t(x))).detach().numpy()
    assert np.abs(at_net - (-tau * logsumexp(-sqdist(x, C) / tau, axis=1))).max() < 1e-9
    assert (at_net <= value + 1e-12).all()


def test_objective_backpropagates_where_the_softmax_underflows():
    C, x = problem(seed=4)
    net = build(KMEANS, "kmeansnet.dp")(C=t(C) * 10, tau=1e-3)
    s = net(t(x))
    assert (s == 0).any()
    net.objective(t(x), s).mean().backward()
    assert torch.isfinite(net.C.grad).all()
    # the envelope theorem: the gradient through s vanishes, so it equals the one with s fixed
    grad = net.C.grad.clone()
    net.C.grad = None
    net.objective(t(x), s.detach()).mean().backward()
    assert torch.allclose(grad, net.C.grad, atol=1e-8)


def test_learn_weights_frees_a_weight_and_a_bias_initialised_from_the_centroids():
    C, x = problem(seed=5)
    text = KMEANS.replace("learn  C ", "learn  weights ")
    net = build(text, "kmeansnet_free.dp")(C=t(C), tau=0.4)
    params = dict(net.named_parameters())
    assert sorted(params) == ["W", "b"]
    assert np.abs(params["W"].detach().numpy() - 2 * C / 0.4).max() < 1e-12
    assert np.abs(params["b"].detach().numpy() + (C ** 2).sum(1) / 0.4).max() < 1e-12
    s = net(t(x)).detach().numpy()
    assert np.abs(s - softmax(-sqdist(x, C) / 0.4, axis=1)).max() < 1e-10
    with torch.no_grad():
        params["b"].add_(torch.arange(5.0))
    s = net(t(x)).detach().numpy()
    assert np.abs(s - softmax(-sqdist(x, C) / 0.4 + np.arange(5.0), axis=1)).max() < 1e-10


def test_explain_shows_relaxed_problem_closed_form_and_affine_map():
    result = run_dpc("explain", str(EXAMPLES / "kmeansnet.dp"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    relax = out[out.index("== relax onehot -> softmax(tau)"):out.index("== derive closed")]
    assert "s in onehot -> s in simplex, objective - tau*entropy(s)" in relax
    assert "minimize" in relax and "subject to s in simplex" in relax
    closed = out[out.index("== derive closed"):out.index("== learn C")]
    assert "closed form: s = softmax(-c/tau), c = [sqnorm(x - C[j])]_j" in closed
    assert re.search(r"expanded: c\[j\] = .*sqnorm\(x\)", closed)
    assert "constant in j, dropped (softmax(v + a) = softmax(v)): sqnorm(x)" in closed
    assert "weight W = (2/tau)*C" in closed and "bias b = -1/tau*rowsqnorm(C)" in closed
    assert "s = softmax(W @ x + b)" in closed


def test_tell_variant_is_a_cosine_layer_without_bias():
    C, x = problem(seed=6)
    tau = 0.25
    net = build(TELL, "kmeansnet_tell.dp")(C=t(C), tau=tau)
    s = net(t(x)).detach().numpy()
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (C / np.linalg.norm(C, axis=1, keepdims=True)).T
    assert np.abs(s - softmax(2 * cos / tau, axis=1)).max() < 1e-10
    assert np.array_equal(s.argmax(1), cos.argmax(1))
    out = run_dpc("explain", str(EXAMPLES / "kmeansnet_tell.dp")).stdout
    assert "sqnorm(rownormalize(C)[j]) = 1 (unit rows)" in out and "no bias" in out
    assert "s = softmax(W @ normalize(x))" in out


def test_generated_module_follows_dtype_and_is_deterministic(tmp_path):
    C, x = problem(seed=7)
    net = build(KMEANS, "kmeansnet.dp")(C=t(C)).float()
    s = net(torch.as_tensor(x, dtype=torch.float32))
    assert s.dtype == torch.float32 and torch.allclose(s.sum(-1), torch.ones(11, dtype=torch.float32))
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    for out in (a, b):
        assert run_dpc("compile", str(EXAMPLES / "kmeansnet.dp"), "-o", str(out)).returncode == 0
    assert a.read_bytes() == b.read_bytes()


def test_compiling_kmeansnet_never_imports_torch():
    code = ("import sys; from dpc.api import compile_file; "
            f"compile_file({str(EXAMPLES / 'kmeansnet.dp')!r}); compile_file({str(EXAMPLES / 'kmeansnet_tell.dp')!r}); "
            "assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# --- the relaxation rules, each against a numerical minimiser -------------------------------

def _minimise_on_simplex(f, k, seed=0):
    x0 = np.full(k, 1.0 / k)
    res = minimize(f, x0, method="SLSQP", bounds=[(1e-12, 1)] * k,
                   constraints=[{"type": "eq", "fun": lambda s: s.sum() - 1}], options={"ftol": 1e-14, "maxiter": 500})
    return res.x


def test_rule_onehot_softmax_is_the_entropy_regularised_minimiser():
    c, tau = np.array([0.3, -0.2, 1.1, 0.0]), 0.4
    numeric = _minimise_on_simplex(lambda s: s @ c + tau * (s * np.log(s)).sum(), 4)
    assert np.abs(numeric - softmax(-c / tau)).max() < 1e-5


def test_rule_onehot_sparsemax_is_the_quadratic_regularised_minimiser():
    c, tau = np.array([0.3, -0.2, 1.1, 0.0]), 0.5
    numeric = _minimise_on_simplex(lambda s: s @ c + tau / 2 * (s ** 2).sum(), 4)
    assert np.abs(numeric - project_simplex(-c / tau)).max() < 1e-6


def test_rule_binary_sigmoid_is_the_binary_entropy_regularised_minimiser():
    c, tau = np.array([0.3, -0.2, 1.1, 0.0]), 0.4
    res = minimize(lambda s: s @ c + tau * (s * np.log(s) + (1 - s) * np.log(1 - s)).sum(), np.full(4, 0.5),
                   method="L-BFGS-B", bounds=[(1e-12, 1 - 1e-12)] * 4, options={"ftol": 1e-15, "gtol": 1e-12})
    assert np.abs(res.x - 1 / (1 + np.exp(c / tau))).max() < 1e-5


def test_rule_norm0_norm1_turns_the_hard_threshold_into_ista():
    text = """network L1
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  lam = 0.1
let    L = opnorm(D)^2
var    z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm0(z)
relax norm0 -> norm1
derive proxgrad(step = 1/L)
unroll 4
output z
"""
    rng = np.random.default_rng(8)
    D, x = rng.standard_normal((6, 9)), rng.standard_normal((3, 6))
    z_net = build(text, "l1.dp")(D=t(D), lam=0.1)(t(x)).detach().numpy()
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((3, 9))
    for _ in range(4):
        v = z - (z @ D.T - x) @ D / L
        z = np.sign(v) * np.maximum(np.abs(v) - 0.1 / L, 0)
    assert np.abs(z_net - z).max() < 1e-12
    from dpc import atoms
    from dpc.pipeline import compile_program
    program = compile_program(text, "l1.dp")
    assert program.objective.has(atoms.Norm1) and not program.objective.has(atoms.Norm0)


# --- other closed forms ----------------------------------------------------------------------

def test_sparsemax_assignment_sums_to_one_is_sparse_and_is_the_simplex_projection():
    C, x = problem(seed=9)
    text = ASSIGN.format(relax="relax onehot -> sparsemax(tau)")
    s = build(text, "sparse.dp")(C=t(C), tau=2.0)(t(x)).detach().numpy()
    assert np.abs(s.sum(1) - 1).max() < 1e-12 and (s >= 0).all()
    assert (s == 0).sum() > s.size // 3  # sparse: most centroids get exactly zero
    reference = np.stack([project_simplex(-row / 2.0) for row in sqdist(x, C)])
    assert np.abs(s - reference).max() < 1e-10
    assert "_sparsemax(" in dpc_source(text)


def test_sparsemax_default_temperature_is_one():
    C, x = problem(seed=10)
    text = ASSIGN.format(relax="relax onehot -> sparsemax")
    s = build(text, "sparse1.dp")(C=t(C))(t(x)).detach().numpy()
    reference = np.stack([project_simplex(-row) for row in sqdist(x, C)])
    assert np.abs(s - reference).max() < 1e-10


def test_binary_sigmoid_closed_form_keeps_the_constant_cost():
    text = """network Gate
dims   d, k
input  x : R[d]
param  W : R[k, d]
hyper  tau = 0.5
var    s : R[k]
minimize s @ (W @ x) + 0.3 * sum(s)
subject to s in binary
relax binary -> sigmoid(tau)
derive closed
output s
"""
    W, x = problem(seed=11)
    net = build(text, "gate.dp")(W=t(W), tau=0.5)
    s = net(t(x)).detach().numpy()
    assert np.abs(s - 1 / (1 + np.exp((x @ W.T + 0.3) / 0.5))).max() < 1e-12  # sigmoid is not shift invariant
    value = net.objective(t(x), t(s)).detach().numpy()
    entropy = -(s * np.log(s) + (1 - s) * np.log(1 - s)).sum(1)
    assert np.abs(value - ((s * (x @ W.T)).sum(1) + 0.3 * s.sum(1) - 0.5 * entropy)).max() < 1e-10


def test_cost_without_an_affine_expansion_is_computed_per_index():
    text = ASSIGN.format(relax="relax onehot -> softmax(tau)").replace("sqnorm(x - C[j])", "norm1(x - C[j])")
    C, x = problem(seed=12)
    s = build(text, "l1assign.dp")(C=t(C), tau=0.5)(t(x)).detach().numpy()
    cost = np.abs(x[:, None, :] - C[None]).sum(-1)
    assert np.abs(s - softmax(-cost / 0.5, axis=1)).max() < 1e-10


def test_ridge_closed_form_is_one_linear_solve():
    text = """network Ridge
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  lam = 0.1
var    z : R[n]
minimize 0.5 * sqnorm(x - D @ z) + 0.5 * lam * sqnorm(z)
derive closed
output z
"""
    rng = np.random.default_rng(13)
    D, x = rng.standard_normal((8, 5)), rng.standard_normal((4, 8))
    z = build(text, "ridge.dp")(D=t(D), lam=0.3)(t(x)).detach().numpy()
    reference = np.linalg.solve(D.T @ D + 0.3 * np.eye(5), D.T @ x.T).T
    assert np.abs(z - reference).max() < 1e-10
    source = dpc_source(text)
    # factored once at construction (Cholesky), applied by triangular solves: never an explicit inverse
    assert "_cholesky(H" in source and "torch.cholesky_solve(" in source
    assert "linalg.inv" not in source and "torch.inverse" not in source


def test_closed_form_refuses_a_singular_quadratic():
    text = """network LS
dims   m, n
input  x : R[m]
param  D : R[m, n]
var    z : R[n]
minimize 0.5 * sqnorm(x - D @ z)
derive closed
"""
    from dpc.errors import DpcError
    from dpc.pipeline import compile_program
    with pytest.raises(DpcError, match="may be singular"):
        compile_program(text, "ls.dp")


# --- errors through the CLI ------------------------------------------------------------------

def _cli_error(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    result = run_dpc("compile", str(path), "-o", str(tmp_path / "out.py"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.py").exists()
    return path, result.stderr.splitlines()


def test_error_relaxing_a_set_the_program_does_not_use(tmp_path):
    text = KMEANS.replace("subject to s in onehot", "subject to s in simplex")
    path, lines = _cli_error(tmp_path, text, "unused.dp")
    assert lines[0] == f"{path}:10:7: error: relax onehot: no var is constrained to onehot"
    assert lines[1].strip().startswith("relax onehot -> softmax(tau)")
    assert lines[2] == "    " + " " * 6 + "^" * len("onehot")
    assert lines[3] == "  hint: the constraints are: s in simplex"


def test_error_derive_closed_without_a_known_closed_form(tmp_path):
    text = (EXAMPLES / "lista.dp").read_text().replace("derive proxgrad(step = 1/L)", "derive closed")
    path, lines = _cli_error(tmp_path, text, "lasso_closed.dp")
    assert re.match(rf"^{re.escape(str(path))}:11:36: error: derive closed: no closed-form minimiser is known "
                    r"with the term lam\*norm1\(z\)", lines[0]), lines[0]
    assert lines[1].strip().startswith("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)")
    assert lines[2] == "    " + " " * 35 + "^" * len("lam * norm1(z)")
    assert "derive proxgrad" in lines[3] and lines[3].startswith("  hint:")


@pytest.mark.parametrize("relax, message", [
    ("relax onehot -> sigmoid(tau)", "onehot does not relax to sigmoid"),
    ("relax onehot -> softmax", "softmax needs tau"),
    ("relax onehot -> softmax(0)", "tau must be positive"),
    ("relax simplex -> softmax(tau)", "no relaxation of 'simplex' is known"),
    ("relax onehot -> softmax(tau, 2)", "softmax(tau) takes 1 argument, got 2"),
    ("relax norm0 -> norm1", "relax norm0: the objective has no norm0"),
])
def test_relax_mistakes_are_errors_at_the_directive(tmp_path, relax, message):
    text = KMEANS.replace("relax onehot -> softmax(tau)", relax)
    path, lines = _cli_error(tmp_path, text, "bad_relax.dp")
    assert lines[0].startswith(f"{path}:10:") and message in lines[0], lines[0]


def test_derive_closed_on_an_unrelaxed_onehot_says_relax_first(tmp_path):
    text = "\n".join(line for line in KMEANS.splitlines() if not line.startswith("relax"))
    path, lines = _cli_error(tmp_path, text, "unrelaxed.dp")
    assert lines[0].startswith(f"{path}:9:12: error: derive closed: `s in onehot`")
    assert "relax onehot -> softmax(0.1)" in lines[-1]  # a hint applied literally compiles (test_hints.py)


# --- the training example ------------------------------------------------------------------

def test_training_recipe_runs_and_lowers_the_relaxed_objective():
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_kmeansnet as tk
    finally:
        sys.path.remove(str(EXAMPLES))
    X, y = tk.load_data()
    X, y = X[:300], y[:300]
    net = tk.train_kmeansnet(X, seed=0, schedule=(400.0, 2.0, 4), steps_per_stage=10)
    clusters = tk.kmeansnet_clusters(net, X)
    assert clusters.shape == (300,) and 0 <= clusters.min() and clusters.max() < 10
    assert tk.cluster_accuracy(np.array([0, 0, 1, 1, 2]), np.array([2, 2, 0, 0, 1])) == 1.0
    assert abs(tk.cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) - 0.75) < 1e-12
    assert tk.scores(y, clusters)["ACC"] > 0.5


def dpc_source(text):
    from dpc.api import compile_source
    return compile_source(text, "prog.dp")
