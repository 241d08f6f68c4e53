"""derive admm(rho = r): the alternating direction method of multipliers for min f(z) + g(K z).

With the split w = K z and the scaled dual u (Boyd et al. 2011, section 3.1.1):

    z <- argmin_z f(z) + r/2 ||K z - w + u||^2  = solve(H + r K.T K, r K.T (w - u) - b)
    w <- prox_{g/r}(K z + u)
    u <- u + K z - w

for grad f(z) = H z + b; each line reads the values the lines above it just computed. w and u start
at 0. The matrix H + r K.T K is a let: built (and factored) once at construction when it holds no
learned value. rho defaults to 1. With operators in f or K (conv, grad2d, diff) the z-step system is solved
matrix-free (passes/operator_solve.py): by the FFT when every operator is a circular convolution, else by
conjugate gradients (`solve = cg(iters = k)`, 20 steps by default).
"""
from __future__ import annotations

import sympy as sp

from dpc import atoms
from dpc.errors import DpcError
from dpc.ir import Directive, Program
from dpc.passes.composite import positive_semidefinite, solve_or_divide, split_composite
from dpc.passes.derive import Option, derive_method, option
from dpc.passes.firstorder import Iteration, positive_scalar
from dpc.passes.prox import NoProx, build_prox
from dpc.passes.operator_solve import FFT, operator_solve, solve_option, system_requirements
from dpc.passes.splitting import fail, hessian_requirements
from dpc.printing import math


@derive_method("admm", Option("rho", positive_scalar, sp.Integer(1)), Option("solve", solve_option))
def derive_admm(program: Program, directive: Directive) -> Program:
    c = split_composite(program, directive)
    p, z, K = c.program, c.var, c.K
    rho = option(p, directive, "rho")
    p = p.requiring(rho, "positive", "the ADMM penalty rho", directive.span).requiring(
        c.penalty.weight, "nonnegative", f"the weight of {math(c.penalty.term)}",
        p.span_of_term(c.penalty.term) or directive.span)
    if c.operator or c.system is not None:  # operators in the z-step: a matrix-free solve (passes/operator_solve.py)
        return _admm_with_operators(p, directive, c, rho)
    if option(p, directive, "solve") == FFT:
        raise fail(p, f"derive admm: solve = fft needs a circulant {z.name}-step system (every operator a circular "
                   f"convolution), but it is the matrix H + rho*K.T@K", directive.kwarg("solve").span,
                   "write solve = cg(iters = 10), or leave solve out for a direct solve (factored once)")
    psd, eye = positive_semidefinite(p, c.hessian)
    p = hessian_requirements(p, c.hessian, directive.span, f"it keeps the {z.name}-step's matrix positive definite")
    if not psd or not (eye or K.is_Identity):
        raise fail(p, f"derive admm: cannot show that the {z.name}-step has one solution "
                   f"(H + rho*K.T@K with H = {math(c.hessian) if c.hessian is not None else '0'}, K = {math(K)})",
                   directive.span, f"add a ridge term to the objective: + 0.5*sqnorm({z.name}) (any c*sqnorm({z.name}), c > 0, makes "
                   "it so)")
    it = Iteration(p, directive, z)
    w = it.state("w", f"split variable, = {math(K @ z)}", start=0, shape=c.K_shape)
    u = it.state("u", "scaled dual variable", start=0, shape=c.K_shape)
    system = (c.hessian + rho * K.T @ K) if c.hessian is not None else rho * K.T @ K
    rhs = rho * K.T @ (w - u) - (c.bias if c.bias is not None else sp.ZeroMatrix(*z.shape))
    it.program, z_value, how = solve_or_divide(it.program, directive, system, rhs, "A",
                                               f"the {z.name}-step's matrix H + rho*K.T@K")
    iters = option(it.program, directive, "solve")
    if iters is not None and isinstance(z_value, atoms.Solve):  # warm-started at the previous z
        z_value = atoms.CG(z_value.args[0], rhs, z, iters)
        how += f", solved by {iters} conjugate-gradient steps from the previous {z.name}"
    try:
        prox, prox_text = build_prox([c.penalty], None, 1 / rho)
    except NoProx as e:  # pragma: no cover - split_composite admits norm1 only
        raise DpcError(e.reason, directive.span).with_source(it.program.source) from None
    z_next = it.temp(f"{z.name}_next", z_value)
    w_next = it.temp(f"{w.name}_next", prox(K @ z_next + u), shape=c.K_shape)
    it.assign(z, z_next)
    it.assign(w, w_next)
    it.assign(u, u + K @ z_next - w_next)
    g = math(c.penalty.term).replace(math(K @ z), "v") if not K.is_Identity else math(c.penalty.term)
    return it.done(
        f"f({z.name}) = {math(c.smooth)}    (quadratic)",
        f"g(v) = {g}, v = {math(K @ z)}    (prox: {prox_text})",
        f"split {w.name} = {math(K @ z)}, scaled dual {u.name}; both start at 0; rho = {math(rho)}",
        f"{z.name}-step: {how}")



def _admm_with_operators(p: Program, directive: Directive, c, rho) -> Program:
    """ADMM whose z-step system H + rho*K.T K holds operators (conv, grad2d, diff): solved matrix-free, by the
    FFT when it is circulant, else by conjugate gradients (passes/operator_solve.py)."""
    z = c.var
    p, system = c.split_system(p, directive, rho, "admm")
    p = system_requirements(p, directive, system, f"the {z.name}-step's system")
    it = Iteration(p, directive, z)
    w = it.state("w", f"split variable, = {math(c.apply(z))}", start=0, shape=c.K_shape)
    u = it.state("u", "scaled dual variable", start=0, shape=c.K_shape)
    rhs = rho * c.adjoint(w - u)
    if c.bias is not None:
        rhs = rhs - c.bias
    it.program, z_value, how = operator_solve(it.program, directive, system, rhs)
    try:
        prox, prox_text = build_prox([c.penalty], None, 1 / rho)
    except NoProx as e:  # pragma: no cover - split_composite admits norm1 only
        raise DpcError(e.reason, directive.span).with_source(it.program.source) from None
    z_next = it.temp(f"{z.name}_next", z_value)
    w_next = it.temp(f"{w.name}_next", prox(c.apply(z_next) + u), shape=c.K_shape)
    it.assign(z, z_next)
    it.assign(w, w_next)
    it.assign(u, u + c.apply(z_next) - w_next)
    return it.done(
        f"f({z.name}) = {math(c.smooth)}    (quadratic)",
        f"g(v) = {math(c.penalty.term)} at v = {math(c.apply(z))}    (prox: {prox_text})",
        f"split {w.name} = {math(c.apply(z))}, scaled dual {u.name}; both start at 0; rho = {math(rho)}",
        f"{z.name}-step: {how}")
