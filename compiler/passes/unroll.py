"""unroll T: the network applies the update T times, chained from the start values."""
from __future__ import annotations

from dataclasses import replace

from dpc.errors import DpcError
from dpc.ir import Directive, Program


def unroll(program: Program, directive: Directive) -> Program:
    if program.step is None:
        raise DpcError("unroll needs an update to repeat", directive.span,
                       "derive one first, e.g. derive proxgrad(step = 1/L)").with_source(program.source)
    if directive.count < 1:
        raise DpcError("unroll needs at least 1 layer", directive.name_span).with_source(program.source)
    return replace(program, layers=directive.count).noted(
        directive.label(), f"{directive.count} layers, each applying the update once")
