"""Issue 21: convexity and step conditions derived (item 1), and the compiler-side probe defects: each
fixed at the mechanism that let it through, each with its test here."""
from __future__ import annotations

import glob

import pytest

from dpc.api import compile_with_program
from dpc.errors import DpcError
from dpc.pipeline import compile_program
from dpc.requirements import learned_requirements

HEAD = """network P
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
"""


def program(*lines, head=HEAD):
    return head + "\n".join(lines) + "\n"


def error(text, overrides=None) -> DpcError:
    with pytest.raises(DpcError) as e:
        compile_program(text, "p.dp", overrides)
    return e.value


def where(err: DpcError):
    d = err.diagnostics[0]
    return d.span.line, d.span.column, d.message, d.hint


def warnings_of(text, overrides=None):
    return compile_program(text, "p.dp", overrides).warnings


def torch_or_skip():
    return pytest.importorskip("torch")


# --- item 1: convexity ------------------------------------------------------------------------------

# examples whose objective is not convex by design, and why (derive gd is meant for them: no warning)
NOT_CONVEX = {"examples/tnrd.dp": "TNRD's Lorentzian penalty of filter responses (a field of experts)"}


def test_every_example_is_convex_and_warning_free():
    for path in sorted(glob.glob("examples/*.dp")):
        text = open(path).read()
        p = compile_program(text, path)
        assert p.warnings == (), path
        if p.convexity is not None and "norm0" not in text and path not in NOT_CONVEX:
            assert p.convexity.startswith("the objective is convex"), (path, p.convexity)
        if path in NOT_CONVEX:  # stated, not claimed convex, and derived by gradient descent
            assert not p.convexity.startswith("the objective is convex") and "derive gd" in text, path


