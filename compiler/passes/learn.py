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

from dpc import algebra, atoms
from dpc.errors import DpcError
from dpc.ir import Decl, Directive, Program, Step, make_symbol
from dpc.passes.learn_coupled import learn_coupled
from dpc.passes.learn_stepsizes import learn_stepsizes
from dpc.printing import math

TYING = {"tied": True, "untied": False}


def learn(program: Program, directive: Directive) -> Program:
    for item in directive.items:
        words = [w for w, _ in item]
        if words[0] == "weights" and "coupled" in words[1:]:  # LISTA-CP: z + W (x - D z)
            program = learn_coupled(program, directive, item)
        elif words[0] == "stepsizes":  # ALISTA: a step size and a threshold per layer
            program = learn_stepsizes(program, directive, item)
        elif words[0] == "weights":
            program = _learn_weights(program, directive, item)
        else:
            if len(item) > 1:
                raise _fail(program, f"'{' '.join(words)}': name one param or hyper per list entry", item[1][1])
            program = _learn_name(program, *item[0])
    return program


def _fail(program, message, span, hint=None):
    return DpcError(message, span, hint).with_source(program.source)


def _learn_name(program: Program, name: str, span) -> Program:
    if not program.has(name):
        raise _fail(program, f"'{name}' is not declared", span)
    decl = program.decl(name)
    if decl.kind in ("let",):
        raise _fail(program, f"'{name}' is a let, computed from others; learn what it is computed from", span)
    if decl.kind not in ("param", "hyper", "weight"):
        raise _fail(program, f"'{name}' is a {decl.kind}; only params and hypers can be learned", span)
    return program.with_decl(replace(decl, trainable=True)).noted(f"learn {name}", f"{name} is trainable")


def _learn_weights(program: Program, directive: Directive, item) -> Program:
    tied = False
    for word, span in item[1:]:
        if word not in TYING:
            raise _fail(program, f"unknown option '{word}' for learn weights", span,
                        "write tied or untied (or coupled)")
        tied = TYING[word]
    if program.step is None and program.closed_form:  # derive closed: free the layer's weight and bias
        from dpc.passes.closed import learn_closed_weights
        return learn_closed_weights(program, directive)
    if program.step is None:
        raise _fail(program, "learn weights needs an update", directive.span,
                    "put it after derive (or write an update)")
    variables = [d.symbol for d in program.of_kind("var", "input") if d.shape]
    temps = {make_symbol(n, program.decl(n).shape): e for n, e in program.step.lets}
    learned: list[Decl] = []
    lines: list[str] = []
    counter = [0]

    def rewrite(expr):
        if isinstance(expr, atoms.THRESHOLD_ATOMS):
            counter[0] += 1
            return _linearise(program, directive, expr, variables, temps, counter[0], learned, lines, not tied)
        if not expr.args:
            return expr
        new = [rewrite(a) for a in expr.args]
        return expr if all(a is b for a, b in zip(new, expr.args)) else expr.func(*new)

    step = program.step.map(rewrite)
    if not learned:
        raise _fail(program, "learn weights found no soft/softpos/hard threshold in the update to linearise",
                    directive.span, "learn the params by name instead, e.g. learn D, lam")
    if counter[0] > 1:  # several atoms: number the names so they stay distinct (done in _linearise)
        pass
    p = replace(program, step=step, tied=tied)
    for d in learned:
        p = p.with_decl(d)
    sharing = "shared by all layers" if tied else "one copy per layer"
    return p.noted(directive.label(), *lines, f"weights: {sharing}",
                   *[f"{name} <- {math(e)}" for name, e in step.assigns])


def _linearise(program, directive, atom, variables, temps, index, learned, lines, per_layer):
    arg, threshold = atom.args[0], atom.args[1]
    inlined = arg.xreplace(temps) if temps else arg  # see through update temporaries
    # temporaries may reference earlier ones; inline to a fixed point
    while temps and any(inlined.has(t) for t in temps):
        inlined = inlined.xreplace(temps)
    try:
        coeffs, bias = algebra.affine_parts(inlined, variables)
    except algebra.NotAffine as e:
        raise _fail(program, f"learn weights: the argument of {math(atom)} is not affine in the states and inputs "
                    f"({math(e.term)})", directive.span) from None
    suffix = "" if index == 1 else str(index)
    inputs = [v for v in coeffs if program.decl(v.name).kind == "input"]
    states = [v for v in coeffs if program.decl(v.name).kind == "var"]
    new_arg = sp.ZeroMatrix(*arg.shape)
    terms = []
    rows = str(arg.shape[0])
    for group, base in ((inputs, "W"), (states, "S")):
        for v in group:
            name = program.fresh_name(base + ("" if len(group) == 1 else f"_{v.name}") + suffix)
            shape = (rows, str(v.shape[0]))
            learned.append(Decl(name, "weight", shape, coeffs[v], directive.span, trainable=True,
                                per_layer=per_layer))
            lines.append(f"{name} = {math(coeffs[v])}")
            terms.append(make_symbol(name, shape) * v)
    if bias is not None and not algebra.is_zero(bias):
        name = program.fresh_name("b" + suffix)
        learned.append(Decl(name, "weight", (rows,), bias, directive.span, trainable=True, per_layer=per_layer))
        lines.append(f"{name} = {math(bias)}")
        terms.append(make_symbol(name, (rows,)))
    theta = program.fresh_name("theta" + suffix)
    learned.append(Decl(theta, "weight", (), threshold, directive.span, trainable=True, per_layer=per_layer))
    lines.append(f"{theta} = {math(threshold)}")
    new_arg = sp.MatAdd(*terms) if len(terms) > 1 else terms[0]
    return atom.func(new_arg, sp.Symbol(theta, real=True), *atom.args[2:])
