"""The numpy reference semantics (dpc.reference) against hand-written float64 loops, then every
generated PyTorch module against it (the differential test the fuzzer scales up)."""
import pathlib
import re

import numpy as np
import pytest
import sympy as sp
import torch

from conftest import EXAMPLES, build, dictionary, layers, soft, sparse_batch
from dpc import atoms
from dpc.pipeline import compile_program, run_text
from dpc.reference import ReferenceError, evaluate, evaluate_objective, value_of

TOL = 1e-9


def close(a, b, tol=TOL):
    return np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max() < tol


def text_of(name):
    return (EXAMPLES / name).read_text()


def stage(text, label_start):
    """The program after the first pass whose label starts with label_start."""
    return next(s.program for s in run_text(text) if s.label.startswith(label_start))


# --- hand-written references -----------------------------------------------------------

def ista(D, x, lam, steps):
    L = np.linalg.norm(D, 2) ** 2
    z, out = np.zeros((len(x), D.shape[1])), []
    for _ in range(steps):
        z = soft(z - (z @ D.T - x) @ D / L, lam / L)
        out.append(z)
    return out


def fista(D, x, lam, steps):
    L = np.linalg.norm(D, 2) ** 2
    z = y = np.zeros((len(x), D.shape[1]))
    t, out = 1.0, []
    for _ in range(steps):
        z_next = soft(y - (y @ D.T - x) @ D / L, lam / L)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = z_next + (t - 1) / t_next * (z_next - z)
        z, t = z_next, t_next
        out.append(z)
    return out


@pytest.fixture
def problem():
    D = dictionary(10, 20, seed=3)
    x, _ = sparse_batch(D, batch=4, p=0.2, seed=4)
    return D, x


# --- the evaluator against them ------------------------------------------------------

def test_ista_before_learning(problem):
    """lista.dp with the learn line removed is ISTA, layer by layer; so is the stage before learn."""
    D, x = problem
    text = re.sub(r"(?m)^learn.*$", "", text_of("lista.dp"))
    want = ista(D, x, 0.1, 16)
    got = evaluate(compile_program(text), {"x": x}, {"D": D}, trace=True)
    assert len(got) == 16 and all(close(g, w) for g, w in zip(got, want))
    before = stage(text_of("lista.dp"), "unroll")  # no output pass yet: the first var is the output
    assert close(evaluate(before, {"x": x}, {"D": D}, hypers={"lam": 0.3}, steps=7), ista(D, x, 0.3, 7)[-1])


def test_untrained_lista_is_ista(problem):
    """The learned weights start at their symbolic values (W = D.T/L, S = I - D.T D/L, theta = lam/L)."""
    D, x = problem
    program = compile_program(text_of("lista.dp"))
    assert close(evaluate(program, {"x": x}, {"D": D}), ista(D, x, 0.1, 16)[-1])


def test_fista_after_derive(problem):
    """The stage right after `derive fista` (no unroll yet, so steps is given) is Beck-Teboulle's FISTA."""
    D, x = problem
    program = stage(text_of("lfista.dp"), "derive fista")
    got = evaluate(program, {"x": x}, {"D": D}, steps=9, trace=True)
    assert all(close(g, w) for g, w in zip(got, fista(D, x, 0.4, 9)))
    untrained = compile_program(text_of("lfista.dp"))  # learned and folded: still FISTA at the start
    assert close(evaluate(untrained, {"x": x}, {"D": D}, steps=9), fista(D, x, 0.4, 9)[-1])


@pytest.mark.parametrize("tau", [None, 0.7])
def test_kmeans_closed_form_is_softmax_of_distances(tau):
    rng = np.random.default_rng(5)
    C, x = rng.standard_normal((6, 3)), rng.standard_normal((5, 3))
    program = compile_program(text_of("kmeansnet.dp"))
    hypers = {} if tau is None else {"tau": tau}
    tau = tau or 0.1
    distances = ((x[:, None, :] - C[None]) ** 2).sum(-1)                  # (batch, k)
    logits = -distances / tau
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = evaluate(program, {"x": x}, {"C": C}, hypers=hypers, trace=True)
    assert len(got) == 1 and close(got[0], want)
    objective = (want * distances).sum(1) + tau * (want * np.log(want)).sum(1)  # cost - tau * entropy
    assert close(evaluate_objective(program, {"x": x}, {"s": want}, {"C": C}, hypers), objective)


