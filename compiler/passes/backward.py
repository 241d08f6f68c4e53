"""backward implicit | unrolled: how the gradient of a network run to convergence is computed.

unrolled (the default): autograd through every iteration (memory grows with the iterations).
implicit: the iterations run without a graph; at the fixed point z* = f(z*), one more application of
f carries the graph, and backward solves the adjoint equation g = J^T g + dL/dz (J = df/dz at z*) by
fixed-point iteration to the same tolerance (deep equilibrium models, Bai, Kolter & Koltun 2019), so
memory does not grow with the iterations. The checks that need the whole program (an `unroll until`,
one vector state, no untied weights) run when the program is complete (`check_fixed_point`).
"""
from __future__ import annotations

from dataclasses import replace

from dpc.errors import DpcError
from dpc.ir import Directive, Program

MODES = ("unrolled", "implicit")


def backward(program: Program, directive: Directive) -> Program:
    if directive.name not in MODES:
        raise DpcError(f"unknown backward mode '{directive.name}'", directive.name_span,
                       "backward implicit or backward unrolled").with_source(program.source)
    note = ("the gradient at the fixed point, by implicit differentiation: memory does not grow with the "
            "iterations" if directive.name == "implicit" else "autograd through every iteration")
    return replace(program, backward=directive.name).noted(directive.label(), note)


def check_fixed_point(program: Program) -> None:
    """What `unroll until` and `backward implicit` need of the finished program."""
    def fail(message, kind, hint=None):
        raise DpcError(message, program.span_of_directive(kind), hint).with_source(program.source)
    if program.backward == "implicit" and program.until is None:
        fail("backward implicit needs a network run to convergence", "backward",
             "write unroll until(tol = 1e-6, max = 500) instead of unroll T")
    if program.until is None:
        return
    untied = [d.name for d in program.decls if d.per_layer]
    if untied:
        fail(f"unroll until repeats one update until it converges, but {', '.join(untied)} "
             f"{'has' if len(untied) == 1 else 'have'} one copy per layer", "learn",
             "learn them tied (learn weights tied), or unroll a fixed number of layers")
    if program.backward == "implicit":
        vectors = [d for d in program.states if d.shape]
        if len(program.states) != 1 or len(vectors) != 1:
            names = ", ".join(d.name for d in program.states)
            fail(f"backward implicit needs one vector state (the fixed point); this update has {names}",
                 "backward", "use derive proxgrad (one state), or backward unrolled")
