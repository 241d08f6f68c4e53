"""output: what forward returns (and, with trace=True, returns at every layer).

`output z` names a var (or a temporary of the update). `output x - D.T @ u` is an expression of the
states, inputs, params, hypers and lets, read after every layer from that layer's states: it becomes a
declaration of kind "output" (a fresh name, the expression as its value) and the program's output.
"""
from __future__ import annotations

from dataclasses import replace

from dpc.atoms import show_shape
from dpc.errors import DpcError
from dpc.graph import names_in
from dpc.ir import Decl, Directive, Program
from dpc.lower import lower_expr
from dpc.printing import math

# what an output expression may read: the states after the layer, and everything fixed
OUTPUT_KINDS = ("input", "param", "hyper", "let", "var")


def output(program: Program, directive: Directive) -> Program:
    if directive.name:
        return _output_name(program, directive)
    return _output_expr(program, directive)


def _output_name(program: Program, directive: Directive) -> Program:
    name = directive.name
    if not program.has(name) or program.decl(name).kind not in ("var", "temp"):
        vars_ = ", ".join(d.name for d in program.states)
        raise DpcError(f"'{name}' is not a var; output names what the network computes", directive.name_span,
                       f"vars: {vars_}; an output may also be an expression of them").with_source(program.source)
    if not program.decl(name).shape:
        raise DpcError(f"'{name}' is a scalar; the network's output is a vector or matrix var (a row per sample)",
                       directive.name_span, "output a vector var; a scalar state is internal to the iteration"
                       ).with_source(program.source)
    return replace(program, output=name)


def _output_expr(program: Program, directive: Directive) -> Program:
    node = directive.args[0]
    expr, shape = lower_expr(program, node, kinds=OUTPUT_KINDS, where="in the output")
    fail = lambda message, hint=None: DpcError(message, node.span, hint).with_source(program.source)  # noqa: E731
    if len(shape) == 0:
        raise fail(f"the output is {show_shape(shape)}; the network's output is a vector or matrix (one per sample)",
                   "output a vector expression, e.g. x - D.T @ u")
    states = {d.name for d in program.states}
    if not names_in(expr) & states:
        raise fail("the output reads no var: it would be the same after every layer",
                   f"an output is computed from the states ({', '.join(sorted(states))})")
    name = program.fresh_name("out")
    decl = Decl(name, "output", shape, expr, directive.span)
    return replace(program.with_decl(decl), output=name).noted(directive.label(), f"{name} = {math(expr)}")
