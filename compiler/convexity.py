"""Is the objective convex? DCP's composition rules over the atoms' declared facts, written once.

Every atom declares its `convexity` ('convex', 'concave', 'affine' or None) and its `monotone`
('increasing', 'decreasing' or None) in compiler/atoms.py. An expression's curvature in the var follows
from them (Grant, Boyd & Ye, "Disciplined convex programming", 2006):

  constant   reads no var                      affine    the var, sums and constant multiples of it,
                                                         products with constant matrices, sum(...)
  f(e), f convex:   convex when e is affine, or f is increasing and e convex, or decreasing and e concave
  f(e), f concave:  concave when e is affine, or f is increasing and e concave, or decreasing and e convex
  c * e:            e's curvature when c >= 0, flipped when c <= 0 (c's sign: a number, or its value at the
                    hypers' defaults and the lets' definitions)
  e1 + e2:          convex + convex is convex, concave + concave concave, affine adds to either
  e^p:              e^2k of an affine e is convex; e^p, 0 < p < 1, is concave increasing (e >= 0)

anything else is unknown. `analyse` reads the objective term by term: it is convex when every term is; a
term that is concave (and not affine) makes it not convex, and the verdict names that term; otherwise it
is unknown (dpc cannot show either). The pipeline states the verdict for every derive (a note, shown by
`dpc explain`, and `dpc check`'s last line) and, for the methods whose convergence needs a convex
objective (proximal and splitting methods, closed forms), warns at a concave term.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy import HadamardProduct, MatAdd, MatMul, Transpose

from dpc import atoms, declare
from dpc.grammar.ast import Span

CONSTANT, AFFINE, CONVEX, CONCAVE = "constant", "affine", "convex", "concave"
_FLIP = {CONVEX: CONCAVE, CONCAVE: CONVEX, AFFINE: AFFINE, CONSTANT: CONSTANT, None: None}


def _add(a, b):
    if a == CONSTANT:
        return b
    if b == CONSTANT:
        return a
    if a is None or b is None:
        return None
    if a == AFFINE:
        return b
    if b == AFFINE:
        return a
    return a if a == b else None


def _scale(curvature, sign):
    """curvature of c*e for c of sign +1, -1 or None (unknown)."""
    if curvature in (CONSTANT, AFFINE):
        return curvature
    if sign is None:
        return None
    return curvature if sign > 0 else _FLIP[curvature]


def compose(convexity, monotone, inner):
    """The curvature of f(e) for f with the declared convexity and monotonicity, e of curvature `inner`."""
    if inner == CONSTANT:
        return CONSTANT
    if inner is None or convexity is None:
        return None
    if convexity == AFFINE:
        if monotone == "increasing":
            return inner
        if monotone == "decreasing":
            return _FLIP[inner]
        return AFFINE if inner == AFFINE else None
    if inner == AFFINE:
        return convexity
    if monotone == "increasing" and inner == convexity:
        return convexity
    if monotone == "decreasing" and inner == _FLIP[convexity]:
        return convexity
    return None


class Curvature:
    """The curvature of expressions in the vars `names`; constants' signs read at `program`'s defaults."""

    def __init__(self, program, names):
        self.program = program
        self.names = set(names)

    def reads(self, expr) -> bool:
        return any(getattr(s, "name", None) in self.names for s in expr.free_symbols)

    def sign(self, expr):
        """+1 (>= 0), -1 (<= 0) or None, for a constant scalar."""
        from dpc.requirements import default_value
        expr = sp.sympify(expr)
        value = expr if expr.is_number else default_value(self.program, expr)
        if value is None:  # norms and absolute values are >= 0; sympy knows the rest, or not
            value = expr.replace(lambda e: isinstance(e, (atoms.OpNorm, atoms.Norm1, atoms.Norm2, atoms.SqNorm,
                                                          atoms.Norm0)), lambda e: sp.Dummy(positive=True))
        if value.is_nonnegative:
            return 1
        if value.is_nonpositive:
            return -1
        return None

    def of(self, expr):
        if not self.reads(expr):
            return CONSTANT
        if isinstance(expr, (sp.Symbol, sp.MatrixSymbol)):
            return AFFINE
        if isinstance(expr, (sp.Add, MatAdd)):
            out = CONSTANT
            for a in expr.args:
                out = _add(out, self.of(a))
            return out
        if isinstance(expr, (sp.Mul, MatMul, HadamardProduct)):
            return self._product(expr)
        if isinstance(expr, Transpose):
            return self.of(expr.arg)
        if isinstance(expr, sp.Pow):
            return self._power(expr)
        if isinstance(expr, sp.Max) and len(expr.args) == 2 and any(not self.reads(a) for a in expr.args):
            inner = next(a for a in expr.args if self.reads(a))  # relu on a scalar: max(e, c)
            return compose(CONVEX, "increasing", self.of(inner))
        if isinstance(expr, atoms.Dot):
            a, b = expr.args
            if a == b:
                return CONVEX if self.of(a) == AFFINE else None
            if not self.reads(a) or not self.reads(b):
                return AFFINE if AFFINE in (self.of(a), self.of(b)) else None
            return None
        if isinstance(expr, atoms.IndexSum):
            return self.of(expr.args[0])
        if isinstance(expr, (atoms.Entry, atoms.Row)):
            inner = self.of(expr.args[0])
            return inner if inner in (AFFINE, CONSTANT) else None
        atom = declare.of(expr)
        if atom is None:
            return None
        if atom.linear is not None:  # an operator (conv(K, u)): linear in its operand when nothing else reads a var
            i = atom.linear.operand
            if any(self.reads(a) for j, a in enumerate(expr.args) if j != i):
                return None
            return compose(atom.convexity, atom.monotone, self.of(expr.args[i]))
        if any(self.reads(a) for a in expr.args[1:]):  # thresholds, widths: constants of the call
            return None
        if isinstance(expr, atoms.Solve):
            return None
        return compose(atom.convexity, atom.monotone, self.of(expr.args[0]))

    def _product(self, expr):
        if isinstance(expr, MatMul):
            coeff, factors = expr.as_coeff_matrices()
            factors = list(factors)
            scalars = [coeff]
        elif isinstance(expr, HadamardProduct):
            scalars, factors = [], list(expr.args)
        else:
            scalars, factors = [], list(expr.args)
        reading = [f for f in factors if self.reads(f)]
        if len(reading) != 1:
            return None
        inner = self.of(reading[0])
        constants = scalars + [f for f in factors if not self.reads(f)]
        if inner in (AFFINE, CONSTANT):
            return inner
        if isinstance(expr, (MatMul, HadamardProduct)) and any(getattr(f, "is_Matrix", False) for f in constants):
            return None  # a matrix times a convex vector: no sign to keep
        sign = 1
        for c in constants:
            s = self.sign(c)
            if s is None:
                return None
            sign *= s
        return _scale(inner, sign)

    def _power(self, expr):
        base, exponent = expr.args
        if self.reads(exponent):
            return None
        inner = self.of(base)
        if exponent == 1:
            return inner
        if exponent.is_Integer and exponent.is_even and exponent > 0 and inner == AFFINE:
            return CONVEX
        if exponent.is_number and 0 < exponent < 1:
            return compose(CONCAVE, "increasing", inner)
        return None


@dataclass(frozen=True)
class Verdict:
    """What `analyse` found: convex (True), not convex (False: `term` is concave) or unknown (None:
    `term` is the first term dpc cannot classify)."""

    convex: bool | None
    var: str
    term: sp.Basic | None = None
    span: Span | None = None
    nonconvex_set: str | None = None  # `z in sparse(k)`: the feasible set is not convex (said, not warned:
    #                                   its projection is exact, and IHT is the point of such a program)

    def statement(self) -> str:
        out = self._objective()
        if self.nonconvex_set:
            out += f"; the constraint {self.nonconvex_set} is not a convex set, so the problem is not convex"
        return out

    def _objective(self) -> str:
        from dpc.printing import math
        if self.convex:
            return f"the objective is convex in {self.var} (DCP: every term is convex or affine)"
        if self.convex is False:
            return f"the objective is not convex in {self.var}: {math(self.term)} is concave"
        return (f"convexity of the objective in {self.var} unknown: dpc cannot show that {math(self.term)} is "
                "convex (DCP rules)")


def terms(program, var):
    """The objective's terms that read the var, each with where it is written (or None)."""
    out = []
    written = list(program.term_spans)
    for term in sp.Add.make_args(sp.expand(program.objective, mul=False, multinomial=False, power_base=False)):
        if not term.has(var):
            continue
        span = next((s for t, s in written if t == term), None)
        if span is None:
            span = next((s for t, s in written if t.has(term) or term.has(t)), None)
        out.append((term, span))
    return out


