"""output z: what forward returns (and, with trace=True, returns at every layer)."""
from __future__ import annotations

from dataclasses import replace

from dpc.errors import DpcError
from dpc.ir import Directive, Program


def output(program: Program, directive: Directive) -> Program:
    name = directive.name
    if not program.has(name) or program.decl(name).kind not in ("var", "temp"):
        vars_ = ", ".join(d.name for d in program.states)
        raise DpcError(f"'{name}' is not a var; output names what the network computes", directive.name_span,
                       f"vars: {vars_}").with_source(program.source)
    if not program.decl(name).shape:
        raise DpcError(f"'{name}' is a scalar; the network's output is a vector var (a row per sample)",
                       directive.name_span, "output a vector var; a scalar state is internal to the iteration"
                       ).with_source(program.source)
    return replace(program, output=name)
