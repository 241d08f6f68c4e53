"""Loop-invariant hoisting (backends/torch/hoist.py::hoist_invariants): what every layer computes the same (a
matrix product, an atom or operator call reading inputs, params and constants, nothing per layer) is computed
once before the layers, whatever the learn form. Checked on the plan, on the generated source, by counting the
calls the module makes, and in float64 against numpy loops written here."""
import re

import numpy as np
import pytest
import sympy as sp
import torch

from conftest import EXAMPLES, admm_numpy, conv_matrix, deconv_text, derivative_filters, hqs_numpy, soft
from dpc import atoms, graph
from dpc.api import compile_with_program
from dpc.backends.torch import plan as planner
from dpc.backends.torch.emit import write_module
from dpc.backends.torch.plan import plan_module

ISTA_GRAM = """\
network ISTAGram
dims m, n
input y : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
let G = D.T @ D
var z : R[n] = 0
update z <- soft(z - (G @ z - D.T @ y) / L, lam / L)
unroll 7
output z
"""

# opnorm(D) written in the update: an atom call of a param alone, hoisted unbatched (one value, no batch axis)
ISTA_INLINE = """\
network ISTAInline
dims m, n
input y : R[m]
param D : R[m, n]
hyper lam = 0.1
var z : R[n] = 0
update z <- soft(z - (D.T @ (D @ z) - D.T @ y) / opnorm(D)^2, lam)
unroll 6
output z
"""


def program_of(text, name="prog.dp"):
    return compile_with_program(text, name).program


def module_of(program, name="prog.dp"):
    """The generated module's source and its class (exec'd here: the module just generated)."""
    source = write_module(plan_module(program), name)
    namespace = {"__name__": "dpc_test_hoisting"}
    exec(compile(source, name, "exec"), namespace)  # noqa: S102
    (cls,) = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
              and v.__module__ == "dpc_test_hoisting"]
    return source, cls, namespace


def forward_source(source):
    start = source.index("    def forward(self")
    return source[start:source.index("\n    def ", start + 1)]


def ista_numpy(D, y, lam, layers, L):
    """ISTA from z = 0, every layer's z (one sample)."""
    z, out = np.zeros(D.shape[1]), []
    for _ in range(layers):
        z = soft(z - (D.T @ (D @ z) - D.T @ y) / L, lam / L)
        out.append(z)
    return out


# --- an untrained ISTA-like unroll ---------------------------------------------------------------------------

def test_untrained_ista_hoists_dty_and_equals_a_numpy_ista_loop():
    program = program_of(ISTA_GRAM)
    assert program.tied is None and not any(d.per_layer for d in program.decls)  # no learn at all
    plan = plan_module(program)
    (name, expr), = plan.hoisted
    assert name == "DTy" and str(expr) == "D.T*y"
    assert "DTy" in graph.names_in(plan.first.assigns[0][1])  # the folded first layer reads it too
    assert "y" not in {s.name for _, e in plan.step.equations() for s in e.free_symbols}
    source, cls, _ = module_of(program)
    body = forward_source(source)
    assert body.count("y @ self.D") == 1                       # D.T @ y: once per call, before the layers
    assert body.index("DTy = y @ self.D") < body.index("for k in range(1, steps):")
    rng = np.random.default_rng(4)
    D, y = rng.standard_normal((8, 12)) / 3, rng.standard_normal((3, 8))
    got = cls(D=torch.tensor(D), lam=0.05)(torch.tensor(y), trace=True)
    L = np.linalg.norm(D, 2) ** 2
    assert len(got) == 7
    for s in range(3):
        for g, want in zip(got, ista_numpy(D, y[s], 0.05, 7, L)):
            np.testing.assert_allclose(g[s].numpy(), want, rtol=0, atol=1e-12)
    assert np.abs(got[-1].numpy()).max() > 0.1  # the layers move z