# the sets a constraint may name that are not convex (lower.SETS; the others are boxes, balls, the simplex)
NONCONVEX_SETS = ("sparse", "onehot", "binary")


def analyse(program, var) -> Verdict:
    """The objective's convexity in the var, term by term, and whether the var's constraint set is convex."""
    from dpc.printing import format_constraint
    curvature = Curvature(program, [var.name])
    nonconvex = next((format_constraint(c) for c in program.constraints
                      if c.var == var.name and c.set in NONCONVEX_SETS), None)
    unknown = None
    for term, span in terms(program, var):
        found = curvature.of(term)
        if found == CONCAVE:
            return Verdict(False, var.name, term, span, nonconvex)
        if found is None and unknown is None:
            unknown = (term, span)
    if unknown is not None:
        return Verdict(None, var.name, *unknown, nonconvex_set=nonconvex)
    return Verdict(True, var.name, nonconvex_set=nonconvex)


# --- the sign of every entry: what a division needs of its denominator ------------------------------

def _entry_image(expr, positive, cache):
    """A scalar sympy expression with the sign of every entry of expr: each declared atom a Dummy with its
    declared `sign` ('positive', 'nonnegative' or real), an input or param entry a real Dummy, the scalars in
    `positive` positive Dummies, any other scalar symbol a real one; sums, entrywise products and powers map
    to their scalar forms, so sympy's assumptions decide the sign (1e-8 + abs(y) is positive)."""
    if expr in cache:
        return cache[expr]
    if isinstance(expr, atoms.Ones):
        out = sp.Integer(1)
    elif isinstance(expr, sp.ZeroMatrix):
        out = sp.Integer(0)
    elif isinstance(expr, sp.Identity):
        out = sp.Dummy(nonnegative=True)
    elif isinstance(expr, (sp.Symbol, sp.MatrixSymbol)):
        out = sp.Dummy(positive=True) if expr in positive else sp.Dummy(real=True)
    elif expr.is_number:
        out = expr
    elif isinstance(expr, (sp.Add, MatAdd)):
        out = sp.Add(*[_entry_image(a, positive, cache) for a in expr.args])
    elif isinstance(expr, (sp.Mul, HadamardProduct)):
        out = sp.Mul(*[_entry_image(a, positive, cache) for a in expr.args])
    elif isinstance(expr, MatMul):
        coeff, mats = expr.as_coeff_matrices()
        out = coeff * _entry_image(mats[0], positive, cache) if len(mats) == 1 else sp.Dummy(real=True)
    elif isinstance(expr, (sp.Pow, sp.HadamardPower)):
        base, exponent = expr.args
        out = _entry_image(base, positive, cache) ** _entry_image(exponent, positive, cache)
    elif isinstance(expr, Transpose):
        out = _entry_image(expr.arg, positive, cache)
    else:
        atom = declare.of(expr)
        if atom is not None:
            out = sp.Dummy(**{atom.sign or "real": True})
        elif isinstance(expr, sp.Function) and not isinstance(expr, sp.MatrixExpr):  # sympy's Max, Min
            out = expr.func(*[_entry_image(a, positive, cache) for a in expr.args])
        else:
            out = sp.Dummy(real=True)
    cache[expr] = out
    return out


def entry_sign(expr, positive=frozenset()) -> str | None:
    """'positive' (every entry of expr is > 0), 'nonnegative' (>= 0) or None (dpc cannot show either), from
    the atoms' declared `sign` facts and sympy's assumptions; the scalar symbols in `positive` taken > 0."""
    image = _entry_image(sp.sympify(expr), frozenset(positive), {})
    if image.is_positive:
        return "positive"
    if image.is_nonnegative:
        return "nonnegative"
    return None


def positive_given(expr, constants) -> tuple | None:
    """What makes every entry of expr provably > 0: () when the declared facts alone do; the scalar symbols
    of `constants` (hypers, lets) that expr reads, when taking them > 0 does (each becomes a requirement);
    None when neither does."""
    if entry_sign(expr) == "positive":
        return ()
    read = tuple(sorted((s for s in expr.free_symbols if isinstance(s, sp.Symbol) and s.name in constants),
                        key=lambda s: s.name))
    if read and entry_sign(expr, read) == "positive":
        return read
    return None
