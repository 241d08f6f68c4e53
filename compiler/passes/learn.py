"""learn: what becomes trainable, and whether layers share it.

`learn weights [tied | untied]`: inside every thresholding atom (soft, softpos, hard)
of the update, expand the argument, collect the coefficient of each state (S) and of
each input (W), the constant term (b, if any) and the threshold (theta); each becomes
a parameter initialised to its symbolic value, so the untrained network is the
algorithm it came from. untied (the default) gives every layer its own copy.

`learn NAME, ...`: those params or hypers become trainable as they are; lets computed
from them are recomputed in forward.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from dpc import algebra
from dpc.ir import Decl, Directive, Program, make_symbol
from dpc.passes.learn_coupled import learn_coupled
from dpc.passes.learn_stepsizes import learn_stepsizes
from dpc.passes.thresholds import fail, inline_temps, map_thresholds, tying, weight, with_learned
from dpc.printing import math

def learn(program: Program, directive: Directive) -> Program:
    for item in directive.items:
        form = LEARN_FORMS.get(item[0][0])
        if form is not None:
            learned = [d.name for d in program.of_kind("weight")]
            if learned:  # linearising an update a second time would learn copies of the learned weights
                raise fail(program, f"learn {item[0][0]}: the update's weights are already learned "
                           f"({', '.join(learned)})", item[0][1],
                           "say learn weights (or stepsizes, or coupled) once")
            program = form(program, directive, item)
        elif len(item) > 1:
            raise fail(program, f"'{' '.join(w for w, _ in item)}': name one param or hyper per list entry",
                       item[1][1])
        else:
            program = _learn_name(program, *item[0])
    return program


def _learn_name(program: Program, name: str, span) -> Program:
    if not program.has(name):
        raise fail(program, f"'{name}' is not declared", span)
    decl = program.decl(name)
    if decl.kind in ("let",):
        raise fail(program, f"'{name}' is a let, computed from others; learn what it is computed from", span)
    if decl.kind not in ("param", "hyper", "weight"):
        raise fail(program, f"'{name}' is a {decl.kind}; only params and hypers can be learned", span)
    return program.with_decl(replace(decl, trainable=True)).noted(f"learn {name}", f"{name} is trainable")


def _learn_weights(program: Program, directive: Directive, item) -> Program:
    if "coupled" in [w for w, _ in item[1:]]:  # LISTA-CP: z + W (x - D z)
        return learn_coupled(program, directive, item)
    tied = tying(program, item, allowed=("coupled",))
    if program.step is None and program.closed_form:  # derive closed: free the layer's weight and bias
        from dpc.passes.closed import learn_closed_weights
        return learn_closed_weights(program, directive)
    if program.step is None:
        raise fail(program, "learn weights needs an update", directive.span,
                   "put it after derive (or write an update)")
    variables = [d.symbol for d in program.of_kind("var", "input") if d.shape]
    learned: list[Decl] = []
    lines: list[str] = []
    taken: set[str] = set()
    step, count = map_thresholds(program, lambda atom, index: _linearise(
        program, directive, atom, variables, index, learned, lines, not tied, taken))
    if not count:
        raise fail(program, "learn weights found no soft/softss/softpos/hard threshold in the update to linearise",
                   directive.span, "learn the params by name instead, e.g. learn D, lam")
    sharing = "shared by all layers" if tied else "one copy per layer"
    return with_learned(program, step, tied, learned).noted(
        directive.label(), *lines, f"weights: {sharing}", *[f"{name} <- {math(e)}" for name, e in step.assigns])


def _linearise(program, directive, atom, variables, index, learned, lines, per_layer, taken):
    """soft(arg, t) -> soft(W @ x + S @ z + b, theta), each weight initialised to its coefficient in arg."""
    arg, threshold = atom.args[0], atom.args[1]
    try:
        coeffs, bias = algebra.affine_parts(inline_temps(program, arg), variables)
    except algebra.NotAffine as e:
        raise fail(program, f"learn weights: the argument of {math(atom)} is not affine in the states and inputs "
                   f"({math(e.term)})", directive.span) from None
    suffix = "" if index == 1 else str(index)
    inputs = [v for v in coeffs if program.decl(v.name).kind == "input"]
    states = [v for v in coeffs if program.decl(v.name).kind == "var"]
    terms = []
    rows = str(arg.shape[0])
    for group, base in ((inputs, "W"), (states, "S")):
        for v in group:
            name = base + ("" if len(group) == 1 else f"_{v.name}") + suffix
            w = weight(program, name, (rows, str(v.shape[0])), coeffs[v], directive, per_layer, taken)
            learned.append(w)
            lines.append(f"{w.name} = {math(coeffs[v])}")
            terms.append(make_symbol(w.name, w.shape) * v)
    if bias is not None and not algebra.is_zero(bias):
        b = weight(program, "b" + suffix, (rows,), bias, directive, per_layer, taken)
        learned.append(b)
        lines.append(f"{b.name} = {math(bias)}")
        terms.append(make_symbol(b.name, b.shape))
    theta = weight(program, "theta" + suffix, (), threshold, directive, per_layer, taken)
    learned.append(theta)
    lines.append(f"{theta.name} = {math(threshold)}")
    new_arg = sp.MatAdd(*terms) if len(terms) > 1 else terms[0]
    return atom.func(new_arg, sp.Symbol(theta.name, real=True), *atom.args[2:])


# `learn FORM ...`: the first word picks the form; any other first word names a param or hyper.
LEARN_FORMS = {"weights": _learn_weights, "stepsizes": learn_stepsizes}