def test_an_atom_of_params_alone_is_hoisted_unbatched_and_the_module_equals_numpy():
    program = program_of(ISTA_INLINE)
    plan = plan_module(program)
    assert [n for n, _ in plan.hoisted] == ["opnorm_D", "DTy"]
    source, cls, _ = module_of(program)
    body = forward_source(source)
    assert body.count("torch.linalg.matrix_norm(self.D, ord=2)") == 1 and body.count("y @ self.D") == 1
    rng = np.random.default_rng(5)
    D, y = rng.standard_normal((6, 9)) / 2, rng.standard_normal((4, 6))
    got = cls(D=torch.tensor(D), lam=0.02)(torch.tensor(y), trace=True)
    L = np.linalg.norm(D, 2) ** 2
    for s in range(4):
        z, want = np.zeros(9), []
        for _ in range(6):
            z = soft(z - (D.T @ (D @ z) - D.T @ y[s]) / L, 0.02)
            want.append(z)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g[s].numpy(), w, rtol=0, atol=1e-12)


def test_a_value_only_the_first_layer_reads_stays_in_the_first_layer():
    """Derived ISTA from z = 0: the folded first layer is soft(D.T @ x / L); the later layers read D.T @ (D z -
    x), where D.T @ x is no subexpression. Nothing is hoisted, and the first layer keeps its product."""
    text = re.sub(r"(?m)^learn\b.*$", "", (EXAMPLES / "lista.dp").read_text())
    plan = plan_module(program_of(text, "ista.dp"))
    assert plan.hoisted == () and plan.first is not None
    assert {"D", "x"} <= graph.names_in(plan.first.assigns[0][1])


# --- per-layer values are never hoisted -----------------------------------------------------------------------

def test_a_per_layer_param_is_never_hoisted():
    """learn D untied: D.T @ y reads layer k's D, G and L are lets of it: nothing is the same in every layer."""
    plan = plan_module(program_of(ISTA_GRAM + "learn D untied\n"))
    assert plan.per_layer == ("D",) and plan.hoisted == ()
    assert {"D", "y"} <= {s.name for _, e in plan.step.equations() for s in e.free_symbols}


def test_a_per_layer_hyper_stays_in_the_loop_and_the_rest_is_hoisted():
    program = program_of(ISTA_GRAM + "learn lam untied\n")
    plan = plan_module(program)
    assert plan.per_layer == ("lam",) and [n for n, _ in plan.hoisted] == ["DTy"]
    source, cls, _ = module_of(program)
    assert "lam[k]" in forward_source(source)
    rng = np.random.default_rng(6)
    D, y = rng.standard_normal((8, 12)) / 3, rng.standard_normal((2, 8))
    net = cls(D=torch.tensor(D), lam=0.05)
    got = net(torch.tensor(y), trace=True)
    for s in range(2):
        for g, want in zip(got, ista_numpy(D, y[s], 0.05, 7, np.linalg.norm(D, 2) ** 2)):
            np.testing.assert_allclose(g[s].detach().numpy(), want, rtol=0, atol=1e-12)


def test_untied_weights_stay_one_batched_product_and_nothing_is_hoisted():
    """LISTA (learn weights untied): W_k @ x is every layer's own, batched over the layers (all_layers);
    what the old guard (tied learn forms only) protected."""
    plan = plan_module(program_of((EXAMPLES / "lista.dp").read_text(), "lista.dp"))
    assert plan.hoisted == () and list(plan.all_layers) == ["Wx"]


def _hoisting_examples():
    return sorted(p.stem for p in EXAMPLES.glob("*.dp"))


@pytest.mark.parametrize("name", _hoisting_examples())
def test_no_example_hoists_a_per_layer_value_a_state_or_the_layer(name):
    """Every hoisted value reads no state, no per-layer value or let of one, no layer number, no batched
    product of every layer (nothing whose size grows with the layers), and is named the same every time."""
    program = program_of((EXAMPLES / f"{name}.dp").read_text(), f"{name}.dp")
    plan = plan_module(program)
    varying = {d.name for d in program.states} | set(plan.per_layer) | set(plan.layer_lets)
    for hoisted_name, expr in plan.hoisted:
        assert not graph.names_in(expr) & varying, (hoisted_name, expr)
        assert not expr.has(atoms.LAYER)
        assert not any(type(node).__name__ == "AllLayers" for node in sp.preorder_traversal(expr))
    assert plan_module(program).hoisted == plan.hoisted


