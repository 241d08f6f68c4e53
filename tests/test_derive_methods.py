"""A derive method is one declaration: heavy-ball momentum, declared in this file and nowhere else,

    z <- prox_{s g}(z - s grad f(z) + beta (z - z_prev)),   z_prev <- z,   z_prev starting at z's start,

parses, checks, derives, compiles to torch, prints as math and LaTeX, equals a numpy loop in float64,
and `learn weights untied` linearises it. The fixture removes the declaration at the test's end.
"""
import numpy as np
import pytest
import sympy as sp
import torch

from conftest import build, dictionary, learned_shapes, soft, sparse_batch
from dpc.cli import main
from dpc.errors import DpcError
from dpc.passes import DERIVE_OPTIONS, methods
from dpc.passes.derive import Option, derive_method, option, unregister
from dpc.passes.firstorder import STEP, Iteration, momentum, positive_scalar, prox_gradient
from dpc.passes.splitting import describe, split
from dpc.pipeline import compile_program
from dpc.printing import math


@pytest.fixture
def heavyball():
    @derive_method("heavyball", STEP, Option("beta", positive_scalar, sp.Rational(1, 2)))
    def derive_heavyball(program, directive):
        s = split(program, directive)
        z = s.var
        it = Iteration(s.program, directive, z)
        z_prev = it.state(f"{z.name}_prev", "the previous iterate")
        beta = option(it.program, directive, "beta")
        it.assign(z, prox_gradient(s, plus=momentum(z, z_prev, beta)))
        it.assign(z_prev, z)
        return it.done(*describe(s), f"momentum beta = {math(beta)}")

    yield "heavyball"
    unregister("heavyball")


PROGRAM = """
network HeavyBall
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
derive heavyball(step = 1/L, beta = 0.3)
unroll {T}
"""


def heavyball_reference(D, x, lam, beta, T):
    """ISTA with heavy-ball momentum, step 1/L, z = z_prev = 0 at the start; every iterate."""
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((x.shape[0], D.shape[1]))
    z_prev = z.copy()
    out = []
    for _ in range(T):
        z, z_prev = soft(z - (z @ D.T - x) @ D / L + beta * (z - z_prev), lam / L), z
        out.append(z)
    return out


def test_heavyball_equals_a_numpy_loop(heavyball):
    Net = build(PROGRAM.format(T=20))
    D = dictionary(15, 30)
    x, _ = sparse_batch(D, 6)
    zs = Net(D=torch.tensor(D), lam=0.05)(torch.tensor(x), trace=True)
    ref = heavyball_reference(D, x, 0.05, 0.3, 20)
    assert len(zs) == 20
    for k, (got, want) in enumerate(zip(zs, ref)):
        assert np.abs(got.numpy() - want).max() < 1e-12, f"iteration {k}"


@pytest.mark.parametrize("tying", ["untied", "tied"])
def test_learned_heavyball_starts_as_heavyball(heavyball, tying):
    Net = build(PROGRAM.format(T=8) + f"learn weights {tying}\n")
    D = dictionary(12, 24)
    x, _ = sparse_batch(D, 4)
    net = Net(D=torch.tensor(D), lam=0.1)
    for got, want in zip(net(torch.tensor(x), trace=True), heavyball_reference(D, x, 0.1, 0.3, 8)):
        assert np.abs(got.detach().numpy() - want).max() < 1e-12
    copies = (8,) if tying == "untied" else ()
    # S_z = (1 + beta) I - D.T D / L and S_z_prev = -beta I: both states read through a learned matrix
    assert learned_shapes(net) == {"W": copies + (24, 12), "S_z": copies + (24, 24),
                                   "S_z_prev": copies + (24, 24), "theta": copies}


def test_heavyball_checks_explains_and_prints_latex(heavyball, tmp_path, capsys):
    program = compile_program(PROGRAM.format(T=4), "hb.dp")
    assert [d.name for d in program.states] == ["z", "z_prev"]
    assert program.decl("z_prev").note == "the previous iterate"
    path = tmp_path / "hb.dp"
    path.write_text(PROGRAM.format(T=4))
    assert main(["check", str(path)]) == 0
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "== derive heavyball(step = 1/L, beta = 0.3)" in out
    assert "momentum beta = 0.3" in out
    assert "z_prev <- z" in out and "var z_prev : R[n] = 0" in out
    assert main(["explain", "--latex", str(path)]) == 0
    latex = capsys.readouterr().out
    assert r"z_{\mathrm{prev}}^{k+1} &= z^{k}" in latex, latex


@pytest.mark.parametrize("directive, expected", [
    ("derive heavyball(step = 1/L, bta = 0.3)", "hb.dp:10:30: error: derive heavyball has no option 'bta'\n"),
    ("derive heavyball(1/L)", "derive heavyball takes named options only"),
    ("derive heavyball(step = 1/L, beta = 0)", "derive heavyball's beta must be finite and > 0, got 0"),
    ("derive heavyball(beta = 0.3, beta = 0.4)", "'beta' is given twice"),
])
def test_heavyball_options_are_checked(heavyball, directive, expected):
    text = PROGRAM.format(T=2).replace("derive heavyball(step = 1/L, beta = 0.3)", directive)
    with pytest.raises(DpcError) as err:
        compile_program(text, "hb.dp")
    message = err.value.format()
    assert expected in message, message
    if "no option" in expected:
        assert "hint: options: step, beta" in message


def test_a_declaration_is_found_by_the_pipeline_tables(heavyball):
    assert "heavyball" in methods("derive") and DERIVE_OPTIONS["heavyball"] == ("step", "beta")


def test_a_test_declaration_is_gone_after_its_test():
    """Runs after the tests above: their fixture removed heavyball from the registry."""
    assert "heavyball" not in methods("derive") and "heavyball" not in DERIVE_OPTIONS
    with pytest.raises(DpcError) as err:
        compile_program(PROGRAM.format(T=2), "hb.dp")
    assert "unknown derive method 'heavyball'" in err.value.format()
    assert methods("derive") == ["admm", "closed", "fista", "gd", "hqs", "pdhg", "proxgrad"]
