"""derive proxgrad(step = s): z <- prox_{s g}(z - s * grad f(z)), proximal gradient (ISTA)."""
from __future__ import annotations

from dpc.ir import Directive, Program
from dpc.passes.derive import derive_method
from dpc.passes.firstorder import STEP, step_condition, Iteration, prox_gradient
from dpc.passes.splitting import describe, split


@derive_method("proxgrad", STEP)
def derive_proxgrad(program: Program, directive: Directive) -> Program:
    if len(program.states) > 1:  # several vars: one joint gradient step, each var's own prox (passes/joint.py)
        from dpc.passes.joint import derive_proxgrad_joint
        return derive_proxgrad_joint(program, directive)
    s = split(program, directive)
    it = Iteration(step_condition(s, directive, 2), directive, s.var)
    it.assign(s.var, prox_gradient(s))
    return it.done(*describe(s))
