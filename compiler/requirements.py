"""What a derivation assumed of values known only at construction, and the checks of them.

Passes record ir.Requirements: a penalty's weight is >= 0 (soft(v, t) is the prox of t*norm1 only for
t >= 0), the step and a temperature are > 0, a Lipschitz bound is finite and > 0. One more kind is
implicit: a scalar hyper or let the network divides by must not be zero, one it takes a root of must be
>= 0, one it takes a logarithm of > 0. `all_requirements` lists
both. `check_defaults` evaluates, at compile time, those the program's own defaults decide, so a
program whose defaults break its derivation is an error at the default, not a NaN at run time; the
generated constructor checks the rest (backends/torch/constructor.py) with a ValueError naming the values.

One check for every way a value arrives: a literal (a negative width or radius written as a number: checked here, at compile time, at the
term it is written in; the module carries no check of a number), a hyper's default or a let (checked here
at the default), a value given to the constructor (the constructor's checks), and a learned value
(`learned_requirements`: checked at construction with its initial value; an emitter must also check them
in `forward`, where training may have moved the value).
"""
from __future__ import annotations

import sympy as sp

from dpc.errors import DpcError
from dpc.ir import NO_SPAN, Program, Requirement
from dpc.printing import math

# relation -> what the message says the value must be
RELATIONS = {"positive": "finite and > 0", "nonnegative": "finite and >= 0", "nonzero": "non-zero"}


def all_requirements(program: Program) -> list[Requirement]:
    """The passes' requirements and the implicit ones (non-zero denominators, non-negative roots,
    positive logarithms) first (a check that divides by zero must not run before the check that the
    divisor is not zero)."""
    explicit = list(program.requirements)
    positive = {r.expr for r in explicit if r.relation == "positive"}
    implicit = [r for r in denominators(program) if r not in explicit and r.expr not in positive]
    return implicit + explicit


def _constant_names(program: Program) -> set[str]:
    """Names whose value is fixed at construction: hypers, params and the lets computed from them."""
    return {d.name for d in program.decls if d.kind in ("hyper", "param", "let")}


def denominators(program: Program, numbers: bool = False) -> list[Requirement]:
    """Scalars of hypers and lets that the network divides by (each must not be zero), takes a root of
    (>= 0: a Python float's root of a negative number is complex) or a logarithm of (> 0); with `numbers`,
    also those that are literal numbers (`projball(v, -1)`), each with the span of the term it is in."""
    constant = _constant_names(program)
    exprs = [program.objective] + [d.value for d in program.decls if d.kind in ("let", "weight", "var")]
    exprs += [e for _, e in program.closed_form]
    for step in (program.first_step, program.step):
        if step is not None:
            exprs += [e for _, e in step.equations()]
    found: list[Requirement] = []
    for expr in exprs:
        if expr is None:
            continue
        nodes = {n for n in sp.preorder_traversal(expr)
                 if isinstance(n, (sp.Pow, sp.log)) or getattr(type(n), "requires", None)
                 or _divides_entrywise(n)}
        for node in sorted(nodes, key=sp.default_sort_key):
            for base, *need in _implicit_relations(node, constant):
                if base.is_number:
                    if numbers and not (isinstance(node, sp.Pow) and node.exp.is_negative and base != 0):
                        req = Requirement(base, *need, _span_of(program, node))
                        if req not in found:
                            found.append(req)
                    continue
                names = {getattr(s, "name", None) for s in base.free_symbols}
                if not names or not names <= constant or getattr(base, "shape", None) not in (None, (1, 1)):
                    continue
                span = program.decl(base.name).span if isinstance(base, sp.Symbol) else NO_SPAN
                req = Requirement(base, *need, span)
                if req not in found:
                    found.append(req)
    return found