ROTATION = """
network Rotate
dims n
input x : R[n]
var a : R[n] = x
var b : R[n] = 0.5 * x
var t : R = 0
update {
  let s = a + b
  a <- 0.6 * a - 0.8 * b + 0.1 * s
  b <- 0.8 * a + 0.6 * b
  t <- t + sqnorm(a)
}
unroll 5
output b
"""


def test_update_reads_previous_states_simultaneously():
    """a and b are both computed from the previous a and b (and this layer's temporary s)."""
    x = np.random.default_rng(6).standard_normal((3, 4))
    program = compile_program(ROTATION)
    a, b, t, bs, ts = x, 0.5 * x, np.zeros(3), [], []
    for _ in range(5):
        s = a + b
        a, b, t = 0.6 * a - 0.8 * b + 0.1 * s, 0.8 * a + 0.6 * b, t + (a * a).sum(1)
        bs.append(b)
        ts.append(t)
    got = evaluate(program, {"x": x}, {}, trace=True)
    assert len(got) == 5 and all(close(g, w) for g, w in zip(got, bs))
    from dataclasses import replace
    scalar = evaluate(replace(program, output="t"), {"x": x}, {})  # a scalar state: one number per sample
    assert scalar.shape == (3,) and close(scalar, ts[-1])


def test_trace_and_steps(problem):
    D, x = problem
    program = compile_program(text_of("lista_cp.dp"))
    zs = evaluate(program, {"x": x}, {"D": D}, trace=True)
    assert len(zs) == 16 and all(z.shape == (4, 20) for z in zs)
    assert close(zs[-1], evaluate(program, {"x": x}, {"D": D}))
    assert close(zs[4], evaluate(program, {"x": x}, {"D": D}, steps=5))
    closed = evaluate(compile_program(text_of("kmeansnet.dp")), {"x": x[:, :3]}, {"C": D[:5, :3]}, trace=True)
    assert isinstance(closed, list) and len(closed) == 1 and closed[0].shape == (4, 5)


def test_learned_weights_given_per_layer(problem):
    """Untied weights: layer k uses W[k], S[k], theta[k]; layer 0 starts from z = 0 (soft(W[0] x, theta[0]))."""
    D, x = problem
    rng = np.random.default_rng(7)
    steps, (m, n) = 16, D.shape
    W = rng.standard_normal((steps, n, m)) / 3
    S = rng.standard_normal((steps, n, n)) / 5
    theta = rng.uniform(0.01, 0.1, steps)
    program = compile_program(text_of("lista.dp"))
    z = np.zeros((len(x), n))
    for k in range(6):
        z = soft(x @ W[k].T + z @ S[k].T, theta[k])
    got = evaluate(program, {"x": x}, {"D": D}, weights={"W": W, "S": S, "theta": theta}, steps=6)
    assert close(got, z)


# --- the atoms' numpy references ---------------------------------------------------------

def test_sparsemax_reference_is_the_simplex_projection():
    rng = np.random.default_rng(8)
    for _ in range(20):
        v = rng.standard_normal((7, 1)) * 2
        p = atoms.Sparsemax.reference(np, v)
        assert p.min() >= 0 and abs(p.sum() - 1) < 1e-12
        support = p[:, 0] > 0
        tau = (v[support] - p[support]).ravel()  # KKT: v_i - p_i = tau on the support, v_i <= tau off it
        assert np.ptp(tau) < 1e-12 and (v[~support] <= tau[0] + 1e-12).all()


def test_softss_reference_share_per_layer():
    """n = 10, p = 15, pmax = 35: k = 1, 3, 3 at layers 1, 2, 3 (shares 15, 30, 35 percent)."""
    v = np.arange(1.0, 11.0).reshape(-1, 1) * np.array([[1], [-1]] * 5)
    shrunk = soft(v, 0.5)
    for layer, k in [(1, 1), (2, 3), (3, 3)]:
        out = atoms.SoftSS.reference(np, v, 0.5, 15, 35, layer)
        unshrunk = np.abs(v[:, 0]) > 10 - k
        assert close(out[unshrunk], v[unshrunk]) and close(out[~unshrunk], shrunk[~unshrunk])


