"""Implicit, last: fold constant start values into the first layer.

With z0 = 0 the first layer's S @ z0 vanishes (LISTA's first layer is soft(W x, theta)):
substitute every constant start into the update and let sympy simplify.
"""
from __future__ import annotations

from dataclasses import replace

from dpc.ir import Program


def fold_start(program: Program, directive=None) -> Program:
    if program.step is None:
        return program
    starts = {}
    for d in program.states:
        if d.value is None or d.value.free_symbols - _dims(d.value):
            return program  # a start that depends on data or parameters stays a plain first step
        starts[d.symbol] = d.value
    first = program.step.map(lambda e: e.xreplace(starts).doit())
    if first == program.step:
        return program
    zeros = [d.name for d in program.states if d.value is not None and _zero(d.value)]
    return replace(program, first_step=first).noted(
        "fold start", f"the first layer starts from constants ({', '.join(zeros) or 'start values'}"
                      f"{' = 0' if zeros else ''}); their terms fold away")


def _dims(expr):
    return {s for s in expr.free_symbols if s.is_integer}


def _zero(expr):
    from dpc.algebra import is_zero
    return is_zero(expr)