def _span_of(program: Program, node):
    """Where a node is written: the objective term, else the let, var start or directive holding it."""
    for term, span in program.term_spans:
        if term.has(node):
            return span
    for d in program.decls:
        if d.value is not None and d.value.has(node) and d.span.line > 0:
            return d.span
    return program.directive_spans[0][1] if program.directive_spans else NO_SPAN


def learned_names(program: Program) -> set[str]:
    """The trainable values and the lets computed from them (recomputed in forward)."""
    learned = {d.name for d in program.decls if d.trainable}
    changed = True
    while changed:
        changed = False
        for d in program.of_kind("let"):
            if d.name not in learned and d.value is not None and \
                    {getattr(s, "name", None) for s in d.value.free_symbols} & learned:
                learned.add(d.name)
                changed = True
    return learned


def learned_requirements(program: Program) -> list[Requirement]:
    """The requirements that read a learned value (directly or through a let): the constructor checks them
    with the initial values; training can move them, so an emitter must check them in forward too."""
    learned = learned_names(program)
    return [r for r in all_requirements(program)
            if {getattr(s, "name", None) for s in r.expr.free_symbols} & learned]


def _divides_entrywise(node) -> bool:
    return isinstance(node, sp.HadamardPower) and node.exp.is_number and node.exp.is_negative


def _implicit_relations(node, constants=None) -> list:
    """[(argument, relation, why)] that a scalar power, a logarithm, an entrywise division (the hypers and
    lets its denominator needs > 0, convexity.positive_given) or an atom (its `requires`) needs."""
    if _divides_entrywise(node):
        from dpc.convexity import positive_given
        names = {s.name for s in node.base.free_symbols if isinstance(s, sp.Symbol)}
        needed = positive_given(node.base, names if constants is None else constants) or ()
        return [(c, "positive", f"the network divides entrywise by {math(node.base)}") for c in needed]
    if isinstance(node, sp.log):
        return [(node.args[0], "positive", "the network takes its logarithm")]
    if isinstance(node, sp.Pow):
        base, exponent = node.args
        if not exponent.is_number:
            return []
        if exponent.is_negative:
            return [(base, "nonzero", "the network divides by it")]
        if not exponent.is_integer:
            return [(base, "nonnegative", "the network takes a root of it")]
        return []
    return [(node.args[i], relation, why) for i, relation, why in type(node).requires]


def holds(relation: str, value: float) -> bool:
    if relation == "positive":
        return 0 < value < float("inf")
    if relation == "nonnegative":
        return 0 <= value < float("inf")
    return value != 0


def with_lets(program: Program, expr):
    """expr with every scalar let replaced by its definition (lets of lets too)."""
    lets = {d.symbol: d.value for d in program.of_kind("let") if d.value is not None and not d.shape}
    for _ in range(len(lets) + 1):  # lets of lets: substitute until nothing changes
        new = expr.xreplace(lets)
        if new == expr:
            break
        expr = new
    return expr


def default_value(program: Program, expr):
    """expr with every hyper at its default and every let at its definition, when that gives a number."""
    hypers = {d.symbol: d.value for d in program.of_kind("hyper")}
    try:
        expr = with_lets(program, sp.sympify(expr)).xreplace(hypers)
    except TypeError:
        # sympy's Max rebuilt with numbers in it compares its terms by factor_terms, which fails on a matrix
        # inside opnorm ("Mix of Matrix and Scalar symbols": a joint Lipschitz bound of several vars): no
        # default number here; the constructor checks the value at run time
        return None
    return expr if expr.is_number else None


_default_value = default_value


def default_number(program: Program, expr) -> float | None:
    """default_value as a float; None when it is no finite real number."""
    value = default_value(program, expr)
    if value is None or value.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        return None
    number = complex(sp.N(value))
    return number.real if number.imag == 0 else None