def test_analytic_reference_has_unit_diagonal():
    D = dictionary(8, 16, seed=9)
    W = atoms.Analytic.reference(np, D)
    assert W.shape == D.shape and close(np.diag(W.T @ D), np.ones(16))


def test_no_rule_is_an_error():
    a = sp.Symbol("a", real=True)
    with pytest.raises(ReferenceError, match="no reference rule for sin"):
        value_of(sp.sin(a), {"a": 1.0})

    class Shrink(atoms.Soft):  # a new atom must register its own rule, not inherit soft's
        pass
    v = sp.MatrixSymbol("v", 3, 1)
    with pytest.raises(ReferenceError, match="no reference rule for Shrink"):
        value_of(Shrink(v, a), {"v": np.ones((3, 1)), "a": 0.5})


def test_random_weights_must_be_given(problem):
    D, x = problem
    text = text_of("sc2net.dp").replace("gates(init = ista)", "gates")  # xavier-initialised gates
    program = compile_program(text)
    with pytest.raises(ValueError, match="random"):
        evaluate(program, {"x": x}, {"D": D})
    with pytest.raises(ValueError, match="unknown param"):
        evaluate(program, {"x": x}, {"D": D, "E": D})


# --- differential: the generated modules against the reference ------------------------

def _data(program, rng):
    """Random float64 params and inputs for the examples' shapes."""
    sizes = {"m": 5, "n": 8, "d": 3, "k": 6}
    shape = lambda d: tuple(sizes.get(s, int(s) if s.isdigit() else 4) for s in d.shape)  # noqa: E731
    params = {d.name: rng.standard_normal(shape(d)) / 2 for d in program.of_kind("param")}
    inputs = {d.name: rng.standard_normal((3,) + shape(d)) for d in program.of_kind("input")}
    return params, inputs


def _perturb(net, program, rng):
    """New values for every learned weight (thresholds kept positive), set in the module and returned."""
    weights = {}
    with torch.no_grad():
        for d in program.of_kind("weight"):
            w = getattr(net, d.name)
            for copy in (w if isinstance(w, torch.nn.ParameterList) else [w]):  # per layer, one at a time
                copy.add_(0.1 * torch.as_tensor(rng.standard_normal(tuple(copy.shape))))
                if not d.shape:
                    copy.abs_()
            weights[d.name] = layers(net, d.name).numpy().copy()
    return weights


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.dp")), ids=lambda p: p.stem)
def test_example_modules_agree_with_reference(path: pathlib.Path):
    rng = np.random.default_rng(10)
    text = path.read_text()
    program = compile_program(text, path.name)
    params, inputs = _data(program, rng)
    bound = {dim for d in program.of_kind("param") for dim in d.shape}
    dims = {dim: int(np.shape(inputs[d.name])[1 + i]) for d in program.of_kind("input")
            for i, dim in enumerate(d.shape) if dim not in bound}  # rpca.dp: its dims come with X
    net = build(text, path.name)(**{k: torch.tensor(v) for k, v in params.items()}, **dims)
    args = [torch.tensor(inputs[d.name]) for d in program.of_kind("input")]
    for trained in (False, True):  # the weights at their initial values, then moved as training would
        weights = _perturb(net, program, rng) if trained else None
        with torch.no_grad():
            got = net(*args, trace=True)
        want = evaluate(program, inputs, params, weights=weights, trace=True, dims=dims)
        assert len(got) == len(want)
        # learned RBF functions (tnrd.dp's learn influence): the module sums the 10 centres nearest each value,
        # the reference all of them, within 7.5e-6 max|W| of each other: 1e-5 of the values there
        # (of max|W|, not of the output: W's scale bounds the error too)
        rbf = [d.name for d in program.of_kind("weight") if isinstance(d.value, atoms.RbfFit)]
        scale = max([1.0] + [float(layers(net, n).abs().max()) for n in rbf])
        errs = [float(np.abs(g.numpy() - w).max()) for g, w in zip(got, want)]
        assert all(e < (1e-5 * max(scale, np.abs(w).max()) if rbf else TOL) for e, w in zip(errs, want)), \
            (path.name, max(errs))
    read = {s.name for s in program.objective.free_symbols} if program.objective is not None else set()
    if program.objective is not None and {d.name for d in program.states} & read == {program.output}:
        states = {program.output: got[-1].numpy()}
        with torch.no_grad():
            objective = net.objective(*args, got[-1])
        assert close(objective.numpy().reshape(-1), evaluate_objective(program, inputs, states, params))


