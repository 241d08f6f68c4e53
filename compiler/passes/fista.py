"""derive fista(step = s): proximal gradient with Beck-Teboulle momentum.

    z_next = prox_{s g}(y - s * grad f(y))
    t_next = (1 + sqrt(1 + 4 t^2)) / 2
    y      <- z_next + (t - 1) / t_next * (z_next - z)
    z, t   <- z_next, t_next
starting from y = z = z0 and t = 1 (Beck & Teboulle 2009, FISTA with constant step).
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from dpc.ir import Decl, Directive, Program, Step, make_symbol
from dpc.passes.splitting import describe, split
from dpc.printing import format_step


def derive_fista(program: Program, directive: Directive) -> Program:
    s = split(program, directive)
    p, z = s.program, s.var
    zdecl = p.decl(z.name)
    y_name, t_name = p.fresh_name("y"), p.fresh_name("t")
    y, t = make_symbol(y_name, zdecl.shape), sp.Symbol(t_name, real=True)
    z_next_name, t_next_name = p.fresh_name(f"{z.name}_next"), p.fresh_name(f"{t_name}_next")
    z_next, t_next = make_symbol(z_next_name, zdecl.shape), sp.Symbol(t_next_name, real=True)

    gradient_at_y = s.grad.subs(z, y)
    step = Step(
        lets=((z_next_name, s.prox(y - s.step * gradient_at_y)),
              (t_next_name, (1 + sp.sqrt(1 + 4 * t ** 2)) / 2)),
        assigns=((y_name, z_next + (t - 1) / t_next * (z_next - z)),
                 (z.name, z_next),
                 (t_name, t_next)),
    )
    for decl in (Decl(y_name, "var", zdecl.shape, zdecl.value, directive.span, note="momentum point"),
                 Decl(t_name, "var", (), sp.Integer(1), directive.span, note="momentum sequence"),
                 Decl(z_next_name, "temp", zdecl.shape, None, directive.span),
                 Decl(t_next_name, "temp", (), None, directive.span)):
        p = p.with_decl(decl)
    return replace(p, step=step).noted(directive.label(), *describe(s), *format_step(step, ""))
