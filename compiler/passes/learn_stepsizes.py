"""learn stepsizes [tied | untied]: only each layer's step size and threshold are learned (ALISTA).

Inside every thresholding atom the argument is the state plus a scaled step,
z - c * G (G any vector expression: W.T @ (D @ z - x) for ALISTA). The scalar c becomes the
learned step size gamma (initialised to c) and the threshold becomes theta:

    soft(z - c * G, t)  ->  soft(z - gamma * G, theta)

Matrices stay as written (fixed, or computed at construction like analytic(D)). Untied by
default: 2 numbers per layer, 2T in all (Liu et al. 2019).
"""
from __future__ import annotations

import sympy as sp
from sympy import MatAdd, MatMul

from dpc import algebra, atoms
from dpc.ir import Directive, Program
from dpc.passes.thresholds import Tying, fail, inline_temps, map_thresholds, weight, weight_tying, with_learned
from dpc.printing import math


def learn_stepsizes(program: Program, directive: Directive, item) -> Program:
    tying = weight_tying(program, item)
    if program.step is None:
        raise fail(program, "learn stepsizes needs an update", directive.span,
                   "put it after derive (or write an update)")
    states = {d.symbol for d in program.states if d.shape}
    learned, lines, taken = [], [], set()

    def learn_step(atom, index):
        arg, threshold = inline_temps(program, atom.args[0]), atom.args[1]
        kept, scaled = [], []
        for term in algebra.terms_of(arg):
            (kept if term in states else scaled).append(_scalar_part(term))
        if not kept or not scaled:
            raise fail(program, f"learn stepsizes needs the argument of {math(atom)} to be a state plus a step, "
                       "z - c * G", directive.span, "e.g. update z <- soft(z - W.T @ (D @ z - x), lam)")
        c = scaled[0][0]
        step_body = MatAdd(*[(k / c) * body for k, body in scaled]).doit() if len(scaled) > 1 else scaled[0][1]
        sign = -1 if c.could_extract_minus_sign() else 1
        suffix = "" if index == 1 else str(index)
        gamma = weight(program, "gamma" + suffix, (), sign * c, directive, tying, taken, also=("gamma",))
        theta = weight(program, "theta" + suffix, (), threshold, directive, tying, taken, also=("theta",))
        learned.extend([gamma, theta])
        lines.extend([f"{gamma.name} = {math(gamma.value)}  (step size of {math(step_body)})",
                      f"{theta.name} = {math(threshold)}"])
        step_term = sign * sp.Symbol(gamma.name, real=True) * step_body
        return atom.func(MatAdd(*[body for _, body in kept], step_term), sp.Symbol(theta.name, real=True),
                         *atom.args[2:])

    step, count = map_thresholds(program, learn_step)
    if not count:
        raise fail(program, f"learn stepsizes found no threshold ({atoms.names_of(atoms.THRESHOLD_ATOMS)}) in the update",
                   directive.span)
    tied = tying.finish(program, directive, learned)
    per = Tying.sharing(learned, tied) if tied is not False else f"one copy per layer: {len(learned)} numbers a layer"
    return with_learned(program, step, tied, learned).noted(directive.label(), *lines, f"step sizes and thresholds: {per}",
                   *[f"{name} <- {math(e)}" for name, e in step.lets + step.assigns])


def _scalar_part(term):
    """term = c * body with c a scalar -> (c, body)."""
    if isinstance(term, MatMul):
        coeff, mats = term.as_coeff_matrices()
        return coeff, (MatMul(*mats) if len(mats) > 1 else mats[0])
    return sp.Integer(1), term