ADMM_CG = """network Deconv
dims   m, t, s, h, w
input  f : R[h, w]
param  k : R[s, s]
param  D : R[m, t, t]
hyper  lam = 0.1
var    u : R[h, w] = f
minimize 0.5*sqnorm(conv(k, u, pad = circular) - f) + lam*norm1(conv(D, u, pad = reflect))
derive admm(rho = 0.7, solve = cg(iters = 30))
unroll 4
output u
"""


def test_a_name_bound_in_the_step_is_never_hoisted():
    """ADMM's u-step by conjugate gradients on the map p -> conv(k, p).T conv(k, p) + ..., written on the
    placeholder _cg_u: conv(k, _cg_u) reads only k and the placeholder, yet it is a new value at every CG
    direction (hoisting it was a compile error, 'no binding for _cg_u'). The right-hand side's convT(k, f) is
    hoisted; the module still equals numpy ADMM with dense solves."""
    program = program_of(ADMM_CG)
    plan = plan_module(program)
    assert [n for n, _ in plan.hoisted] == ["convT_kf"]
    assert not any(graph.names_in(e) & {"_cg_u"} for _, e in plan.hoisted)
    _, cls, _ = module_of(program)
    rng = np.random.default_rng(9)
    k = rng.random((3, 3))
    k /= k.sum()
    D = derivative_filters()
    f = rng.standard_normal((2, 6, 7))
    got = cls(k=torch.tensor(k), D=torch.tensor(D))(torch.tensor(f), trace=True)
    Km = conv_matrix(k, 6, 7, "circular")
    Dm = np.vstack([conv_matrix(d, 6, 7, "reflect") for d in D])
    for s in range(2):
        for g, u in zip(got, admm_numpy(f[s], Km, Dm, 0.1, 0.7, len(got))):
            np.testing.assert_allclose(g[s].numpy().ravel(), u.ravel(), rtol=0, atol=1e-8)


# --- the deconvolution: convT(k, f) once ----------------------------------------------------------------------

def counting_conv_t(namespace, kernel_calls):
    """Replace the module's _conv_t by one that records which filter bank each call used."""
    conv_t = namespace["_conv_t"]

    def counted(K, v, pad):
        kernel_calls.append(K)
        return conv_t(K, v, pad)

    namespace["_conv_t"] = counted


@pytest.mark.parametrize("learn", [False, True])
def test_deconvolution_computes_the_blur_adjoint_of_f_once(learn):
    program = program_of(deconv_text(learn), "deconv.dp")
    plan = plan_module(program)
    (name, expr), = plan.hoisted
    assert name == "convT_kf" and graph.names_in(expr) == {"k", "f"}
    source, cls, namespace = module_of(program, "deconv.dp")
    body = forward_source(source)
    assert body.count("_conv_t(self.k, f, 'circular')") == 1
    assert body.index("convT_kf = _conv_t(self.k, f, 'circular')") < body.index("for k1 in range(steps):")
    assert body.count("_conv_t(self.D, w1, 'circular')") == 1  # the w-step's adjoint: every layer's own
    rng = np.random.default_rng(7)
    k = rng.random((5, 5))
    k /= k.sum()
    net = cls(k=torch.tensor(k), D=torch.tensor(derivative_filters()))
    calls = []
    counting_conv_t(namespace, calls)
    f = 255 * rng.random((2, 8, 9))
    got = net(torch.tensor(f), trace=True)
    assert len(got) == 8
    assert sum(K is net.k for K in calls) == 1 and sum(K is net.D for K in calls) == 8
    if not learn:  # classical HQS: numpy, dense solves
        Dm = np.vstack([conv_matrix(d, 8, 9, "circular") for d in derivative_filters()])
        for s in range(2):
            for g, want in zip(got, hqs_numpy(f[s], conv_matrix(k, 8, 9, "circular"), Dm, 0.4, 0.02, 2, 8)):
                np.testing.assert_allclose(g[s].numpy(), want, rtol=0, atol=1e-12 * np.abs(want).max())
        assert np.abs(got[-1].numpy() - f).max() > 1