def test_every_example_loads_runs_and_trains_without_a_warning():
    """Each example through dpc.load (which issues the program's warnings as DpcWarning), constructed from
    seeded random params, forward and backward on a batch of 4, with every warning an error (a fixed-point
    loop stopping at max, a forward check, a DpcWarning)."""
    import inspect
    import warnings

    import numpy as np

    import dpc
    torch = torch_or_skip()
    paths = sorted(glob.glob("examples/*.dp"))
    assert len(paths) >= 20
    for path in paths:
        with open(path, encoding="utf-8") as f:
            p = compile_program(f.read(), path)
        sizes = {d: 6 + 2 * i for i, d in enumerate(p.dims)}
        rng = np.random.default_rng(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cls = dpc.load(path)
            args = {d.name: torch.tensor(rng.standard_normal(tuple(sizes[s] for s in d.shape))
                                         / np.sqrt(sizes[d.shape[0]])) for d in p.of_kind("param")}
            args.update({d: sizes[d] for d in p.dims if d in inspect.signature(cls).parameters})
            net = cls(**args)
            inputs = [torch.tensor(rng.standard_normal((4,) + tuple(sizes[s] for s in d.shape)))
                      for d in p.of_kind("input")]
            out = net(*inputs)
            assert torch.isfinite(out).all(), path
            if out.requires_grad:
                out.square().sum().backward()


def test_concave_objective_is_a_warning_at_the_term():
    text = program("minimize -0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 1/L)", "unroll 3")
    p = compile_program(text, "p.dp")
    (w,) = p.warnings
    assert w.severity == "warning" and (w.span.line, w.span.column) == (8, 10)
    assert "-0.5*sqnorm(x - D @ z) is concave" in w.message and "derive proxgrad" in w.message
    assert w.format(text).startswith("p.dp:8:10: warning: the objective is not convex in z")
    assert "not convex" in p.convexity
    # the hint, applied literally, gives a convex program with no warning
    fixed = text.replace("-0.5 * sqnorm(x - D @ z)", w.hint.split("write ")[1].split(" to ")[0])
    assert compile_program(fixed, "p.dp").warnings == ()


def test_gd_on_a_non_convex_energy_states_it_without_a_warning():
    text = program("minimize -0.5 * sqnorm(x - D @ z) + sum(logcosh(D @ z))", "derive gd(step = 0.1)", "unroll 3")
    p = compile_program(text, "p.dp")
    assert p.warnings == () and "not convex" in p.convexity


def test_dcp_rules_from_the_declarations():
    from dpc.convexity import AFFINE, CONCAVE, CONVEX, compose
    assert compose("convex", None, AFFINE) == CONVEX
    assert compose("convex", "increasing", CONVEX) == CONVEX
    assert compose("convex", "increasing", CONCAVE) is None
    assert compose("concave", "increasing", CONCAVE) == CONCAVE     # log of a concave
    assert compose("affine", "increasing", CONVEX) == CONVEX       # sum of a convex
    unknown = program("minimize sum(log1p(square(D @ z)))", "derive gd(step = 0.1)", "unroll 3")
    assert "unknown" in compile_program(unknown, "p.dp").convexity


def test_check_and_explain_state_convexity(tmp_path, capsys):
    from dpc.cli import main
    path = tmp_path / "c.dp"
    path.write_text(program("minimize -0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 1/L)",
                            "unroll 3"))
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "not convex in z: -0.5*sqnorm(x - D @ z) is concave" in out
    assert ":8:10: warning: " in err and "^^^^" in err
    assert main(["explain", str(path)]) == 0
    assert "the objective is not convex in z" in capsys.readouterr().out


# --- item 1: step conditions ------------------------------------------------------------------------

def test_step_10_on_the_lasso_is_refused_at_construction_naming_the_bound():
    torch = torch_or_skip()
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 10)", "unroll 3")
    compiled = compile_with_program(text, "p.dp")
    assert compiled.program.warnings == ()
    (req,) = [r for r in compiled.program.requirements if "2/L" in r.why]
    assert "opnorm(D)^2" in req.why and req.span.line == 9
    namespace = {}
    exec(compile(compiled.source, "<p>", "exec"), namespace)
    cls = namespace["P"]
    with pytest.raises(ValueError, match=r"step 10 must be below 2/L, L = opnorm\(D\)\^2"):
        cls(D=torch.randn(5, 8, dtype=torch.float64))
    cls(D=torch.eye(5, 8, dtype=torch.float64) * 0.1)  # 10*opnorm(D)^2 = 0.1 < 2: accepted


STEP = HEAD.replace("input x : R[m]", "input x : R[n]")


@pytest.mark.parametrize("method, step, outcome", [
    ("proxgrad", "1.5", "warning"), ("proxgrad", "2", "error"), ("proxgrad", "1", None),
    ("fista", "1.5", "error"), ("fista", "1", None), ("gd", "3", "error")])
def test_step_against_a_known_lipschitz_constant(method, step, outcome):
    penalty = "" if method == "gd" else " + lam * norm1(z)"
    text = program(f"minimize 0.5 * sqnorm(x - z){penalty}", f"derive {method}(step = {step})", "unroll 3",
                   head=STEP)
    if outcome == "error":
        line, column, message, hint = where(error(text))
        assert (line, column) == (9, len(f"derive {method}(") + 1)
        assert f"step {step} is" in message and "L = 1" in message
        assert compile_program(text.replace(f"derive {method}(step = {step})", hint.split("`")[1]), "p.dp")
        return
    warnings = warnings_of(text)
    if outcome is None:
        assert warnings == ()
    else:
        (w,) = warnings
        assert "above 1/L: step*L = 1.5" in w.message and w.span.line == 9


