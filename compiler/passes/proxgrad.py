"""derive proxgrad(step = s): z <- prox_{s g}(z - s * grad f(z)), proximal gradient (ISTA)."""
from __future__ import annotations

from dataclasses import replace

from dpc.ir import Directive, Program, Step
from dpc.passes.splitting import describe, split
from dpc.printing import math


def derive_proxgrad(program: Program, directive: Directive) -> Program:
    s = split(program, directive)
    z = s.var
    update = s.prox(z - s.step * s.grad)
    return replace(s.program, step=Step(assigns=((z.name, update),))).noted(
        directive.label(), *describe(s), f"{z.name} <- {math(update)}")
