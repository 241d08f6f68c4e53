"""learn weights coupled [tied | untied]: LISTA-CP (Chen et al. 2018), the weights coupled to D.

Inside every thresholding atom the argument, affine in the state z and the input x, is
A x + S z + b. Coupling keeps ISTA's residual form: it finds R with S = I - A R, so that

    soft(A x + S z + b, theta)  ->  soft(z + W @ (x - R @ z) + b, theta)

and learns only W (initialised to A) and theta; R (D for the LASSO) stays fixed. Untied by
default: every layer its own W_t and theta_t. For ISTA on the LASSO, A = step*D.T, R = D.
"""
from __future__ import annotations

import sympy as sp
from sympy import Identity, MatAdd, MatMul

from dpc import algebra, atoms
from dpc.ir import Directive, Program, make_symbol
from dpc.passes.thresholds import Tying, fail, inline_temps, map_thresholds, weight, weight_tying, with_learned
from dpc.printing import math


def learn_coupled(program: Program, directive: Directive, item) -> Program:
    tying = weight_tying(program, item, allowed=("coupled",))
    if program.step is None:
        raise fail(program, "learn weights needs an update", directive.span, "put it after derive (or write an update)")
    variables = [d.symbol for d in program.of_kind("var", "input") if d.shape]
    learned, lines, taken = [], [], set()

    def couple(atom, index):
        arg, threshold = inline_temps(program, atom.args[0]), atom.args[1]
        try:
            coeffs, bias = algebra.affine_parts(arg, variables)
        except algebra.NotAffine as e:
            raise fail(program, f"learn weights coupled: the argument of {math(atom)} is not affine in the states and "
                       f"inputs ({math(e.term)})", directive.span) from None
        inputs = [v for v in coeffs if program.decl(v.name).kind == "input"]
        states = [v for v in coeffs if program.decl(v.name).kind == "var"]
        if len(inputs) != 1 or len(states) != 1:
            raise fail(program, f"learn weights coupled needs one input and one state in {math(atom)}, found "
                       f"{len(inputs)} and {len(states)}", directive.span, "use learn weights untied")
        x, z = inputs[0], states[0]
        R = _right_factor(coeffs[x], coeffs[z], z)
        if R is None:
            raise fail(program, f"learn weights coupled: in {math(atom)} the coefficient of {z.name}, "
                       f"{math(coeffs[z])}, is not I - A @ R for A = {math(coeffs[x])}, the coefficient of {x.name}",
                       directive.span, "coupling needs ISTA's residual form z - A @ (R @ z - x)")
        suffix = "" if index == 1 else str(index)
        W = weight(program, "W" + suffix, (str(z.shape[0]), str(x.shape[0])), coeffs[x], directive, tying, taken, also=("W",))
        theta = weight(program, "theta" + suffix, (), threshold, directive, tying, taken, also=("theta",))
        learned.extend([W, theta])
        lines.extend([f"{W.name} = {math(coeffs[x])}", f"{theta.name} = {math(threshold)}",
                      f"{math(coeffs[z])} = eye - {W.name} @ {math(R)}: {math(R)} stays fixed"])
        terms = [z, make_symbol(W.name, W.shape) * (x - R * z)]
        if bias is not None and not algebra.is_zero(bias):
            terms.append(bias)
        return atom.func(MatAdd(*terms), sp.Symbol(theta.name, real=True), *atom.args[2:])

    step, count = map_thresholds(program, couple)
    if not count:
        raise fail(program, f"learn weights coupled found no threshold ({atoms.names_of(atoms.THRESHOLD_ATOMS)}) in the update",
                   directive.span)
    tied = tying.finish(program, directive, learned)
    return with_learned(program, step, tied, learned).noted(
        directive.label(), *lines, f"weights: {Tying.sharing(learned, tied)}",
                   *[f"{name} <- {math(e)}" for name, e in step.lets + step.assigns])


def _right_factor(A, S, z):
    """R with S = I - A @ R, read off the terms of I - S (each A's factors times the rest); None if none."""
    a_coeff, a_mats = _factors(A)
    R = []
    for term in algebra.terms_of(sp.expand(Identity(z.shape[0]) - S)):
        coeff, mats = _factors(term)
        if len(mats) <= len(a_mats) or list(mats[:len(a_mats)]) != list(a_mats):
            return None
        rest = mats[len(a_mats):]
        R.append(coeff / a_coeff * (MatMul(*rest) if len(rest) > 1 else rest[0]))
    if not R:
        return None
    R = MatAdd(*R).doit() if len(R) > 1 else R[0]
    residual = sp.expand(A * R - (Identity(z.shape[0]) - S))
    return R if algebra.is_zero(residual.doit()) else None


def _factors(expr):
    if isinstance(expr, MatMul):
        coeff, mats = expr.as_coeff_matrices()
        return coeff, list(mats)
    return sp.Integer(1), [expr]
