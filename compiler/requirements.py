"""What a derivation assumed of values known only at construction, and the checks of them.

Passes record ir.Requirements: a penalty's weight is >= 0 (soft(v, t) is the prox of t*norm1 only for
t >= 0), the step and a temperature are > 0, a Lipschitz bound is finite and > 0. One more kind is
implicit: a scalar hyper or let the network divides by must not be zero, one it takes a root of must be
>= 0, one it takes a logarithm of > 0. `all_requirements` lists
both. `check_defaults` evaluates, at compile time, those the program's own defaults decide, so a
program whose defaults break its derivation is an error at the default, not a NaN at run time; the
generated constructor checks the rest (backends/torch/emit.py) with a ValueError naming the values.
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


def denominators(program: Program) -> list[Requirement]:
    """Scalars of hypers and lets that the network divides by (each must not be zero), takes a root of
    (>= 0: a Python float's root of a negative number is complex) or a logarithm of (> 0)."""
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
                 if isinstance(n, (sp.Pow, sp.log)) or getattr(type(n), "requires", None)}
        for node in sorted(nodes, key=sp.default_sort_key):
            for base, *need in _implicit_relations(node):
                if base.is_number:
                    continue
                names = {getattr(s, "name", None) for s in base.free_symbols}
                if not names or not names <= constant or getattr(base, "shape", None) not in (None, (1, 1)):
                    continue
                span = program.decl(base.name).span if isinstance(base, sp.Symbol) else NO_SPAN
                req = Requirement(base, *need, span)
                if req not in found:
                    found.append(req)
    return found


def _implicit_relations(node) -> list:
    """[(argument, relation, why)] that a scalar power, a logarithm or an atom (its `requires`) needs."""
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


def _default_value(program: Program, expr):
    """expr with every hyper at its default and every let at its definition, when that gives a number."""
    lets = {d.symbol: d.value for d in program.of_kind("let") if d.value is not None and not d.shape}
    hypers = {d.symbol: d.value for d in program.of_kind("hyper")}
    for _ in range(len(lets) + 1):  # lets of lets: substitute until nothing changes
        new = expr.xreplace(lets)
        if new == expr:
            break
        expr = new
    expr = expr.xreplace(hypers)
    return expr if expr.is_number else None


def check_defaults(program: Program) -> None:
    """A DpcError for the first requirement that the program's own defaults break."""
    for req in all_requirements(program):
        value = _default_value(program, req.expr)
        if value is None:
            continue
        number = complex(sp.N(value)) if not value.has(sp.zoo, sp.nan) else complex("nan")
        if number.imag == 0 and holds(req.relation, number.real):
            continue
        shown = "not a finite real number" if number.imag != 0 or number.real != number.real else \
            f"{number.real:g}"
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
