"""One atom, one place: an atom declared in this file, and nowhere else, works through the whole compiler.

`cosh` (with its derivative sinh written from exp) is declared by one `declare` call below. The program
that uses it parses, shape-checks, derives by `derive gd`, compiles to torch, prints as math and LaTeX,
lexes with no error token and is evaluated by the reference evaluator; its module equals numpy gradient
descent in float64. Leaving any rule out of the declaration is an error naming the atom and the rule.
"""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from conftest import build

ROOT = pathlib.Path(__file__).resolve().parents[1]

PROGRAM = """network CoshRegression
dims   m, n
input  x : R[m]
param  A : R[m, n]
hyper  c = 0.3
var    z : R[n] = 0
minimize 0.5 * sqnorm(x - A @ z) + c * sum(cosh(z))
derive gd(step = 0.05)
unroll 12
output z
"""


def cosh_rules():
    """Every rule of cosh's declaration, as keywords of dpc.declare.declare."""
    import sympy as sp

    from dpc import atoms
    from dpc.declare import Fuzz
    return dict(
        signature="cosh(v)", doc="hyperbolic cosine, entrywise", shape=atoms.entrywise,
        reference=lambda np_, v: np_.cosh(v),
        torch="torch.cosh({0})", latex=r"\cosh",
        # sinh(v) = (exp(v) - exp(-v)) / 2, from atoms that exist: the derivative needs no atom of its own
        derivative=lambda v: sp.Rational(1, 2) * (atoms.Exp(v) - atoms.Exp(-v)),
        curvature=None,  # cosh'' = cosh is unbounded: derive needs step = ...
        convexity="convex", monotone=None, scalar=None, sign="positive", requires=(), prox=None,
        fuzz=Fuzz("smooth", domain="bounded"))


@pytest.fixture
def cosh():
    from dpc import atoms
    from dpc.declare import declare, undeclare
    atom = declare("cosh", base=atoms.VectorAtom, **cosh_rules())
    yield atom
    undeclare("cosh")


def _gd(A, x, c, step, layers):
    """Gradient descent on 0.5*||x - A z||^2 + c*sum(cosh(z)), one sample per row of x, from z = 0."""
    z = np.zeros((x.shape[0], A.shape[1]))
    out = []
    for _ in range(layers):
        z = z - step * ((z @ A.T - x) @ A + c * np.sinh(z))
        out.append(z)
    return out


def test_a_declared_atom_compiles_and_equals_numpy_gradient_descent(cosh):
    import torch
    Net = build(PROGRAM, "cosh.dp")
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 9)) / 3
    x = rng.standard_normal((4, 6))
    net = Net(A=torch.tensor(A))
    trace = net(torch.tensor(x), trace=True)
    want = _gd(A, x, 0.3, 0.05, 12)
    assert len(trace) == 12
    for got, layer in zip(trace, want):
        np.testing.assert_allclose(got.detach().numpy(), layer, rtol=0, atol=1e-12)
    # the objective method evaluates the atom too
    z = torch.tensor(want[-1])
    objective = 0.5 * ((x - want[-1] @ A.T) ** 2).sum(1) + 0.3 * np.cosh(want[-1]).sum(1)
    np.testing.assert_allclose(net.objective(torch.tensor(x), z).numpy(), objective, rtol=1e-12)


def test_a_declared_atom_prints_as_math_and_latex_and_lexes(cosh, tmp_path):
    from pygments.token import Error, Name

    from dpc.api import compile_with_program
    from dpc.grammar.pygments_lexer import DpLexer
    from dpc.printing import latex, math
    program = compile_with_program(PROGRAM, "cosh.dp").program
    update = program.step.assigns[0][1]
    assert "cosh(z)" not in math(update)  # the update holds the derivative: sinh from exp
    assert "exp(z)" in math(update) and "exp(-z)" in math(update)
    assert r"\cosh\left(z\right)" in latex(program.objective)
    assert "cosh(z)" in math(program.objective)
    tokens = list(DpLexer().get_tokens(PROGRAM))
    assert not [t for t in tokens if t[0] is Error]
    assert (Name.Builtin, "cosh") in tokens


def test_the_reference_evaluator_knows_a_declared_atom(cosh):
    from dpc import reference
    from dpc.api import compile_with_program
    program = compile_with_program(PROGRAM, "cosh.dp").program
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 9)) / 3
    x = rng.standard_normal((3, 6))
    got = reference.evaluate(program, {"x": x}, {"A": A}, steps=12)
    np.testing.assert_allclose(np.asarray(got).reshape(3, 9), _gd(A, x, 0.3, 0.05, 12)[-1], rtol=0, atol=1e-12)


def test_dpc_check_and_explain_read_the_declared_atom(cosh, tmp_path, capsys):
    from dpc.cli import main
    path = tmp_path / "cosh.dp"
    path.write_text(PROGRAM)
    assert main(["check", str(path)]) == 0
    assert main(["explain", str(path)]) == 0
    assert "c*sum(cosh(z))" in capsys.readouterr().out