HEAD = "network P\ndims m, n\ninput x : R[m]\nparam D : R[m, n]\nhyper lam = 0.3\nlet L = opnorm(D)^2\n" \
       "var z : R[n] = 0\n"
# One small program per atom or pass: the module and the reference must agree on each.
PROGRAMS = {
    "soft": "update z <- soft(z - D.T @ (D @ z - x) / L, lam / L)",
    "hard": "update z <- hard(z - D.T @ (D @ z - x) / L, lam)",
    "softpos": "update z <- softpos(z - D.T @ (D @ z - x) / L, lam / L)",
    "clamp": "update z <- clamp(z - D.T @ (D @ z - x) / L, -0.2, 0.3)",
    "elementwise": "update z <- relu(D.T @ x - z) + sigmoid(z) + tanh(z) + exp(-z) + log(abs(z) + 1)",
    "softmax": "update z <- softmax(D.T @ x + z)",
    "sparsemax": "update z <- sparsemax(D.T @ x + z)",
    "normalize": "update z <- normalize(D.T @ x + z)",
    "norms": "update z <- z / (1 + sqnorm(z) + norm1(z) + norm2(z) + norm0(z)) + D.T @ x",
    "sum_dot_sqrt": "update z <- (sum(z) + x @ x) * z / 10 + sqrt(1 + sqnorm(z)) * D.T @ x",
    "scalar_atoms": "update z <- (relu(sum(z)) + exp(-sqnorm(z)) + tanh(sum(z)) + abs(sum(z))) * D.T @ x / 10",
    "broadcast": "update z <- 1 - z / 2 + D.T @ (D @ (z + 1) - x) / L",
    "eye": "update z <- (eye(n) - D.T @ D / L) @ z + D.T @ x / L",
    "v_at_A": "update z <- (x - D @ z) @ D / L + z",
    "solve": "let A = D.T @ D + eye(n)\nupdate z <- solve(A, D.T @ x) + z / 2",
    "rows": "update z <- z / 2 + rowsqnorm(D.T) + rownormalize(D.T) @ x",
    "softss": "update z <- softss(z - D.T @ (D @ z - x) / L, lam / L, 20, 50)",
    "analytic": "let W = analytic(D)\nupdate z <- soft(z - W.T @ (D @ z - x), lam / L)",
    "output_temporary": "update {\n  let v = z - D.T @ (D @ z - x) / L\n  z <- soft(v, lam / L)\n}\noutput v",
    "scalar_state": "var t : R = 1\nupdate {\n  z <- soft(z - D.T @ (D @ z - x) / L, lam / (L * t))\n  t <- t + 1\n}",
    "fista_learned": "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\nderive fista\nlearn weights tied",
    "nonneg": "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\nsubject to z >= 0\nderive proxgrad",
    "box": "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\nsubject to z in box(-0.1, 0.2)\nderive proxgrad",
    "half_box": "minimize 0.5 * sqnorm(x - D @ z)\nsubject to z <= 0.1\nderive proxgrad",
    "simplex": "minimize 0.5 * sqnorm(x - D @ z)\nsubject to z in simplex\nderive proxgrad",
    "norm0": "minimize 0.5 * sqnorm(x - D @ z) + lam * norm0(z)\nderive proxgrad\nlearn weights",
    "elastic_net": "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z) + 0.2 * sqnorm(z)\nderive proxgrad",
    "gd": "minimize 0.5 * sqnorm(x - D @ z + 1) + lam * sqnorm(z - 1) + lam * sum(z)\nderive gd(step = 1/L)",
    "closed_ridge": "minimize 0.5 * sqnorm(x - D @ z) + lam * sqnorm(z - 1)\nderive closed",
    # z * z is sympy's HadamardPower(z, 2), G @ G its MatPow(G, 2): both once had no torch rule
    "hadamard_square": "update z <- z * z / 10 + D.T @ x",
    "matrix_square": "let G = D.T @ D\nupdate z <- G @ G @ z / L^2 + D.T @ x",
}
KMEANS = "network K\ndims d, k\ninput x : R[d]\nparam C : R[k, d]\nhyper tau = 0.5\nvar s : R[k]\n" \
         "minimize sum_j s[j] * {cost}\nsubject to s in {set}\nrelax {set} -> {relax}\nderive closed\n"
