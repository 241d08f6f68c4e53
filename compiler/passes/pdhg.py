"""derive pdhg(tau = t, sigma = s): the primal-dual hybrid gradient method (Chambolle & Pock 2011) for
min f(z) + g(K z), with the dual variable y of K z and the extrapolated point zbar:

    y    <- prox_{s g*}(y + s K zbar)           (Moreau: v - s prox_{g/s}(v / s); for g = a*norm1 this is
                                                  clamp(v, -a, a), the projection onto the dual ball)
    z    <- prox_{t f}(z - t K.T y)  = solve(eye + t H, v - t b)   for grad f(z) = H z + b
    zbar <- 2 z - z_old

each line reading the values the lines above it just computed; y starts at 0, zbar at z's start. Without
tau and sigma both default to 0.99/opnorm(K), so that tau*sigma*opnorm(K)^2 < 1 (the convergence condition).
"""
from __future__ import annotations

import sympy as sp

from dpc import atoms
from dpc.ir import Decl, Directive, Program, StackRows
from dpc.passes.composite import positive_semidefinite, solve_or_divide, split_composite
from dpc.passes.derive import Option, derive_method, option
from dpc.passes.firstorder import Iteration, extrapolate, positive_scalar
from dpc.passes.operator_solve import OperatorSystem, operator_solve, system_requirements
from dpc.passes.splitting import fail, hessian_requirements
from dpc.printing import math


@derive_method("pdhg", Option("tau", positive_scalar), Option("sigma", positive_scalar))
def derive_pdhg(program: Program, directive: Directive) -> Program:
    c = split_composite(program, directive)
    p, z, K = c.program, c.var, c.K
    if c.hessian is not None and not positive_semidefinite(p, c.hessian)[0]:
        raise fail(p, f"derive pdhg: cannot show that f is convex (Hessian {math(c.hessian)})", directive.span)
    p = hessian_requirements(p, c.hessian, directive.span, "it keeps f convex")
    p, tau, sigma, steps_note = _steps(p, directive, c)
    a = c.penalty.weight
    p = p.requiring(a, "nonnegative", f"the weight of {math(c.penalty.term)}",
                    p.span_of_term(c.penalty.term) or directive.span)
    it = Iteration(p, directive, z)
    y = it.state("y", f"dual variable of {math(c.apply(z))}", start=0, shape=c.K_shape)
    zbar = it.state(f"{z.name}bar", "extrapolated point")
    # prox of s*g* for g = a*norm1, by Moreau's identity: v - s*soft(v/s, a/s) = clamp(v, -a, a)
    y_next = it.temp(f"{y.name}_next", atoms.Clamp(y + sigma * c.apply(zbar), -a, a), shape=c.K_shape)
    v = z - tau * c.adjoint(y_next)
    bias = c.bias if c.bias is not None else sp.ZeroMatrix(*z.shape)
    if c.system is not None:  # operators in f: eye + tau*H solved matrix-free (passes/operator_solve.py)
        system = OperatorSystem(z, eye=sp.Integer(1)).plus(c.system.scaled(tau))
        it.program = system_requirements(it.program, directive, system, "the prox of tau*f")
        it.program, z_value, how = operator_solve(it.program, directive, system, v - tau * bias)
        how = "eye + tau*H: " + how
    elif c.hessian is None:
        z_value, how = v - tau * bias, "f is linear: prox_{tau f}(v) = v - tau*b"
    else:
        it.program, z_value, how = solve_or_divide(it.program, directive, sp.Identity(z.shape[0]) + tau * c.hessian,
                                                   v - tau * bias, "A", f"the prox of tau*f: eye + tau*H")
    z_next = it.temp(f"{z.name}_next", z_value)
    it.assign(y, y_next)
    it.assign(z, z_next)
    it.assign(zbar, extrapolate(z_next, z))
    return it.done(
        f"f({z.name}) = {math(c.smooth)}    (quadratic)",
        f"g(v) = {math(c.penalty.term)} at v = {math(c.apply(z))}; prox of sigma*g*: clamp(v, -{math(a)}, {math(a)}) "
        "(Moreau's identity)",
        steps_note,
        f"dual {y.name} starts at 0, {zbar.name} at {z.name}'s start",
        f"prox of tau*f: {how}")


