"""derive fista(step = s): proximal gradient with Beck-Teboulle momentum.

    z_next = prox_{s g}(y - s * grad f(y))
    t_next = (1 + sqrt(1 + 4 t^2)) / 2
    y      <- z_next + (t - 1) / t_next * (z_next - z)
    z, t   <- z_next, t_next
starting from y = z = z0 and t = 1 (Beck & Teboulle 2009, FISTA with constant step).
"""
from __future__ import annotations

import sympy as sp

from dpc.ir import Directive, Program
from dpc.passes.derive import derive_method
from dpc.passes.firstorder import STEP, step_condition, Iteration, extrapolate, prox_gradient
from dpc.passes.splitting import describe, split


@derive_method("fista", STEP)
def derive_fista(program: Program, directive: Directive) -> Program:
    if len(program.states) > 1:  # several vars: one joint gradient step, each var's own prox (passes/joint.py)
        from dpc.passes.joint import derive_fista_joint
        return derive_fista_joint(program, directive)
    s = split(program, directive)
    z = s.var
    it = Iteration(step_condition(s, directive, 1), directive, z)
    y = it.state("y", "momentum point")
    t = it.state("t", "momentum sequence", start=sp.Integer(1), shape=())
    z_next = it.temp(f"{z.name}_next", prox_gradient(s, at=y))
    t_next = it.temp(f"{t.name}_next", (1 + sp.sqrt(1 + 4 * t ** 2)) / 2, shape=())
    it.assign(y, extrapolate(z_next, z, (t - 1) / t_next))
    it.assign(z, z_next)
    it.assign(t, t_next)
    return it.done(*describe(s))