CLOSED = {
    "km_sparsemax": KMEANS.format(cost="sqnorm(x - C[j])", set="onehot", relax="sparsemax(tau)"),
    "km_sigmoid": KMEANS.format(cost="sqnorm(x - C[j])", set="binary", relax="sigmoid(tau)"),
    "km_per_index": KMEANS.format(cost="norm1(x - C[j])", set="onehot", relax="softmax(tau)"),
    "km_learn_weights": KMEANS.format(cost="sqnorm(x - C[j])", set="onehot", relax="softmax(tau)") +
    "learn weights\n",
}


def _agree(text, hypers=None):
    rng = np.random.default_rng(11)
    program = compile_program(text)
    params, inputs = _data(program, rng)
    net = build(text)(**{k: torch.tensor(v) for k, v in params.items()}, **(hypers or {}))
    args = [torch.tensor(inputs[d.name]) for d in program.of_kind("input")]
    with torch.no_grad():
        got = net(*args, trace=True)
    want = evaluate(program, inputs, params, hypers=hypers, trace=True)
    assert all(close(g.numpy(), w) for g, w in zip(got, want))
    if program.objective is not None:
        with torch.no_grad():
            objective = net.objective(*args, got[-1]).numpy().reshape(-1)
        assert close(objective, evaluate_objective(program, inputs, {program.output: got[-1].numpy()}, params,
                                                   hypers))


@pytest.mark.parametrize("body", PROGRAMS.values(), ids=PROGRAMS.keys())
def test_atom_programs_agree_with_reference(body):
    _agree(HEAD + body + ("\nunroll 4\n" if "closed" not in body else "\n"))


@pytest.mark.parametrize("text", CLOSED.values(), ids=CLOSED.keys())
def test_closed_forms_agree_with_reference(text):
    _agree(text)


def test_soft_with_negative_threshold():
    """A learned threshold can go below 0: soft is defined as relu(v - t) - relu(-v - t) there too
    (2v where |v| < -t), the same in the module and the reference."""
    _agree(HEAD + "update z <- soft(z - D.T @ (D @ z - x) / L, lam)\nunroll 2\n", hypers={"lam": -0.3})


def test_every_atom_registers_a_reference():
    """One atom, one place: each atom class in atoms.py states its numpy reference (None: must be given)."""
    bases = (atoms.ScalarAtom, atoms.VectorAtom, atoms.InitialValue)
    classes = [c for c in vars(atoms).values() if isinstance(c, type) and issubclass(c, sp.Basic)
               and c.__module__ == atoms.__name__ and c not in bases]
    assert len(classes) > 30
    assert [c.__name__ for c in classes if "reference" not in vars(c)] == []


def test_dims_no_value_fixes_are_given():
    """k sizes only a var: the module takes it as a keyword, the reference in dims=."""
    program = compile_program("network P\ndims m, k\ninput x : R[m]\nvar z : R[k] = 1\nvar y : R[m] = 0\n"
                              "update {\n  y <- x * sum(z)\n  z <- z / 2\n}\nunroll 3\noutput y\n")
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="dims k"):
        evaluate(program, {"x": x})
    assert close(evaluate(program, {"x": x}, dims={"k": 4}), x)  # y = x * sum(z) with z = 4 * 0.25 ones