def test_pdhg_steps_past_the_condition():
    torch = torch_or_skip()
    text = program("param G : R[m, n]", "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(G @ z)",
                   "derive pdhg(tau = 5, sigma = 5)", "unroll 3")
    compiled = compile_with_program(text, "p.dp")
    namespace = {}
    exec(compile(compiled.source, "<p>", "exec"), namespace)
    with pytest.raises(ValueError, match=r"tau\*sigma\*opnorm\(K\)\^2 < 1, tau = 5, sigma = 5, opnorm\(K\) = opnorm\(G\)"):
        namespace["P"](D=torch.randn(5, 8, dtype=torch.float64), G=torch.randn(5, 8, dtype=torch.float64))
    identity = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive pdhg(tau = 5, sigma = 5)",
                       "unroll 3")
    line, column, message, hint = where(error(identity))
    assert line == 9 and "tau*sigma*opnorm(K)^2 = 25 with tau = 5, sigma = 5" in message
    assert compile_program(identity.replace("derive pdhg(tau = 5, sigma = 5)", "derive pdhg"), "p.dp")


@pytest.mark.parametrize("rho", ["0", "-1"])
def test_admm_rho_not_positive(rho):
    tv = program("param Dd : R[m, n]", "minimize 0.5 * sqnorm(z) - x @ (Dd @ z) + lam * norm1(Dd @ z)",
                 f"derive admm(rho = {rho})", "unroll 3")
    line, column, message, _ = where(error(tv))
    assert (line, column) == (10, len("derive admm(rho = ") + 1) and "rho must be finite and > 0" in message
    hyper = tv.replace(f"derive admm(rho = {rho})", "derive admm(rho = r)").replace("hyper lam = 0.1",
                                                                                    f"hyper lam = 0.1\nhyper r = {rho}")
    line, _, message, _ = where(error(hyper))
    assert line == 6 and "r must be finite and > 0 (the ADMM penalty rho)" in message


def test_admm_learned_rho_not_positive_at_construction_and_in_forward():
    """A learned rho: the constructor refuses 0 and -1 (constrained or not), and forward refuses a raw rho that
    training (here: a write to the raw parameter, constrain=False) drove to -1, naming the value."""
    torch = torch_or_skip()
    tv = program("param Dd : R[m, n]", "hyper r = 1", "minimize 0.5 * sqnorm(z) - x @ (Dd @ z) + lam * norm1(Dd @ z)",
                 "derive admm(rho = r)", "unroll 3", "learn r")
    compiled = compile_with_program(tv, "p.dp")
    namespace = {}
    exec(compile(compiled.source, "<p>", "exec"), namespace)
    Dd = torch.diff(torch.eye(6, dtype=torch.float64), dim=0)  # m = 5, n = 6; HEAD's D is read by no layer
    D = torch.randn(5, 6, dtype=torch.float64)
    for rho in (0.0, -1.0):
        for constrain in (True, False):
            with pytest.raises(ValueError, match=rf"r must be finite and > 0 \(the ADMM penalty rho\), got {rho}"):
                namespace["P"](D=D, Dd=Dd, r=rho, constrain=constrain)
    net = namespace["P"](D=D, Dd=Dd, r=1.0, constrain=False)
    x = torch.randn(2, 5, dtype=torch.float64)
    assert torch.isfinite(net(x)).all()
    with torch.no_grad():
        net.r_raw.fill_(-1.0)
    with pytest.raises(ValueError, match=r"r must be finite and > 0 \(the ADMM penalty rho\), got -1.0 with the lea"):
        net(x)


# --- probe defects ----------------------------------------------------------------------------------

@pytest.mark.parametrize("second", ["derive fista(step = 1/L)", "backward implicit"])
def test_a_second_derive_or_backward_is_an_error(second):
    first = "backward unrolled" if second.startswith("backward") else "derive proxgrad(step = 1/L)"
    lines = ["minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)"]
    lines += ["derive proxgrad(step = 1/L)"] if first.startswith("backward") else [first]
    lines += ["unroll until(tol = 1e-6, max = 10)" if first.startswith("backward") else "unroll 3"]
    if first.startswith("backward"):
        lines.append(first)
    lines.append(second)
    line, _, message, hint = where(error(program(*lines)))
    assert line == 8 + len(lines) - 1 and "a second" in message
    assert hint == f"delete one of the two {second.split()[0]} lines"


