"""unroll T: the network applies the update T times, chained from the start values.

unroll until(tol = e, max = N): the update runs until the relative change of every vector state is
at most e (||s_new - s|| <= e ||s_new||, each sample on its own: a sample that has converged keeps
its value while the others go on) or N times; `steps=` at construction overrides N.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from dpc.errors import DpcError
from dpc.ir import Directive, Program
from dpc.literals import MAX_UNTIL
from dpc.lower import lower_scalar
from dpc.printing import math

UNTIL_OPTIONS = ("tol", "max")
DEFAULT_TOL, DEFAULT_MAX = sp.Float(1e-6), 500


def unroll(program: Program, directive: Directive) -> Program:
    if program.step is None and program.closed_form:  # derive closed: the minimiser in one layer
        raise DpcError("unroll: derive closed gives the minimiser in one layer; there is nothing to repeat",
                       directive.span, f"delete the line `{directive.label()}`").with_source(program.source)
    if program.step is None:
        raise DpcError("unroll needs an update to repeat", directive.span,
                       "derive one first, e.g. derive proxgrad(step = 1/L)").with_source(program.source)
    if directive.count is None:
        return _until(program, directive)
    if directive.count < 1:
        raise DpcError("unroll needs at least 1 layer", directive.name_span).with_source(program.source)
    return replace(program, layers=directive.count).noted(
        directive.label(), f"{directive.count} layers, each applying the update once")


def _fail(program, message, span, hint=None):
    return DpcError(message, span, hint).with_source(program.source)


def _until(program: Program, directive: Directive) -> Program:
    if directive.args:
        raise _fail(program, "unroll until takes named options only", directive.args[0].span,
                    "e.g. unroll until(tol = 1e-6, max = 500)")
    given = {}
    for key, node, span in directive.kwargs:
        if key not in UNTIL_OPTIONS:
            raise _fail(program, f"unroll until has no option '{key}'", span, "options: tol, max")
        if key in given:
            raise _fail(program, f"unroll until: '{key}' is given twice", span)
        given[key] = node
    tol = DEFAULT_TOL
    if "tol" in given:
        tol = lower_scalar(program, given["tol"], "unroll until's tol")
        if tol.is_number and not (tol.is_positive and tol.is_finite):
            raise _fail(program, f"unroll until's tol must be finite and > 0, got {math(tol)}", given["tol"].span)
    most = DEFAULT_MAX
    if "max" in given:
        value = lower_scalar(program, given["max"], "unroll until's max")
        if not (value.is_Integer and 1 <= int(value) <= MAX_UNTIL):
            raise _fail(program, f"unroll until's max must be an integer from 1 to {MAX_UNTIL}, got {math(value)}",
                        given["max"].span)
        most = int(value)
    if not tol.is_number:
        program = program.requiring(tol, "positive", "the tolerance of unroll until", directive.span)
    return replace(program, layers=most, until=tol).noted(
        directive.label(), f"the update runs until every vector state changes by at most {math(tol)} of its norm "
        f"(each sample on its own), at most {most} times (steps=... overrides it)")
