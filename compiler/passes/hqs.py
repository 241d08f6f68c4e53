"""derive hqs(beta = b, growth = g): half-quadratic splitting for min f(z) + g(K z) (Geman & Yang 1995; the
deconvolution form of Krishnan & Fergus 2009 and Zuo et al., IEEE TIP 2016).

The split w = K z enters through the penalty beta_t/2 ||K z - w||^2, with no dual variable, and the penalty
grows from layer to layer, beta_t = b * g^(t - 1) at layer t = 1..T:

    w <- prox_{g/beta_t}(K z)                           soft(K z, c/beta_t) for g = c*norm1
    z <- solve(H + beta_t K.T K, beta_t K.T w - b)       for grad f(z) = H z + b

each line reading what the line above computed. The z-step is the solve of passes/operator_solve.py (an FFT
when the system is circulant, else conjugate gradients; `solve = ...` as in derive admm) or a division when
the system is c*eye; a dense matrix that changes with the layer is refused (derive admm factors its matrix
once). beta defaults to 1, growth to 1 (a constant penalty).
"""
from __future__ import annotations

import sympy as sp

from dpc import atoms
from dpc.errors import DpcError
from dpc.ir import Directive, Program
from dpc.passes.composite import identity_multiple, split_composite
from dpc.passes.derive import Option, derive_method, option
from dpc.passes.firstorder import Iteration, positive_scalar
from dpc.passes.operator_solve import operator_solve, solve_option, system_requirements
from dpc.passes.prox import NoProx, build_prox
from dpc.passes.splitting import fail, splitting_methods
from dpc.printing import math


@derive_method("hqs", Option("beta", positive_scalar, sp.Integer(1)), Option("growth", positive_scalar, sp.Integer(1)),
               Option("solve", solve_option))
def derive_hqs(program: Program, directive: Directive) -> Program:
    c = split_composite(program, directive)
    p, z = c.program, c.var
    beta0, growth = option(p, directive, "beta"), option(p, directive, "growth")
    p = p.requiring(beta0, "positive", "the HQS penalty beta", directive.span).requiring(
        growth, "positive", "the HQS penalty's growth per layer", directive.span).requiring(
        c.penalty.weight, "nonnegative", f"the weight of {math(c.penalty.term)}",
        p.span_of_term(c.penalty.term) or directive.span)
    beta = beta0 * growth ** (atoms.LAYER - 1)
    p, system = c.split_system(p, directive, beta, "hqs")
    with_operators = bool(system.grams)
    if system.dense is not None and identity_multiple(system.dense) is None:
        admm = splitting_methods(program, directive, ("admm",))
        raise fail(p, f"derive hqs: the {z.name}-step would solve with the dense matrix "
                   f"{math(system.dense.subs(atoms.LAYER, sp.Symbol('t')))}, which changes with the layer t",
                   directive.span,
                   f"write `{admm[0]}` in place of `{directive.label()}`: its matrix is factored once" if admm
                   else None)
    p = system_requirements(p, directive, system, f"the {z.name}-step's system")
    try:
        prox, prox_text = build_prox([c.penalty], None, 1 / beta)
    except NoProx as e:  # pragma: no cover - split_composite admits norm1 only
        raise DpcError(e.reason, directive.span).with_source(p.source) from None
    it = Iteration(p, directive, z)
    w_value = prox(c.apply(z))
    w = it.temp("w", w_value, shape=c.K_shape)
    rhs = beta * c.adjoint(w)
    if c.bias is not None:
        rhs = rhs - c.bias
    if with_operators:
        it.program, z_value, how = operator_solve(it.program, directive, system, rhs)
    else:
        if option(p, directive, "solve") is not None:
            raise fail(p, f"derive hqs: the {z.name}-step is a division here, there is nothing to solve",
                       directive.kwarg("solve").span, "leave solve out")
        scale = system.eye + (identity_multiple(system.dense) if system.dense is not None else 0)
        z_value, how = rhs / scale, f"the system is {math(scale)}*eye: a division"
    it.assign(z, z_value)
    per_layer = math(beta.subs(atoms.LAYER, sp.Symbol("t")))
    schedule = (f"beta_t = {per_layer} at layer t = 1, 2, ..." if beta.has(atoms.LAYER)
                else f"beta = {math(beta)}, every layer")
    return it.done(
        f"f({z.name}) = {math(c.smooth)}    (quadratic)",
        f"g(v) = {math(c.penalty.term)} at v = {math(c.apply(z))}    (prox: {prox_text})",
        f"split {w.name} = {math(c.apply(z))} by the penalty beta/2*sqnorm({math(c.apply(z))} - {w.name}), no dual; "
        + schedule,
        f"{z.name}-step: {how}")

