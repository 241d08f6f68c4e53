"""adapt support(p = 1.2, pmax = 13): support selection (LISTA-CPSS, Chen et al. 2018).

Every soft threshold of the update becomes softss: at layer t the largest p_t = min(t*p, pmax)
percent of the magnitudes in each sample pass unshrunk (where they exceed the threshold),
the rest are soft-thresholded; the selection mask carries no gradient. p and pmax are in
percent of the entries, as in the reference code (p = 1.2, pmax = 13 there).

    soft(v, theta)  ->  softss(v, theta, p, pmax)

Works before or after `learn weights` (which keeps the extra arguments).
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from dpc import atoms
from dpc.errors import DpcError
from dpc.ir import Directive, Program
from dpc.lower import lower_scalar
from dpc.printing import format_step, math

DEFAULTS = {"p": sp.Rational(12, 10), "pmax": sp.Integer(13)}


def adapt_support(program: Program, directive: Directive) -> Program:
    if program.step is None:
        raise _fail(program, "adapt support needs an update", directive.span,
                    "put it after derive (or write an update)")
    options = _options(program, directive)
    count = [0]

    def rewrite(expr):
        if type(expr) is atoms.Soft and expr.args[0].shape[1] != 1:  # the support of a vector, per sample
            raise _fail(program, f"adapt support selects the largest entries of a vector, but "
                        f"{math(expr.args[0])} is a matrix", directive.span,
                        "delete the adapt support line (support selection acts on vectors)")
        if type(expr) is atoms.Soft:
            count[0] += 1
            return atoms.SoftSS(rewrite(expr.args[0]), expr.args[1], options["p"], options["pmax"], atoms.LAYER)
        if not expr.args:
            return expr
        new = [rewrite(a) for a in expr.args]
        return expr if all(a is b for a, b in zip(new, expr.args)) else expr.func(*new)

    step = program.step.map(rewrite)
    if not count[0]:
        raise _fail(program, "adapt support found no soft threshold in the update", directive.span,
                    "support selection replaces soft(v, theta); derive proxgrad of a norm1 penalty makes one")
    p, pmax = math(options["p"]), math(options["pmax"])
    return replace(program, step=step).noted(
        directive.label(),
        f"at layer t the largest p_t = min(t*{p}, {pmax}) percent of |v| per sample skip the shrinkage",
        *format_step(step, ""))


def _options(program: Program, directive: Directive) -> dict:
    options = dict(DEFAULTS)
    for key, node, span in directive.kwargs:
        if key not in DEFAULTS:
            raise _fail(program, f"adapt support has no option '{key}'", span, "options: p, pmax (percent)")
        options[key] = lower_scalar(program, node, f"adapt support's {key}")
    if directive.args:
        raise _fail(program, "adapt support takes named options only", directive.span,
                    "e.g. adapt support(p = 1.2, pmax = 13)")
    for key, value in options.items():
        if value.is_number and value < 0:
            raise _fail(program, f"adapt support's {key} must be a percentage >= 0, got {math(value)}",
                        directive.span)
    return options


def _fail(program, message, span, hint=None):
    return DpcError(message, span, hint).with_source(program.source)