def test_a_derive_option_reading_an_input_says_so():
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)",
                   "derive proxgrad(step = 1/(1+sqnorm(x)))", "unroll 3")
    line, column, message, hint = where(error(text))
    assert (line, column) == (9, 36)
    assert message.startswith("x is an input (a value per sample): the step is one value for the whole network")
    assert "undefined" not in message and "declare it with input" not in hint


def test_unroll_after_derive_closed():
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * sqnorm(z)", "derive closed", "unroll 5")
    line, _, message, hint = where(error(text))
    assert line == 10 and "derive closed gives the minimiser in one layer" in message
    assert hint == "delete the line `unroll 5`"
    assert compile_program(text.replace("unroll 5\n", ""), "p.dp")


def test_set_unroll_on_unroll_until_sets_its_max():
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 1/L)",
                   "unroll until(tol = 1e-6, max = 100)", "backward implicit")
    p = compile_program(text, "p.dp", {"unroll": "3"})
    assert p.until is not None and p.layers == 3 and p.backward == "implicit"


@pytest.mark.parametrize("method", ["closed", "admm(rho = 1)", "pdhg"])
def test_a_positive_constant_let_scales_a_ridge(method):
    penalty = "" if method == "closed" else " + lam * norm1(z)"
    text = program("let c = 2", f"minimize 0.5 * sqnorm(x - D @ z) + c * sqnorm(z){penalty}", f"derive {method}",
                   *(["unroll 3"] if method != "closed" else []))
    assert compile_program(text, "p.dp")


def test_learn_weights_linearises_the_threshold_inside_a_box_projection():
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "subject to z in box(-1, 1)",
                   "derive proxgrad(step = 1/L)", "unroll 3", "learn weights")
    p = compile_program(text, "p.dp")
    (_, value), = p.step.assigns
    from dpc.printing import math
    assert math(value).startswith("clamp(soft(") and math(value).endswith("S @ z, theta), -1, 1)")


def test_a_learned_value_no_layer_reads_is_a_warning_at_learn():
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 1/L)", "unroll 3",
                   "learn weights untied", "learn D, lam")
    (w,) = warnings_of(text)
    line, column, message, hint = w.span.line, w.span.column, w.message, w.hint
    assert (line, column) == (12, 7)
    assert "nothing the network computes reads D or lam" in message and "a learned value must reach" in message
    assert hint == "delete the line `learn D, lam`"
    assert compile_program(text.replace("learn D, lam\n", ""), "p.dp").warnings == ()
    # without learn weights the layers read D and lam: both reach the output
    kept = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 1/L)", "unroll 3",
                   "learn D, lam")
    assert compile_program(kept, "p.dp")
    # a read value beside an unread one: the hint keeps the read one
    mixed = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 1/L)", "unroll 3",
                    "learn weights", "learn D, lam", "output D @ z")
    (w,) = warnings_of(mixed)
    line, column, message, hint = w.span.line, w.span.column, w.message, w.hint
    assert (line, column) == (12, 10) and "reads lam (after" in message and hint == "write `learn D`"
    assert compile_program(mixed.replace("learn D, lam", "learn D"), "p.dp").warnings == ()


@pytest.mark.parametrize("width", ["-1", "d"])
def test_huber_width_checked_however_it_arrives(width):
    head = HEAD.replace("hyper lam = 0.1", "hyper lam = 0.1\nhyper d = -1")
    text = program(f"minimize sum(huber(x - D @ z, {width})) + lam * norm1(z)", "derive proxgrad", "unroll 3",
                   head=head)
    line, _, message, _ = where(error(text))
    assert "the width of huber(v, d)" in message and "-1" in message
    assert line == (9 if width == "-1" else 6)