@pytest.mark.parametrize("rule", sorted(__import__("dpc.declare", fromlist=["RULES"]).RULES))
def test_a_declaration_missing_a_rule_names_the_atom_and_the_rule(rule):
    from dpc import atoms
    from dpc.declare import ATOMS, DeclarationError, declare
    rules = cosh_rules()
    del rules[rule]
    with pytest.raises(DeclarationError, match=rf"atom 'cosh' has no {rule} rule"):
        declare("cosh", base=atoms.VectorAtom, **rules)
    assert "cosh" not in ATOMS


def test_a_helper_that_reads_an_undeclared_helper_is_an_error_at_declaration():
    from dpc.declare import DeclarationError, helper
    with pytest.raises(DeclarationError, match=r"helper _twice_soft: its source reads \['_soft_typo'\]"):
        helper("_twice_soft", "def _twice_soft(v, t):\n    return 2 * _soft_typo(v, t)\n")


def test_a_torch_rule_naming_an_undeclared_helper_is_an_error_at_declaration():
    from dpc import atoms
    from dpc.declare import DeclarationError, Helper, declare
    rules = cosh_rules()
    rules["torch"] = Helper("_cosh_not_declared", "def _cosh_not_declared(v):\n    return v\n")
    with pytest.raises(DeclarationError, match="atom 'cosh': its torch rule names helper _cosh_not_declared"):
        declare("cosh", base=atoms.VectorAtom, **rules)


def test_helpers_are_emitted_after_what_they_need():
    from dpc import atoms  # noqa: F401 - declares the atoms' helpers
    from dpc.backends.torch import runtime  # noqa: F401
    from dpc.declare import HELPERS, ordered_helpers
    order = [h.name for h in ordered_helpers(["_softss"])]
    assert order == ["_SoftCompiled", "_soft", "_softss"]
    for name in HELPERS:  # every declared helper, with what it needs, defines itself in order
        names = [h.name for h in ordered_helpers([name])]
        assert names[-1] == name and len(set(names)) == len(names)
        for k, h in enumerate(ordered_helpers([name])):
            assert set(h.needs) <= set(names[:k])


def test_every_generated_module_defines_the_helpers_it_calls():
    """No module calls a helper it does not define (a NameError when it runs), none defines one it
    does not call."""
    from dpc.api import compile_source
    from dpc.declare import HELPERS
    for path in sorted((ROOT / "examples").glob("*.dp")):
        source = compile_source(path.read_text(), path.name)
        defined = set(re.findall(r"^(?:def|class) (_\w+)", source, re.M))
        body = source
        for name in defined:
            body = _outside_definitions(body, name)
        called = {name for name in HELPERS if re.search(rf"\b{name}\b", body)}
        needed = {n for d in defined for n in HELPERS[d].needs}
        assert called <= defined, (path.name, called - defined)
        assert defined <= called | needed, (path.name, defined - called - needed)


def _outside_definitions(source: str, name: str) -> str:
    """The module's text without the definition of `name` itself (its own recursion or docstring)."""
    return re.sub(rf"^(?:def|class) {name}\b.*?(?=^\S)", "", source, flags=re.M | re.S)


SMOOTH_ATOMS = ("logcosh", "softplus", "log1p", "huber")


@pytest.mark.parametrize("name", SMOOTH_ATOMS)
def test_a_smooth_atom_is_named_in_one_source_file(name):
    """Outside docs/, tests/, examples/ and benchmarks/, an existing smooth atom's name appears in exactly
    one source file: its declaration. A call of torch's function of that name (torch.nn.functional.softplus in
    the runtime's parametrisation of learned positive values) is torch's, not the atom."""
    def names_it(text):
        return re.search(rf"\b{name}\b", re.sub(rf"torch\.nn\.functional\.{name}\b", "", text), re.I)
    files = [p for folder in ("compiler", "backends", "grammar") for p in (ROOT / folder).rglob("*")
             if p.is_file() and p.suffix in (".py", ".lark") and names_it(p.read_text())]
    assert [str(p.relative_to(ROOT)) for p in files] == ["compiler/atoms.py"]


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first markdown table after `heading`, as lists of cells."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def test_the_docs_atom_table_lists_exactly_the_declared_atoms():
    from dpc.atoms import ATOMS
    text = (ROOT / "docs" / "language.md").read_text()
    documented = {name for row in _table(text, "### Functions (atoms)")
                  for name in re.findall(r"`?([a-z_0-9]+)(?:\(|`)", row[0])}
    assert documented == set(ATOMS)


def test_the_docs_curvature_table_is_the_declared_curvatures():
    """docs/language.md's table of sup|phi''| states each smooth atom's declared curvature rule."""
    import sympy as sp

    from dpc.atoms import ATOMS
    text = (ROOT / "docs" / "language.md").read_text()
    start = text.index("| phi |")
    header, _, values = text[start:].splitlines()[:3]
    cells = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))][1:]  # noqa: E731
    names, bounds = cells(header), cells(values)
    for cell, bound in zip(names, bounds):
        for name in (n.strip() for n in cell.split(",")):
            declared = ATOMS[name].curvature
            if bound == "unbounded":
                assert declared is None, name
            else:
                assert declared == sp.sympify(re.sub(r"√(\d+)", r"*sqrt(\1)", bound).lstrip("*")), name
    smooth_bounded = {a.name for a in ATOMS.values() if getattr(a, "curvature", None) is not None}
    assert smooth_bounded <= {n.strip() for c in names for n in c.split(",")}
