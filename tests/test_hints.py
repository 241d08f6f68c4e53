"""Issue 21 item 5: every hint, applied literally, gives a program that compiles. Each row is a program
with a mistake, what its hint says, and the edit the hint asks for (old text -> new text); the edited
program must compile (and stay free of warnings)."""
from __future__ import annotations

from pathlib import Path

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
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UPDATE, SC2NET, ALISTA, KMEANS = ((EXAMPLES / f"{name}.dp").read_text()
                                  for name in ("lista_update", "sc2net", "alista", "kmeansnet"))
RPCA = "".join(line.split("#")[0].rstrip() + "\n" for line in (EXAMPLES / "rpca.dp").read_text().splitlines())
CLOSED = LASSO.replace("derive proxgrad(step = 1/L)\nunroll 3", "derive closed")
DIVIDE = "network P\ndims n\ninput y : R[n]\nvar z : R[n] = 0\nupdate z <- tanh(z / y)\nunroll 2\n"
AXIS = "network P\ndims N, k\ninput X : R[N, k]\nvar Q : R[N, k] = 0\nupdate Q <- softmax(X) + Q / 2\nunroll 2\n"

# (id, program, a substring of the hint, old, new[, everywhere]): the hint asks to replace old by new (every
# occurrence where the row says True: a rename)
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
    # lower.py
    ("undefined name: did you mean", LASSO.replace("norm1(z)", "norm1(zz)"), "did you mean 'z'?", "norm1(zz)",
     "norm1(z)"),
    ("unknown function: did you mean", LASSO.replace("norm1(z)", "norm11(z)"), "norm1()", "norm11(z)", "norm1(z)"),
    ("elementwise product of a matrix and a vector", LASSO.replace("D @ z", "D * z"), "write @", "D * z", "D @ z"),
    ("^ on a vector", LASSO.replace("0.5 * sqnorm(x - D @ z)", "0.5 * (x - D @ z)^2"), "write sqnorm(v)",
     "(x - D @ z)^2", "sqnorm(x - D @ z)"),
    ("transpose of a vector", LASSO.replace("lam * norm1(z)", "lam * norm1(z) + 0.5 * (z.T @ z)"), "write v @ w",
     "z.T @ z", "z @ z"),
    ("undeclared dim", LASSO.replace("dims m, n", "dims m"), "add it to `dims`, e.g. dims n", "dims m\n",
     "dims m\ndims n\n"),
    ("a size of 1", LASSO.replace("input x : R[m]", "input x : R[m, 1]"), "write R[n] for a vector", "R[m, 1]", "R[m]"),
    ("no network line", LASSO.replace("network P\n", ""), "start it with e.g. `network LISTA`", "dims m, n",
     "network LISTA\ndims m, n"),
    ("no input", LASSO.replace("input x : R[m]\n", "").replace("sqnorm(x - D @ z)", "sqnorm(D @ z)"),
     "declare one, e.g. input x : R[m]", "dims m, n\n", "dims m, n\ninput x : R[m]\n"),
    ("reserved name (renamed everywhere)", LASSO.replace("lam", "info"), "rename it, e.g. info_ or my_info", "info",
     "info_", True),
    ("reserved network name", LASSO.replace("network P", "network list"), "rename it, e.g. ListNet", "network list",
     "network ListNet"),
    ("scalar input", TV.replace("input x : R[n]", "input x : R").replace("derive proxgrad(step = 1/L)", "derive pdhg"),
     "e.g. input x : R[n]", "input x : R", "input x : R[n]"),
    ("vector term in the objective", LASSO.replace("lam * norm1(z)", "lam * z"), "wrap vectors in sqnorm(), norm1()",
     "lam * z", "lam * norm1(z)"),
    ("update of a non-var", UPDATE.replace("var    z : R[n] = 0\n", "").replace(
        "soft(z - D.T @ (D @ z - x) / L, lam / L)", "soft(D.T @ x / L, lam / L)"), "declare it: var z : R[n] = 0",
     "dims   m, n\n", "dims   m, n\nvar z : R[n] = 0\n"),
    # pipeline.py
    ("derive takes named options", LASSO.replace("proxgrad(step = 1/L)", "proxgrad(1/L)"),
     "e.g. derive proxgrad(step = ...)", "proxgrad(1/L)", "proxgrad(step = 1/L)"),
    ("no vector var to output", "network P\ndims n\ninput y : R[n]\nvar t : R = 0\nupdate t <- t + sum(y)\nunroll 2\n",
     "write `var t : R[n]` in place of `var t : R`", "var t : R", "var t : R[n]"),
    # passes/
    ("adapt gates positional", SC2NET.replace("gates(init = ista)", "gates(ista)"), "e.g. adapt gates(init = ista)",
     "gates(ista)", "gates(init = ista)"),
    ("adapt gates under fista", SC2NET.replace("derive proxgrad(step = 1/L)", "derive fista(step = 1/L)"),
     "write it as one state's update", "derive fista(step = 1/L)", "derive proxgrad(step = 1/L)"),
    ("adapt support positional", ALISTA.replace("support(p = 1.2, pmax = 13)", "support(1.2, 13)"),
     "e.g. adapt support(p = 1.2, pmax = 13)", "support(1.2, 13)", "support(p = 1.2, pmax = 13)"),
    ("learn weights with no threshold", LASSO.replace("lam * norm1(z)", "lam * sqnorm(z)").replace(
        "derive proxgrad(step = 1/L)", "derive gd(step = 1/(L + 2*lam))") + "learn weights\n", "e.g. learn D, lam",
     "learn weights", "learn D, lam"),
    ("learn influence with no convT(K, E(conv(K, u)))", LASSO + "learn influence\n",
     "delete the line `learn influence`", "learn influence\n", ""),
    ("learn shrink with no threshold", LASSO.replace("lam * norm1(z)", "lam * sqnorm(z)").replace(
        "derive proxgrad(step = 1/L)", "derive gd(step = 1/(L + 2*lam))") + "learn D, shrink untied\n",
     "write `learn D` in place of `learn D, shrink untied`", "learn D, shrink untied", "learn D"),
    ("learn shrink options not named", LASSO + "learn shrink(31)\n", "write learn shrink(rbfs = 63, range = 310)",
     "learn shrink(31)", "learn shrink(rbfs = 63, range = 310)"),
    ("learn shrink unknown option", LASSO + "learn shrink(width = 2)\n", "write learn shrink(rbfs = 63, range = 310)",
     "learn shrink(width = 2)", "learn shrink(rbfs = 63, range = 310)"),
    ("options after a learned name", LASSO + "learn D(rbfs = 3)\n", "write learn D", "learn D(rbfs = 3)", "learn D"),
    ("learn weights coupled with two inputs", LASSO.replace("input x : R[m]", "input x : R[m]\ninput y : R[n]").replace(
        "lam * norm1(z)", "lam * norm1(z) - y @ z") + "learn weights coupled\n", "use learn weights untied",
     "learn weights coupled", "learn weights untied"),
    ("until with untied weights", LASSO.replace("unroll 3", "unroll until(tol = 1e-6, max = 50)") +
     "learn weights untied\n", "learn them tied (learn weights tied)", "learn weights untied", "learn weights tied"),
    ("backward implicit with fista", LASSO.replace("derive proxgrad(step = 1/L)\nunroll 3",
     "derive fista(step = 1/L)\nunroll until(tol = 1e-6, max = 50)") + "backward implicit\n",
     "use derive proxgrad (one state)", "derive fista(step = 1/L)", "derive proxgrad(step = 1/L)"),
    ("derive closed of onehot", KMEANS.replace("relax onehot -> softmax(tau)   #", "#").replace(
        "hyper  tau = 0.1\n", ""), "relax it first: relax onehot -> softmax(0.1)", "derive closed  ",
     "relax onehot -> softmax(0.1)\nderive closed  "),
    ("relax positional", KMEANS.replace("softmax(tau)  ", "softmax"), "e.g. relax onehot -> softmax(0.1)",
     "-> softmax ", "-> softmax(0.1) "),
    ("derive closed of a non-smooth objective", LASSO.replace("derive proxgrad(step = 1/L)\nunroll 3", "derive closed"),
     "write `derive proxgrad` and, on the next line, `unroll 16` in place of `derive closed`", "derive closed",
     "derive proxgrad\nunroll 16"),
    ("learn weights except on a closed form", KMEANS.replace("learn  C", "learn weights untied except W"),
     "write learn weights", "learn weights untied except W", "learn weights"),
    ("learn weights on a closed ridge", LASSO.replace("lam * norm1(z)", "lam * sqnorm(z)").replace(
        "derive proxgrad(step = 1/L)\nunroll 3", "derive closed") + "learn weights\n",
     "write `learn D` in place of `learn weights`", "learn weights", "learn D"),
    ("admm solve", LASSO.replace("lam * norm1(z)", "lam * norm1(D @ z) + 0.5*sqnorm(z)").replace(
        "derive proxgrad(step = 1/L)", "derive admm(rho = 1, solve = cg(10))"), "write solve = cg(iters = 10)",
     "solve = cg(10)", "solve = cg(iters = 10)"),
    ("learn except before tying", LASSO + "learn weights except W\n", "e.g. learn weights untied except W",
     "learn weights except W", "learn weights untied except W"),
    ("learn except without names", LASSO + "learn weights untied except\n", "e.g. learn weights untied except W",
     "learn weights untied except", "learn weights untied except W"),
    ("learn a weight's tying", LASSO + "learn weights\nlearn W tied\n", "write learn weights tied (or untied)",
     "learn weights\nlearn W tied", "learn weights tied"),
    ("norm1 and norm0 on one var", LASSO.replace("lam * norm1(z)", "lam * norm1(z) + lam * norm0(z)"),
     "keep one of norm1/norm0", " + lam * norm0(z)", ""),
    ("no step for a non-quadratic smooth term", LASSO.replace("lam * norm1(z)", "lam * norm1(z) + sum(exp(z))").replace(
        "derive proxgrad(step = 1/L)", "derive proxgrad"), "give the step, e.g. derive proxgrad(step = 0.1)",
     "derive proxgrad", "derive proxgrad(step = 0.1)"),
    # grammar/parser.py, literals.py
    ("a zero-width space", LASSO.replace("lam * norm1", "lam *\u200b norm1"), "delete it", "\u200b", ""),
    ("a misspelt keyword", LASSO.replace("minimize", "minimise"), "did you mean `minimize`?", "minimise", "minimize"),
    ("a keyword run into a number", LASSO.replace("unroll 3", "unroll3"), "put a space after it: unroll 3", "unroll3",
     "unroll 3"),
    ("a number below float64's range", LASSO.replace("hyper lam = 0.1", "hyper lam = 0.1\nhyper mu = 1e-400").replace(
        "lam * norm1(z)", "lam * norm1(z) + mu * sqnorm(z)"), "write 0 if you mean zero", "1e-400", "0"),
    ("too many layers", LASSO.replace("unroll 3", "unroll 100000"), "write a whole number from 1 to", "unroll 100000",
     "unroll 3"),
    ("an update written with =", UPDATE.replace("update z <- ", "update z = "), "an update is written `z <- expr`",
     "update z = ", "update z <- "),
    # passes/composite.py, joint.py, thresholds.py, closed.py
    ("two non-smooth terms under pdhg", TV.replace("lam * norm1(D @ z)", "lam * norm1(D @ z) + lam * norm1(z)").replace(
        "derive proxgrad(step = 1/L)", "derive pdhg"), "keep one norm1(...) term", " + lam * norm1(z)", ""),
    ("joint step, gradient not affine", RPCA.replace("lam * norm1(S)", "lam * norm1(S) + 0.25*sqnorm(L)^2"),
     "give the step, e.g. derive proxgrad(step = 0.1)", "derive proxgrad", "derive proxgrad(step = 0.1)"),
    ("joint step, gradient not matrices times the vars", RPCA.replace(
        "input  X : R[m, n]", "input  X : R[m, n]\nparam  B : R[n, n]").replace("X - L - S", "X - L @ B - S"),
     "give the step, e.g. derive proxgrad(step = 0.1)", "derive proxgrad", "derive proxgrad(step = 0.1)"),
    ("except names taking the same tying", LASSO + "learn weights untied except W untied\n",
     "write learn weights untied except W", "except W untied", "except W"),
    ("except naming nothing", LASSO + "learn weights untied except\n", "e.g. learn weights untied except W",
     "untied except\n", "untied except W\n"),
    ("closed with a zero ridge", CLOSED.replace("hyper lam = 0.1", "hyper lam = 0.1\nhyper mu = 0").replace(
        "lam * norm1(z)", "mu * sqnorm(z)"), "+ 0.5*sqnorm(z) (any c*sqnorm", "mu * sqnorm(z)",
     "mu * sqnorm(z) + 0.5*sqnorm(z)"),
    # entrywise division, and atoms along an axis (issue 19)
    ("entrywise division by what may be zero", DIVIDE, "write `(abs(y) + 1e-8)` in place of `y`", "z / y",
     "z / (abs(y) + 1e-8)"),
    ("entrywise division by a non-negative value", DIVIDE.replace("z / y", "z / square(y)"),
     "write `(square(y) + 1e-8)` in place of `square(y)`", "z / square(y)", "z / (square(y) + 1e-8)"),
    ("softmax of a matrix with no axis", AXIS, "add `, axis = 1` after the matrix", "softmax(X)",
     "softmax(X, axis = 1)"),
    ("softmax along an axis a matrix lacks", AXIS.replace("softmax(X)", "softmax(X, axis = 2)"), "write axis = 1",
     "axis = 2", "axis = 1"),
    ("softmax of a vector along axis 1", DIVIDE.replace("z / y", "softmax(y, axis = 1)"), "delete `, axis = 1`",
     ", axis = 1", ""),
    ("logsumexp with an unknown keyword", AXIS.replace("softmax(X)", "X - sum(logsumexp(X, dim = 1))"),
     "write `axis = 1` in place of `dim = 1`", "dim = 1", "axis = 1"),
    ("an axis that is no integer literal", AXIS.replace("softmax(X)", "softmax(X, axis = 0.5)"),
     "write e.g. axis = 1", "axis = 0.5", "axis = 1"),
    # matrix-shape misuse (issue 19; tests/test_structured_errors.py has the whole messages)
    ("svt of a vector", DIVIDE.replace("tanh(z / y)", "svt(z - y, 0.1)"), "write blocksoft in place of svt",
     "svt(", "blocksoft("),
    ("rowsoft of a vector", DIVIDE.replace("tanh(z / y)", "rowsoft(z - y, 0.1)"),
     "write blocksoft in place of rowsoft", "rowsoft(", "blocksoft("),
    ("opnorm of a vector", DIVIDE.replace("tanh(z / y)", "z - 0.1 * opnorm(y) * z"),
     "write norm2(v) in place of opnorm(v)", "opnorm(", "norm2("),
    ("norm2 of a matrix", "network P\ndims N, k\ninput X : R[N, k]\nparam C : R[N, k]\nvar Q : R[N, k] = 0\n"
     "update Q <- X + Q / (1 + norm2(C))\nunroll 2\n", "write sqrt(sqnorm(A))", "norm2(C)", "sqrt(sqnorm(C))"),
    ("norm0 of a matrix", RPCA.replace("lam * norm1(S)", "lam * norm0(S)"),
     "penalise norm1(A) (entrywise) in place of norm0(A)", "norm0(S)", "norm1(S)"),
    ("adapt gates on a matrix state", AXIS.replace("softmax(X) + Q / 2", "soft(Q - 0.5 * (Q - X), 0.1)") +
     "adapt gates\n", "delete the adapt gates line", "adapt gates\n", ""),
    ("adapt support on a matrix state", AXIS.replace("softmax(X) + Q / 2", "soft(Q - 0.5 * (Q - X), 0.1)") +
     "adapt support\n", "delete the adapt support line", "adapt support\n", ""),
    # a pass that reads the update, written before the derive that makes it (the pipeline keeps source order)
    *[(f"{line} before derive", LASSO.replace("derive proxgrad(step = 1/L)\n", f"{line}\nderive proxgrad(step = 1/L)\n"),
       "put it after derive", f"{line}\nderive proxgrad(step = 1/L)\n", f"derive proxgrad(step = 1/L)\n{line}\n")
      for line in ("learn weights", "learn weights coupled", "learn stepsizes", "adapt support", "adapt gates")],
]


