"""Matrix algebra on the IR with sympy: gradients, affine decompositions, tidy factoring.

Gradients come from dpc's reverse-mode rules (calculus.py); sympy expands and factors them.
"""
from __future__ import annotations

import sympy as sp
from sympy import Identity, MatAdd, MatMul, MatrixExpr, MatrixSymbol, ZeroMatrix

from dpc import atoms, calculus
from dpc.calculus import NotDifferentiable  # noqa: F401  (passes catch algebra.NotDifferentiable)


def gradient(expr, var: MatrixSymbol):
    """The gradient of a smooth scalar objective w.r.t. a vector var, tidied: dpc's reverse-mode rules
    (calculus.py) give the summands; sympy expands and factors those affine in var (D.T @ (D @ z - x)),
    the others (A.T @ sigmoid(A @ z)) stay as the chain rule wrote them, factored by shared left matrices."""
    terms = calculus.gradient_terms(expr, var)
    if not terms:
        return ZeroMatrix(*var.shape)
    affine = [t for t in terms if not nonlinear_in(t, var)]
    rest = [t for t in terms if nonlinear_in(t, var)]
    if affine:
        g = sp.expand(MatAdd(*affine).doit() if len(affine) > 1 else affine[0])
        affine = [] if is_zero(g) else terms_of(g)
    if not affine and not rest:
        return ZeroMatrix(*var.shape)
    return factor_left(MatAdd(*affine, *rest) if len(affine) + len(rest) > 1 else (affine + rest)[0],
                       expand=False)


def nonlinear_in(expr, var) -> bool:
    """Whether expr reads var through anything but sums and matrix products (an entrywise function, an
    entrywise product, a scalar atom): then sympy's expand would distribute through it, so it is kept."""
    if not expr.has(var):
        return False
    if isinstance(expr, (MatAdd, MatMul, sp.Add, sp.Mul)) or expr == var:
        if isinstance(expr, (MatMul, sp.Mul)) and any(
                not isinstance(f, MatrixExpr) and f.has(var) for f in expr.args):
            return True  # a scalar coefficient that reads var
        return any(nonlinear_in(a, var) for a in expr.args)
    return True


def terms_of(expr):
    """The summands of a matrix or scalar sum."""
    if isinstance(expr, (MatAdd, sp.Add)):
        return list(expr.args)
    return [expr]


def factor_left(expr, expand: bool = True):
    """D.T @ D @ z - D.T @ x -> D.T @ (D @ z - x): pull out left factors shared by several terms.

    Terms are grouped by their first matrix factor; each group of two or more is factored
    (recursively), the rest stay as they are: mu*z + A.T@A@z - A.T@b -> mu*z + A.T@(A@z - b).
    """
    terms = terms_of(sp.expand(expr) if expand else expr)
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
        out.append(MatMul(key, factor_left(rest, expand)))
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


def sided_parts(expr, var):
    """expr = sum_i c_i * L_i @ var @ R_i + b -> ([(c_i, L_i, R_i)], b), L_i/R_i None for no factor; raises
    NotAffine. The linear maps of a matrix var that `affine_parts` cannot write as one left factor, e.g. the
    gradient A.T @ (A @ S @ B - X) @ B.T of 0.5*sqnorm(X - A @ S @ B)."""
    sided, bias = [], []
    for term in terms_of(sp.expand(expr)):
        if not term.has(var):
            bias.append(term)
            continue
        c, mats = term.as_coeff_matrices() if isinstance(term, MatMul) else (sp.Integer(1), [term])
        where = [i for i, m in enumerate(mats) if m == var]
        if len(where) != 1 or any(m.has(var) for i, m in enumerate(mats) if i != where[0]) or c.has(var):
            raise NotAffine(term)
        i = where[0]
        left, right = mats[:i], mats[i + 1:]
        sided.append((c, (MatMul(*left) if len(left) > 1 else left[0]) if left else None,
                      (MatMul(*right) if len(right) > 1 else right[0]) if right else None))
    b = MatAdd(*bias).doit() if len(bias) > 1 else (bias[0] if bias else None)
    return sided, b


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