def check_defaults(program: Program) -> None:
    """A DpcError for the first requirement that the program's own defaults, or its literal numbers,
    break."""
    literal = [r for r in denominators(program, numbers=True) if r.expr.is_number]
    for req in literal + all_requirements(program):
        value = _default_value(program, req.expr)
        if value is None:
            continue
        number = complex(sp.N(value)) if not value.has(sp.zoo, sp.nan) else complex("nan")
        if number.imag == 0 and holds(req.relation, number.real):
            continue
        shown = "not a finite real number" if number.imag != 0 or number.real != number.real else \
            f"{number.real:g}"
        if req.expr.is_number:  # a literal: the number as written is what to change
            raise DpcError(f"{req.why} must be "
                           f"{RELATIONS[req.relation]}, but it is {shown}", req.span if req.span.line > 0 else None,
                           f"write a number that is {RELATIONS[req.relation]}").with_source(program.source)
        involved = sorted((d for d in program.decls if d.kind in ("hyper", "let") and
                           req.expr.has(d.symbol)), key=lambda d: d.span.line)
        # point at what to change: the value's own declaration, else where the requirement came from
        span = involved[0].span if involved else (req.span if req.span.line > 0 else None)
        names = ", ".join(f"{d.name} = {math(d.value)}" for d in involved)
        raise DpcError(f"{math(req.expr)} must be {RELATIONS[req.relation]} ({req.why}), but it is {shown}"
                       + (f" with {names}" if names else ""), span,
                       (f"change the {'default' if involved[0].kind == 'hyper' else 'definition'} of "
                        f"{involved[0].name}") if involved else "change the program's numbers"
                       ).with_source(program.source)


# --- what a learned value must reach ------------------------------------------------------------

REACH_RULE = ("a learned value must reach forward's output: be read by a layer (the update, the folded first "
              "layer, the closed form), by the output expression or by a start value, directly or through the "
              "lets computed from it")


def _names(expr) -> set[str]:
    return {getattr(s, "name", None) for s in expr.free_symbols} if expr is not None else set()


def reached(program: Program) -> set[str]:
    """The names forward reads (REACH_RULE): those of the layers, the output, the starts, and the lets they
    read, transitively. A weight's initial value and the objective are not forward's."""
    exprs = [e for step in (program.step, program.first_step) if step is not None for _, e in step.equations()]
    exprs += [e for _, e in program.closed_form]
    exprs += [d.value for d in program.decls if d.kind in ("var", "output")]
    exprs.append(program.until)
    seen: set[str] = set()
    todo = [n for e in exprs for n in _names(e)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if program.has(name) and program.decl(name).kind in ("let", "temp"):
            todo += list(_names(program.decl(name).value))
    return seen


def check_learned_reach(program: Program, directives) -> Program:
    """The program with a warning at `learn NAME` for each learn line naming a param or hyper that nothing
    forward computes reads (REACH_RULE): after `learn weights untied` the layers read W, S, theta, and
    `learn D, lam` trains values no layer reads (only `objective()` still does). A warning, not an error: a
    loss built from `objective()` does reach them."""
    read = reached(program)
    for directive in directives:
        if directive.kind != "learn":
            continue
        names = [item[0] for item in directive.items]
        unread = [(name, span) for name, span in names if program.has(name) and name not in read
                  and program.decl(name).kind in ("param", "hyper")]
        if not unread:
            continue
        shown = " or ".join(name for name, _ in unread)
        weights = [d.name for d in program.of_kind("weight")]
        after = (f" (after `learn weights` the layers read {', '.join(weights)}, which "
                 f"{'it' if len(unread) == 1 else 'they'} only initialise{'s' if len(unread) == 1 else ''})"
                 if weights else "")
        kept = [item for item in directive.items if item[0][0] not in {name for name, _ in unread}]
        hint = (f"write `learn {', '.join(' '.join(w for w, _ in item) for item in kept)}`" if kept else
                f"delete the line `{directive.label()}`")
        program = program.warned(f"learn {', '.join(n for n, _ in unread)}: nothing the network computes reads "
                                 f"{shown}{after}; {REACH_RULE}", unread[0][1], hint)
    return program
