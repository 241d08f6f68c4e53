"""Issue 21 item 5: every hint, applied literally, gives a program that compiles. Each row is a program
with a mistake, what its hint says, and the edit the hint asks for (old text -> new text); the edited
program must compile (and stay free of warnings)."""
from __future__ import annotations

import pytest

from dpc.errors import DpcError
from dpc.pipeline import compile_program

LASSO = """network P
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
derive proxgrad(step = 1/L)
unroll 3
"""
TV = LASSO.replace("input x : R[m]", "input x : R[n]").replace(
    "0.5 * sqnorm(x - D @ z) + lam * norm1(z)", "0.5 * sqnorm(z - x) + lam * norm1(D @ z)")

# (id, program, a substring of the hint, old, new): the hint asks to replace old by new
HINTS = [
    ("non-separable penalty: derive pdhg",
     LASSO.replace("lam * norm1(z)", "lam * norm1(D @ z)"), "write `derive pdhg` in place of `derive proxgrad(step = 1/L)`",
     "derive proxgrad(step = 1/L)", "derive pdhg"),
    ("non-separable penalty: pdhg or admm", TV,
     "write `derive pdhg` or `derive admm(rho = 1)` in place of `derive proxgrad(step = 1/L)`",
     "derive proxgrad(step = 1/L)", "derive admm(rho = 1)"),
    ("non-separable penalty under fista", TV.replace("derive proxgrad(step = 1/L)", "derive fista"),
     "in place of `derive fista`", "derive fista", "derive pdhg"),
    ("admm without a ridge", LASSO.replace("lam * norm1(z)", "lam * norm1(D @ z)").replace(
        "derive proxgrad(step = 1/L)", "derive admm(rho = 1)"), "+ 0.5*sqnorm(z)",
     "lam * norm1(D @ z)", "lam * norm1(D @ z) + 0.5*sqnorm(z)"),
    ("closed without a ridge", LASSO.replace(" + lam * norm1(z)", "").replace(
        "derive proxgrad(step = 1/L)\nunroll 3", "derive closed"), "+ 0.5*sqnorm(z)",
     "sqnorm(x - D @ z)", "sqnorm(x - D @ z) + 0.5*sqnorm(z)"),
    ("gd on a non-smooth objective", LASSO.replace("derive proxgrad(step = 1/L)", "derive gd(step = 1/L)"),
     "write `derive proxgrad(step = 1/L)` in place of `derive gd(step = 1/L)`",
     "derive gd(step = 1/L)", "derive proxgrad(step = 1/L)"),
    ("splitting without a non-smooth term", LASSO.replace(" + lam * norm1(z)", "").replace(
        "derive proxgrad(step = 1/L)", "derive pdhg"), "write `derive gd` in place of `derive pdhg`",
     "derive pdhg", "derive gd"),
    ("unroll after derive closed", LASSO.replace("lam * norm1(z)", "lam * sqnorm(z)").replace(
        "derive proxgrad(step = 1/L)", "derive closed"), "delete the line `unroll 3`", "unroll 3\n", ""),
    ("step above 2/L", LASSO.replace("input x : R[m]", "input x : R[n]").replace("x - D @ z", "x - z").replace(
        "step = 1/L", "step = 3"), "write `derive proxgrad`", "derive proxgrad(step = 3)", "derive proxgrad"),
    ("fista step above 1/L", LASSO.replace("input x : R[m]", "input x : R[n]").replace("x - D @ z", "x - z").replace(
        "proxgrad(step = 1/L)", "fista(step = 1.5)"), "write `derive fista`", "derive fista(step = 1.5)",
     "derive fista"),
    ("pdhg steps past the condition", TV.replace("norm1(D @ z)", "norm1(z)").replace(
        "derive proxgrad(step = 1/L)", "derive pdhg(tau = 2, sigma = 2)"), "write `derive pdhg`",
     "derive pdhg(tau = 2, sigma = 2)", "derive pdhg"),
    ("a second derive", LASSO.replace("unroll 3", "derive fista(step = 1/L)\nunroll 3"),
     "delete one of the two derive lines", "derive fista(step = 1/L)\n", ""),
    ("a learned value nothing reads", LASSO + "learn weights untied\nlearn D, lam\n",
     "delete the line `learn D, lam`", "learn D, lam\n", ""),
    ("a learned value nothing reads, beside one that is read", LASSO + "learn weights\nlearn D, lam\n".replace(
        "learn D, lam", "learn lam, D"), "delete the line `learn lam, D`",
     "learn lam, D\n", ""),
    ("no unroll", LASSO.replace("unroll 3\n", ""), "add `unroll T`, e.g. unroll 16", "derive proxgrad(step = 1/L)",
     "derive proxgrad(step = 1/L)\nunroll 16"),
    ("no derive", LASSO.replace("derive proxgrad(step = 1/L)\nunroll 3\n", ""),
     "add a derive line, e.g. derive proxgrad(step = 1/L)", "lam * norm1(z)\n",
     "lam * norm1(z)\nderive proxgrad(step = 1/L)\nunroll 3\n"),
    ("backward implicit without until", LASSO + "backward implicit\n",
     "write unroll until(tol = 1e-6, max = 500) instead of unroll T", "unroll 3",
     "unroll until(tol = 1e-6, max = 500)"),
    ("unroll before derive", LASSO.replace("derive proxgrad(step = 1/L)\nunroll 3", "unroll 3\nderive proxgrad(step = 1/L)"),
     "derive one first, e.g. derive proxgrad(step = 1/L)", "unroll 3\nderive proxgrad(step = 1/L)",
     "derive proxgrad(step = 1/L)\nunroll 3"),
    ("learn untied on a closed form", LASSO.replace("lam * norm1(z)", "lam * sqnorm(z)").replace(
        "derive proxgrad(step = 1/L)\nunroll 3", "derive closed\nlearn D untied"), "write learn D",
     "learn D untied", "learn D"),
    ("a concave term (warning)", LASSO.replace("0.5 * sqnorm", "-0.5 * sqnorm"), "write 0.5*sqnorm(x - D @ z)",
     "-0.5 * sqnorm(x - D @ z)", "0.5*sqnorm(x - D @ z)"),
]


@pytest.mark.parametrize("name, text, hint, old, new", HINTS, ids=[h[0] for h in HINTS])
def test_hint_applied_literally_compiles(name, text, hint, old, new):
    try:
        program = compile_program(text, "p.dp")
        shown = [w.hint for w in program.warnings]
    except DpcError as e:
        shown = [d.hint for d in e.diagnostics]
    assert any(h and hint in h for h in shown), shown
    assert text.count(old) == 1
    fixed = compile_program(text.replace(old, new), "p.dp")
    assert fixed.warnings == ()