def test_closed_form_with_a_learned_ridge_weight_checks_it_at_construction():
    torch = torch_or_skip()
    text = program("hyper mu = 0.5", "minimize 0.5 * sqnorm(x - D @ z) + mu * sqnorm(z)", "derive closed", "learn mu")
    compiled = compile_with_program(text, "p.dp")
    (req,) = learned_requirements(compiled.program)
    assert str(req.expr) == "2*mu" and req.relation == "positive"
    namespace = {}
    exec(compile(compiled.source, "<p>", "exec"), namespace)
    D = torch.randn(5, 8, dtype=torch.float64)
    for mu in (0.0, -1.0):
        with pytest.raises(ValueError, match="2\\*mu must be finite and > 0"):
            namespace["P"](D=D, mu=mu)
    namespace["P"](D=D, mu=0.5)


def test_pdhg_negative_ridge_weight_refused_at_construction():
    torch = torch_or_skip()
    text = program("hyper w = 1", "minimize 0.5 * sqnorm(x - D @ z) + w * sqnorm(z) + lam * norm1(D @ z)",
                   "derive pdhg", "unroll 3")
    namespace = {}
    exec(compile(compile_with_program(text, "p.dp").source, "<p>", "exec"), namespace)
    with pytest.raises(ValueError, match="keeps f convex"):
        namespace["P"](D=torch.randn(5, 8, dtype=torch.float64), w=-1.0)


def test_the_python_api_issues_the_programs_warnings(tmp_path):
    """dpc.load and dpc.compile_source issue each warning `dpc compile` prints (FILE:LINE:COL, the line, a
    caret, the hint) as a Python warning, DpcWarning, pointing at the caller; a program without warnings
    issues none."""
    import warnings
    import dpc
    from dpc.api import DpcWarning
    torch_or_skip()
    text = program("minimize 0.5 * sqnorm(x - z) + lam * norm1(z)", "derive proxgrad(step = 1.5)", "unroll 3",
                   head=STEP)
    path = tmp_path / "w.dp"
    path.write_text(text)
    for call in (lambda: dpc.load(str(path)), lambda: dpc.compile_source(text, str(path))):
        with pytest.warns(DpcWarning) as caught:
            call()
        (w,) = caught
        assert str(w.message).startswith(f"{path}:9:17: warning: derive proxgrad's step 1.5 is above 1/L")
        assert "\n    derive proxgrad(step = 1.5)\n                    ^^^^\n  hint: write `derive proxgrad`" \
            in str(w.message)
        assert w.filename == __file__
    (tmp_path / "ok.dp").write_text(text.replace("(step = 1.5)", ""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dpc.load(str(tmp_path / "ok.dp"))


# --- item 1: step conditions on learned values, checked in forward -----------------------------------

def _module(text, **kwargs):
    namespace = {}
    exec(compile(compile_with_program(text, "p.dp").source, "<p>", "exec"), namespace)
    return namespace["P"]


def _scaled(net, name, target, attribute=None):
    """Set the learned matrix `name` to a multiple of itself with opnorm(.)^2 = target, as an optimizer step
    would (in place), the norm from numpy."""
    import numpy as np
    torch = torch_or_skip()
    param = getattr(net, attribute or name)
    norm = np.linalg.norm(param.detach().numpy(), 2)
    with torch.no_grad():
        param.mul_(float(np.sqrt(target)) / norm)


def test_a_step_bound_on_a_learned_matrix_is_checked_in_forward():
    """derive proxgrad(step = 0.5) with learn D and no let L: forward computes no opnorm(D), its check
    estimates it (warm-started power iterations); a training step that takes 0.5*opnorm(D)^2 to 2 or past is
    the constructor's ValueError, naming the values and the bound; between 1 and 2 the constructor's warning,
    once; check_learned=False turns both off."""
    import warnings
    torch = torch_or_skip()
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 0.5)",
                   "unroll 3", "learn D").replace("let L = opnorm(D)^2\n", "")
    cls = _module(text)
    D = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 5, dtype=torch.float64)
    net = cls(D=D / torch.linalg.matrix_norm(D, ord=2))  # opnorm(D)^2 = 1: step*L = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(x)
        _scaled(net, "D", 3.9)  # step*L = 1.95: below 2/L, above 1/L: a warning
    with pytest.warns(RuntimeWarning, match=r"should be at most 1/L, L = opnorm\(D\)\^2.*got -0\.9500000.*learned "
                                            r"values as trained"):
        net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(x)  # once per module
    _scaled(net, "D", 4.1)  # step*L = 2.05
    with pytest.raises(ValueError, match=r"-0\.5\*opnorm\(D\)\^2 \+ 2 must be finite and > 0 \(derive proxgrad's "
                                         r"step 0\.5 must be below 2/L, L = opnorm\(D\)\^2.*got -0\.0500000"):
        net(x)
    with pytest.raises(ValueError):
        net(x)  # a failed check is not remembered as passed
    off = cls(D=D / torch.linalg.matrix_norm(D, ord=2), check_learned=False)
    _scaled(off, "D", 4.1)
    off(x)


