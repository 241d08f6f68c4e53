"""derive gd(step = s): z <- z - s * grad f(z), for smooth objectives."""
from __future__ import annotations

from dpc.ir import Directive, Program
from dpc.passes.derive import derive_method
from dpc.passes.firstorder import STEP, step_condition, Iteration, gradient_step
from dpc.passes.splitting import split
from dpc.printing import math


@derive_method("gd", STEP, needs_convex=False)
def derive_gd(program: Program, directive: Directive) -> Program:
    s = split(program, directive, allow_prox=False)
    it = Iteration(step_condition(s, directive, 2), directive, s.var)
    it.assign(s.var, gradient_step(s))
    return it.done(f"f({s.var.name}) = {math(s.smooth)}", f"grad f({s.var.name}) = {math(s.grad)}")