CASES = [row if len(row) == 6 else (*row, False) for row in HINTS]


@pytest.mark.parametrize("name, text, hint, old, new, everywhere", CASES, ids=[h[0] for h in CASES])
def test_hint_applied_literally_compiles(name, text, hint, old, new, everywhere):
    try:
        program = compile_program(text, "p.dp")
        shown = [w.hint for w in program.warnings]
    except DpcError as e:
        shown = [d.hint for d in e.diagnostics]
    assert any(h and hint in h for h in shown), shown
    assert everywhere or text.count(old) == 1
    fixed = compile_program(text.replace(old, new), "p.dp")
    assert fixed.warnings == ()


# Hints with no row, and why (file:line as of this commit). Not edits: they explain, list choices, or show a
# template with placeholders the user fills in (so "applied literally" has no meaning):
#   compiler/lower.py:160, :176, literals.py:57, :178   "write a smaller number / rescale": no definite edit
#   compiler/lower.py:188   "call it: norm1(v)": the atom's signature, v a placeholder
#   compiler/lower.py:191   "use eye(n)": names a function for the mistake, not an edit of the line
#   compiler/lower.py:197   "compute ... from ... (declare a let ...)": explanation
#   compiler/lower.py:270 (no close name), :630, pipeline.py:99, :116, passes/adapt_gates.py:118, :120,
#     adapt_support.py:58, thresholds.py:88, unroll.py:49, relax.py:40, :42, backward.py:22: lists of what is known
#   compiler/lower.py:278   "use soft(v, t) here": softss's arguments differ; no literal edit
#   compiler/lower.py:300, :347, :537   "sum_j ... [j]": templates
#   compiler/lower.py:284   the atom's own ShapeError hint (atoms.py), out of this audit's files
#   compiler/pipeline.py:35, :52, literals.py:76, :120, :126, :141 (via --set)   `--set` command-line values, not
#     program text (literals.py:141 is covered in the program by the "too many layers" row)
#   grammar/parser.py:298, :300, :314, :316, :347 (the R case)   explanations of a syntax error
#   grammar/parser.py:296   "an update is written `z <- expr`; a constraint `z >= 0`" (a stray '=' or '<' read as
#     an unexpected character): two choices; `update z = ...` gets :312's edit ("an update written with =")
#   passes/composite.py:68, :74, :90, joint.py:43, :70, :82, :91, splitting.py:40, :78, :124, :175,
#     learn_coupled.py:44, thresholds.py:43, :131, output.py:32, :35, relax.py:105, learn.py:39, :64
#     explanations (what a term/option must be), or a choice between edits
#   passes/relax.py:80   "write e.g. `subject to s in onehot`": a template (s is a placeholder var)
#   passes/output.py:47, learn_stepsizes.py:37   "e.g. x - D.T @ u", "e.g. update z <- ...": templates
#   compiler/pipeline.py _vector_hint's fallback "e.g. var z : R[n] = 0" (no dim declared, or the var not written
#     `var t : R`): a template; the literal edit has the "no vector var to output" row
#   passes/splitting.py:172 (RELAX_HINTS), closed.py:207   "relax ... then derive closed": two steps; the onehot
#     one is applied in the "derive closed of onehot" row (closed.py:88)
# Edits with no row yet (not reached in the time of this audit):
#   (passes/adapt_gates.py:49, adapt_support.py:29, learn.py:105, learn_coupled.py:25, learn_stepsizes.py:26,
#     "put it after derive", are reached by a line written before derive: the "... before derive" rows)
#   (composite.py:54, joint.py:106, :112, thresholds.py:73, :81, closed.py:320 have rows above;
#     passes/learn.py:114 is covered by "learn weights with no threshold")
