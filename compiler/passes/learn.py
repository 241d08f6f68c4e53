"""learn: what becomes trainable, and whether layers share it.

`learn weights [tied | untied] [except NAME ...]`: inside every thresholding atom (soft,
softpos, hard) of the update, expand the argument, collect the coefficient of each state (S)
and of each input (W), the constant term (b, if any) and the threshold (theta); each becomes
a parameter initialised to its symbolic value, so the untrained network is the algorithm it
came from. untied (the default) gives every layer its own copy. The names after `except`
(a weight, W2; or a kind, W, S, b, theta) take the other tying: `learn weights untied except W`
is the reference LISTA (one input weight W for all layers, S_t and theta_t per layer).

`learn NAME, ...`: those params or hypers become trainable as they are; lets computed
from them are recomputed in forward. `learn rho untied` gives every layer its own copy (a
leading steps axis, listed in per_layer_parameters), each starting at the given value; a
tying word after a name applies to the names listed right before it too (`learn lam, step
untied` unties both), back to the previous tying word or learn form. `tied` (the default
for names) is one copy shared by every layer.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from dpc import algebra, atoms
from dpc.ir import Decl, Directive, Program, make_symbol
from dpc.passes.learn_coupled import learn_coupled
from dpc.passes.learn_rbf import learn_influence, learn_shrink
from dpc.passes.learn_stepsizes import learn_stepsizes
from dpc.passes.solves import close_solves, open_solves
from dpc.passes.thresholds import TYING, Tying, fail, inline_temps, map_thresholds, weight, weight_tying, with_learned
from dpc.printing import math

def learn(program: Program, directive: Directive) -> Program:
    name_tying = _name_tying(program, directive.items)
    for item in directive.items:
        form = LEARN_FORMS.get(item[0][0])
        _no_options(program, directive, item)
        if form is not None:
            # linearising an update a second time would learn copies of the learned weights; learned
            # nonlinearities (learn influence, shrink: RBF weights) linearise nothing
            learned = [d.name for d in program.of_kind("weight") if not isinstance(d.value, atoms.RbfFit)]
            if learned and item[0][0] not in RBF_FORMS:  # linearising an update a second time would learn copies of the learned weights
                raise fail(program, f"learn {item[0][0]}: the update's weights are already learned "
                           f"({', '.join(learned)})", item[0][1],
                           "say learn weights (or stepsizes, or coupled) once")
            program = form(program, directive, item)
        else:
            program = _learn_name(program, *item[0], name_tying.get(id(item)))
    return program


def _no_options(program: Program, directive: Directive, item) -> None:
    """Only learn influence and learn shrink take options in parentheses."""
    index = directive.items.index(item)
    args, kwargs = directive.item_options[index] if index < len(directive.item_options) else ((), ())
    if (args or kwargs) and item[0][0] not in RBF_FORMS:
        where = args[0].span if args else kwargs[0][2]
        raise fail(program, f"learn {item[0][0]} takes no options in parentheses", where,
                   f"write learn {' '.join(w for w, _ in item)}")


def _name_tying(program: Program, items) -> dict[int, bool | None]:
    """id(item) -> per_layer (True for untied, False for tied, None when no word says) for the name items
    of a learn list. A tying word closes a group: `learn lam, step untied` unties lam and step; a learn
    form (`weights ...`) also ends a group, so `learn weights untied, lam` leaves lam shared."""
    out: dict[int, bool | None] = {}
    group: list = []
    for item in items:
        if item[0][0] in LEARN_FORMS:
            group = []
            continue
        group.append(item)
        out[id(item)] = None
        if len(item) == 1:
            continue
        if len(item) > 2 or item[1][0] not in TYING:
            word, span = item[2] if len(item) > 2 and item[1][0] in TYING else item[1]
            raise fail(program, f"'{' '.join(w for w, _ in item)}': a learned name takes at most one word "
                       f"after it, tied or untied (got '{word}')", span,
                       "name one param or hyper per list entry, e.g. learn D, lam untied")
        for member in group:
            out[id(member)] = not TYING[item[1][0]]
        group = []
    return out


def _learn_name(program: Program, name: str, span, per_layer: bool | None = None) -> Program:
    if not program.has(name):
        raise fail(program, f"'{name}' is not declared", span)
    decl = program.decl(name)
    if decl.kind in ("let",):
        raise fail(program, f"'{name}' is a let, computed from others; learn what it is computed from", span)
    if decl.kind not in ("param", "hyper", "weight"):
        raise fail(program, f"'{name}' is a {decl.kind}; only params and hypers can be learned", span)
    if per_layer is None:  # no tying word: a name learned before keeps its tying; a new one is shared
        return program.with_decl(replace(decl, trainable=True)).noted(f"learn {name}", f"{name} is trainable")
    if decl.kind == "weight":
        raise fail(program, f"'{name}' is a weight of a learn form; its tying is said there", span,
                   "write learn weights tied (or untied)")
    if per_layer and program.step is None and program.closed_form:
        raise fail(program, f"learn {name} untied: a closed form is one layer, there is nothing to untie", span,
                   f"write learn {name}")
    copies = "one copy per layer, each starting at its given value" if per_layer else "one copy shared by all layers"
    return program.with_decl(replace(decl, trainable=True, per_layer=per_layer)).noted(
        f"learn {name}", f"{name} is trainable: {copies}")


def _learn_weights(program: Program, directive: Directive, item) -> Program:
    if "coupled" in [w for w, _ in item[1:]]:  # LISTA-CP: z + W (x - D z)
        return learn_coupled(program, directive, item)
    tying = weight_tying(program, item, allowed=("coupled",))
    if program.step is None and program.closed_form:  # derive closed: free the layer's weight and bias
        if tying.exceptions:
            raise fail(program, "learn weights ... except: a closed form is one layer, there is nothing to untie",
                       tying.exceptions[0][1], "write learn weights")
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
        program, directive, atom, variables, index, learned, lines, tying, taken), atoms.LINEARISED_ATOMS)
    if not count:
        raise fail(program, f"learn weights found no threshold ({atoms.names_of(atoms.THRESHOLD_ATOMS)}) or "
                   f"projection ({atoms.names_of(atoms.LINEARISED_ATOMS[len(atoms.THRESHOLD_ATOMS):])}) in the "
                   "update to linearise",
                   directive.span, "learn the params by name instead, e.g. learn D, lam")
    tied = tying.finish(program, directive, learned)
    return with_learned(program, step, tied, learned).noted(
        directive.label(), *lines, f"weights: {Tying.sharing(learned, tied)}", *[f"{name} <- {math(e)}" for name, e in step.assigns])


def _linearise(program, directive, atom, variables, index, learned, lines, per_layer, taken):
    """soft(arg, t) -> soft(W @ x + S @ z + b, theta), each weight initialised to its coefficient in arg and
    per layer as per_layer (the form's Tying) says for its name, base and kind; a
    projection of a threshold (clamp(soft(arg, t), lo, hi), the prox of a*norm1 on a box) linearises the
    threshold inside and keeps the projection's bounds."""
    arg = atom.args[0]
    if not isinstance(atom, atoms.THRESHOLD_ATOMS) and isinstance(arg, atoms.LINEARISED_ATOMS):
        inner = _linearise(program, directive, arg, variables, index, learned, lines, per_layer, taken)
        return atom.func(inner, *atom.args[1:])
    per_sample = {d.name for d in program.decls if d.kind in ("input", "var", "temp")}
    opened, inverses = open_solves(inline_temps(program, arg), per_sample)  # solve(A, b), A fixed: linear
    try:
        coeffs, bias = algebra.affine_parts(opened, variables)
    except algebra.NotAffine as e:
        term = close_solves(e.term, inverses)
        right = [v for v in variables if v.shape[1] != 1 and _multiplied_on_the_right(term, v)]
        if right:  # a matrix per sample times something on its right: no left weight W @ X reproduces it
            named = [d.name for d in program.of_kind("param", "hyper")]
            raise fail(program, f"learn weights learns a matrix on the left of each state and input (W @ {right[0].name}); "
                       f"in {math(term)}, {right[0].name} is multiplied on the right, which no such weight "
                       f"reproduces", directive.span,
                       f"learn the params by name instead: learn {', '.join(named)}" if named else None) from None
        raise fail(program, f"learn weights: the argument of {math(atom)} is not affine in the states and inputs "
                   f"({math(term)})", directive.span) from None
    coeffs = {v: close_solves(c, inverses) for v, c in coeffs.items()}
    bias = close_solves(bias, inverses) if bias is not None else None
    suffix = "" if index == 1 else str(index)
    inputs = [v for v in coeffs if program.decl(v.name).kind == "input"]
    states = [v for v in coeffs if program.decl(v.name).kind == "var"]
    terms = []
    rows = str(arg.shape[0])
    for group, base in ((inputs, "W"), (states, "S")):
        for v in group:
            name = base + ("" if len(group) == 1 else f"_{v.name}") + suffix
            w = weight(program, name, (rows, str(v.shape[0])), coeffs[v], directive, per_layer, taken,
                       also=(base, base + ("" if len(group) == 1 else f"_{v.name}")))
            learned.append(w)
            lines.append(f"{w.name} = {math(coeffs[v])}")
            terms.append(make_symbol(w.name, w.shape) * v)
    if bias is not None and not algebra.is_zero(bias):
        # of the argument's shape: a vector, or a matrix for a matrix state (each entry its own bias)
        shape = (rows,) if arg.shape[1] == 1 else (rows, str(arg.shape[1]))
        b = weight(program, "b" + suffix, shape, bias, directive, per_layer, taken, also=("b",))
        learned.append(b)
        lines.append(f"{b.name} = {math(bias)}")
        terms.append(make_symbol(b.name, b.shape))
    new_arg = sp.MatAdd(*terms) if len(terms) > 1 else terms[0]
    if not isinstance(atom, atoms.THRESHOLD_ATOMS):  # a projection (clamp, relu): its bounds are the constraint
        return atom.func(new_arg, *atom.args[1:])
    threshold = atom.args[1]
    theta = weight(program, "theta" + suffix, (), threshold, directive, per_layer, taken, also=("theta",))
    learned.append(theta)
    lines.append(f"{theta.name} = {math(threshold)}")
    return atom.func(new_arg, sp.Symbol(theta.name, real=True), *atom.args[2:])


def _multiplied_on_the_right(term, v) -> bool:
    """Whether a product in term has the matrix v (a per-sample matrix) before its last factor."""
    for product in [term, *term.atoms(sp.MatMul)]:
        if isinstance(product, sp.MatMul):
            mats = product.as_coeff_matrices()[1]
            if any(m.has(v) for m in mats[:-1]):
                return True
    return False


# `learn FORM ...`: the first word picks the form; any other first word names a param or hyper.
LEARN_FORMS = {"weights": _learn_weights, "stepsizes": learn_stepsizes, "influence": learn_influence,
               "shrink": learn_shrink}
RBF_FORMS = ("influence", "shrink")  # learned nonlinearities (passes/learn_rbf.py), options in parentheses