def test_the_forward_check_runs_only_when_a_learned_value_changed(monkeypatch):
    torch = torch_or_skip()
    text = program("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "derive proxgrad(step = 0.5)",
                   "unroll 3", "learn D").replace("let L = opnorm(D)^2\n", "")
    net = _module(text)(D=torch.eye(5, 8, dtype=torch.float64))
    x = torch.randn(4, 5, dtype=torch.float64)
    calls = []
    norm = torch.linalg.vector_norm
    monkeypatch.setattr(torch.linalg, "vector_norm", lambda *a, **k: calls.append(1) or norm(*a, **k))
    net(x)
    first = len(calls)
    net(x)
    assert len(calls) == first  # unchanged: no check
    torch.optim.SGD(net.parameters(), lr=1e-3).step() if net(x).sum().backward() is None else None
    net(x)
    assert len(calls) > first  # an optimizer step: checked again


def test_pdhg_condition_on_a_learned_operator_is_checked_in_forward():
    """tau*sigma*opnorm(K)^2 < 1 with K = G learned (not kept by any parametrisation): the constructor's
    ValueError when training takes it to 1 or past."""
    torch = torch_or_skip()
    text = program("param G : R[m, n]", "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(G @ z)",
                   "derive pdhg(tau = 0.5, sigma = 0.5)", "unroll 3", "learn G")
    G = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    net = _module(text)(D=torch.randn(5, 8, dtype=torch.float64), G=G / torch.linalg.matrix_norm(G, ord=2))
    x = torch.randn(4, 5, dtype=torch.float64)
    net(x)
    _scaled(net, "G", 3.9)  # 0.25 * 3.9 < 1
    net(x)
    _scaled(net, "G", 4.1)
    with pytest.raises(ValueError, match=r"tau\*sigma\*opnorm\(K\)\^2 < 1, tau = 0\.5, sigma = 0\.5, opnorm\(K\) = "
                                         r"opnorm\(G\)\), got -0\.0(25|249)"):
        net(x)


def test_gd_step_on_a_learned_matrix_is_checked_in_forward():
    torch = torch_or_skip()
    text = program("minimize 0.5 * sqnorm(x - D @ z) + 0.5 * sqnorm(z)", "derive gd(step = 0.5)", "unroll 3",
                   "learn D")
    net = _module(text)(D=torch.eye(5, 8, dtype=torch.float64))  # L = opnorm(D)^2 + 1 = 2: step*L = 1
    x = torch.randn(4, 5, dtype=torch.float64)
    net(x)
    _scaled(net, "D", 3.2)  # L = 4.2: step*L = 2.1
    with pytest.raises(ValueError, match=r"derive gd's step 0\.5 must be below 2/L.*got -0\.(1|0999)"):
        net(x)