def test_hoisted_deconvolution_equals_the_module_written_without_hoisting(monkeypatch):
    """The learned-shrinkage network (RBF shrinkage per stage) as generated before hoisting (the planner's
    hoisting turned off) and now: the same every stage, in float64, with the same weights."""
    program = program_of(deconv_text(True), "deconv.dp")
    _, hoisted_cls, _ = module_of(program, "deconv.dp")
    monkeypatch.setattr(planner, "hoist_invariants", lambda p, ns, first, step, varying: (first, step, []))
    old_source, old_cls, _ = module_of(program, "deconv.dp")
    assert forward_source(old_source).count("_conv_t(self.k, f, 'circular')") == 1
    assert "convT_kf" not in old_source  # it was in the loop
    rng = np.random.default_rng(8)
    k = rng.random((5, 5))
    k /= k.sum()
    args = dict(k=torch.tensor(k), D=torch.tensor(derivative_filters()))
    new, old = hoisted_cls(**args), old_cls(**args)
    with torch.no_grad():  # trained-looking weights: move them away from the fit, the same in both
        for a, b in zip(new.psi, old.psi):
            a.add_(torch.tensor(rng.standard_normal(tuple(a.shape))))
            b.copy_(a)
    f = torch.tensor(255 * rng.random((3, 10, 7)))
    with torch.no_grad():
        got, want = new(f, trace=True), old(f, trace=True)
    assert len(got) == len(want) == 8
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=1e-12 * float(w.abs().max()))


def test_the_speed_script_smoke_runs(capsys):
    """benchmarks/deconv_hoist.py --quick: both modules built, the same output, timed."""
    from conftest import load_benchmark
    threads = torch.get_num_threads()
    try:
        load_benchmark("deconv_hoist").main(["--quick"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "with hoisting: _conv_t(self.k, f, 'circular') once, before the stages" in out
    assert "without hoisting: _conv_t(self.k, f, 'circular') in every stage" in out
    differ = float(re.search(r"outputs differ by (\S+) \(relative\)", out).group(1))
    assert differ < 1e-6 and out.count("with / without") == 2


@pytest.mark.parametrize("loop", ["unroll 7", "unroll until(tol = 1e-9, max = 3000)\nbackward implicit"])
def test_gradients_flow_through_what_was_hoisted(monkeypatch, loop):
    """learn D: D.T @ y is hoisted (D is one tied parameter) and D's gradient reaches it, unrolled and through
    the implicit backward of a fixed point: the same output and gradient as the module without hoisting."""
    text = ISTA_GRAM.replace("unroll 7", loop) + "learn D\n"
    program = program_of(text)
    assert [n for n, _ in plan_module(program).hoisted] == ["DTy"]
    _, hoisted_cls, _ = module_of(program)
    monkeypatch.setattr(planner, "hoist_invariants", lambda p, ns, first, step, varying: (first, step, []))
    old_source, old_cls, _ = module_of(program)
    assert "DTy" not in old_source
    rng = np.random.default_rng(10)
    D, y = rng.standard_normal((6, 10)) / 2, torch.tensor(rng.standard_normal((3, 6)))
    results = []
    for cls in (hoisted_cls, old_cls):
        net = cls(D=torch.tensor(D), lam=0.5)
        out = net(y)
        out.square().sum().backward()
        results.append((out.detach().numpy(), net.D.grad.numpy()))
    (out, grad), (old_out, old_grad) = results
    np.testing.assert_allclose(out, old_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad, old_grad, rtol=0, atol=1e-12 * np.abs(old_grad).max())
    assert np.abs(grad).max() > 1e-3
