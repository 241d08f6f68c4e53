"""Matrix algebra on the IR with sympy: gradients, affine decompositions, tidy factoring.

Scalar atoms (sqnorm, inner products, sums) are rewritten to 1 x 1 matrix
expressions so sympy's matrix calculus can differentiate them.
"""
from __future__ import annotations

import sympy as sp
from sympy import Identity, MatAdd, MatMul, MatrixExpr, MatrixSymbol, OneMatrix, ZeroMatrix

from dpc import atoms


class NotDifferentiable(Exception):
    """The term is outside what the gradient rules know; carries the offending subterm."""

    def __init__(self, term):
        super().__init__(str(term))
        self.term = term


def as_matrix(expr, var):
    """A scalar expression smooth in `var` -> an equal 1 x 1 matrix expression."""
    if not expr.has(var):
        return None  # constant in var: no gradient
    if isinstance(expr, sp.Add):
        parts = [as_matrix(a, var) for a in expr.args]
        parts = [p for p in parts if p is not None]
        return MatAdd(*parts) if len(parts) > 1 else parts[0]
    if isinstance(expr, sp.Mul):
        const, dep = expr.as_independent(var, as_Add=False)
        if dep == expr:
            raise NotDifferentiable(expr)
        return const * as_matrix(dep, var)
    if isinstance(expr, atoms.SqNorm):
        v = expr.args[0]
        return v.T * v
    if isinstance(expr, atoms.Dot):
        a, b = expr.args
        return a.T * b
    if isinstance(expr, atoms.SumAll):
        v = expr.args[0]
        return OneMatrix(1, v.shape[0]) * v
    raise NotDifferentiable(expr)


def gradient(expr, var: MatrixSymbol):
    """The gradient of a smooth scalar objective term with respect to a vector var, tidied."""
    m = as_matrix(expr, var)
    if m is None:
        return ZeroMatrix(*var.shape)
    # sympy's matrix calculus knows OneMatrix but recurses forever on atoms it does not know: differentiate
    # with the broadcasts as OneMatrix, then make every all-ones value explicit again
    m = m.replace(lambda e: isinstance(e, atoms.Ones), lambda e: OneMatrix(*e.shape))
    # ... and fails on some scalar coefficients (sqrt(0.05) * ...: "'Half' cannot be interpreted as an
    # integer"): scalars constant in var become plain symbols while differentiating
    frozen = {a: sp.Dummy(real=True) for a in m.atoms(sp.Pow, sp.Function)
              if not isinstance(a, MatrixExpr) and not a.has(var) and not a.free_symbols & {var}}
    g = sp.expand(m.xreplace(frozen).diff(var))
    g = g.xreplace({d: a for a, d in frozen.items()})
    g = g.replace(lambda e: isinstance(e, OneMatrix), lambda e: atoms.Ones(*e.shape))
    if isinstance(g, ZeroMatrix) or g == 0:
        return ZeroMatrix(*var.shape)
    return factor_left(g)


def terms_of(expr):
    """The summands of a matrix or scalar sum."""
    if isinstance(expr, (MatAdd, sp.Add)):
        return list(expr.args)
    return [expr]


def factor_left(expr):
    """D.T @ D @ z - D.T @ x -> D.T @ (D @ z - x): pull out left factors shared by several terms.

    Terms are grouped by their first matrix factor; each group of two or more is factored
    (recursively), the rest stay as they are: mu*z + A.T@A@z - A.T@b -> mu*z + A.T@(A@z - b).
    """
    terms = terms_of(sp.expand(expr))
    if len(terms) < 2:
        return expr
    groups: dict = {}
    for t in terms:
        coeff, mats = t.as_coeff_matrices() if isinstance(t, MatMul) else (sp.Integer(1), [t])
        key = mats[0] if len(mats) >= 2 else None
        groups.setdefault(key, []).append((coeff, mats))
    if all(key is None or len(group) < 2 for key, group in groups.items()):
        return expr
    out = []
    for key, group in groups.items():
        if key is None or len(group) < 2:
            out += [coeff * MatMul(*mats) if len(mats) > 1 else coeff * mats[0] for coeff, mats in group]
            continue
        rest = MatAdd(*[coeff * (MatMul(*mats[1:]) if len(mats) > 2 else mats[1]) for coeff, mats in group]).doit()
        out.append(MatMul(key, factor_left(rest)))
    return MatAdd(*out) if len(out) > 1 else out[0]


class NotAffine(Exception):
    def __init__(self, term):
        super().__init__(str(term))
        self.term = term


def affine_parts(expr, variables):
    """expr = sum_v A_v @ v + b for v in variables -> ({v: A_v}, b); raises NotAffine.

    A bare variable has coefficient I; b is None when there is no constant term.
    """
    coeffs: dict = {}
    bias = []
    for term in terms_of(sp.expand(expr)):
        used = [v for v in variables if term.has(v)]
        if not used:
            bias.append(term)
            continue
        if len(used) > 1:
            raise NotAffine(term)
        v = used[0]
        if term == v:
            coeff = Identity(v.shape[0])
        elif isinstance(term, MatMul):
            c, mats = term.as_coeff_matrices()
            if mats[-1] != v or any(m.has(v) for m in mats[:-1]):
                raise NotAffine(term)
            coeff = c * (MatMul(*mats[:-1]) if len(mats) > 2 else mats[0]) if len(mats) > 1 else \
                c * Identity(v.shape[0])
        else:
            raise NotAffine(term)
        coeffs[v] = coeffs[v] + coeff if v in coeffs else coeff
    b = MatAdd(*bias).doit() if len(bias) > 1 else (bias[0] if bias else None)
    return {v: tidy(c) for v, c in coeffs.items()}, b


def tidy(expr):
    """Light simplification that keeps matrix structure readable."""
    if isinstance(expr, MatrixExpr):
        return expr.doit()
    return sp.simplify(expr)


def is_zero(expr) -> bool:
    return isinstance(expr, ZeroMatrix) or (not isinstance(expr, MatrixExpr) and expr == 0)


def scalar_atoms_on(expr, var):
    """Scalar atoms in expr whose arguments involve var."""
    return [a for a in expr.atoms(atoms.ScalarAtom) if a.has(var)]