def _steps(program: Program, directive: Directive, c):
    K = c.K
    given = {key: directive.kwarg(key) is not None for key in ("tau", "sigma")}
    default = None
    note = ""
    if not all(given.values()):
        if not c.operator and K.is_Identity:
            default = sp.Rational(99, 100)
            note = "opnorm(K) = 1: "
        elif not c.operator and isinstance(K.shape[0], StackRows) and c.opnorm().is_number:  # 2*y of y : R[c, h, w]
            default = sp.Rational(99, 100) / c.opnorm()
            note = f"opnorm(K) = {math(c.opnorm())}: "
        elif c.operator and c.opnorm().is_number:  # grad2d: sqrt(8), diff: 2, from the operator's symbol
            default = sp.Rational(99, 100) / c.opnorm()
            note = f"the operator norm of {type(K).dp_name} is at most {math(c.opnorm())}: "
        elif c.operator:  # conv: a bound that reads its filters
            name = program.fresh_name("normK")
            program = program.with_decl(Decl(name, "let", (), c.opnorm(), directive.span,
                                             note=f"a bound on the operator norm of {math(K)}"))
            symbol = sp.Symbol(name, real=True)
            program = program.requiring(symbol, "positive", f"{name} bounds opnorm of {math(K)}; the default "
                                        f"steps are 0.99/{name}", directive.span)
            default = sp.Rational(99, 100) / symbol
            note = f"{name} = {math(c.opnorm())} >= opnorm({math(K)}): "
        else:
            name = program.fresh_name("normK")
            program = program.with_decl(Decl(name, "let", (), c.opnorm(), directive.span,  # |a| for a*eye of a stack
                                             note=f"opnorm of {math(K)}"))
            symbol = sp.Symbol(name, real=True)
            program = program.requiring(symbol, "positive", f"{name} = opnorm({math(K)}); the default steps are "
                                        f"0.99/{name}", directive.span)
            default = sp.Rational(99, 100) / symbol
            note = f"{name} = {math(c.opnorm())}: "
    values = {}
    for key in ("tau", "sigma"):
        if given[key]:
            values[key] = option(program, directive, key)
            program = program.requiring(values[key], "positive", f"the PDHG step {key}", directive.span)
        else:  # a let, so the layers read `tau * ...`, not the default's formula
            name = program.fresh_name(key)
            program = program.with_decl(Decl(name, "let", (), default, directive.span, note=f"the PDHG step {key}"))
            values[key] = sp.Symbol(name, real=True)
    tau, sigma = values["tau"], values["sigma"]
    if any(given.values()):
        program = _step_condition(program, directive, c, tau, sigma)
    shown = ", ".join(f"{key} = {math(program.decl(v.name).value) if not given[key] else math(v)}"
                      for key, v in (("tau", tau), ("sigma", sigma)))
    if not all(given.values()):
        shown = note + shown + " (tau*sigma*opnorm(K)^2 = 0.98 < 1)" if not any(given.values()) else \
            note + shown
    return program, tau, sigma, shown


def _step_condition(program: Program, directive: Directive, c, tau, sigma) -> Program:
    """Chambolle-Pock's condition tau*sigma*opnorm(K)^2 < 1 for given steps: an error at compile time when
    it is a number at the defaults and fails, a requirement (checked at construction) when it reads a param
    or a value given there."""
    from dpc.requirements import default_number, with_lets
    norm = c.opnorm()
    product = sp.simplify(with_lets(program, tau * sigma * norm ** 2))
    span = next((sp_ for k, _, sp_ in directive.kwargs if k in ("tau", "sigma")), directive.span)
    names = f"tau = {math(tau)}, sigma = {math(sigma)}, opnorm(K) = {math(norm)}"
    value = default_number(program, product)
    if value is not None and value >= 1 - 1e-12:
        raise fail(program, f"derive pdhg: tau*sigma*opnorm(K)^2 = {value:.4g} with {names}"
                   + ("" if product.is_number else " at the defaults")
                   + "; Chambolle-Pock converges only for tau*sigma*opnorm(K)^2 < 1", span,
                   "write `derive pdhg`: without tau and sigma dpc takes 0.99/opnorm(K) for both")
    if product.is_number:
        return program
    return program.requiring(1 - product, "positive", f"PDHG's steps must have tau*sigma*opnorm(K)^2 < 1, {names}",
                             span)
