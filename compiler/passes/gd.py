"""derive gd(step = s): z <- z - s * grad f(z), for smooth objectives."""
from __future__ import annotations

from dataclasses import replace

from dpc.ir import Directive, Program, Step
from dpc.passes.splitting import split
from dpc.printing import math


def derive_gd(program: Program, directive: Directive) -> Program:
    s = split(program, directive, allow_prox=False)
    z = s.var
    update = z - s.step * s.grad
    return replace(s.program, step=Step(assigns=((z.name, update),))).noted(
        directive.label(), f"f({z.name}) = {math(s.smooth)}", f"grad f({z.name}) = {math(s.grad)}",
        f"{z.name} <- {math(update)}")
