"""Index sums as vectors: c[j] = body  ->  c = (vector expression) + (constant in j) * ones.

`derive closed` reads the cost of `sum_j s[j] * body` as the vector c with c[j] = body and
wants it as matrix algebra, so the layer is an affine map. Rules, each exact:

  s[j]                          -> s                          (an entry of a vector)
  sqnorm(u), a @ b              -> expand u.T @ u, a.T @ b into 1 x 1 products, then each:
    t free of j                 -> constant in j
    C[j].T @ r                  -> (C @ r)[j]                 (r free of j)
    l @ C[j]                    -> (C @ l.T)[j]               (l a row free of j)
    C[j].T @ C[j]               -> rowsqnorm(C)[j]; 1 when C = rownormalize(...) (unit rows)
    C[j].T @ N.T @ N @ C[j]     -> rowsqnorm(C @ N.T)[j]
  anything else with j          -> [body]_j, computed per j (correct, but not affine)

Sympy does the expansion (`sp.expand` on the 1 x 1 matrix products).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy import MatMul, Transpose

from dpc import atoms


@dataclass
class VectorForm:
    """c = vector + constant * ones; `constants` lists the constant-in-j scalars with a reason each."""

    dim: sp.Basic
    vector: sp.Basic | None = None
    constants: list = field(default_factory=list)       # [(scalar, reason)]
    expanded: list = field(default_factory=list)        # scalar terms of c[j], for notes
    per_index: list = field(default_factory=list)       # terms kept as [.]_j

    @property
    def constant(self):
        return sp.Add(*[c for c, _ in self.constants])

    def add_vector(self, v):
        self.vector = v if self.vector is None else self.vector + v

    def full(self):
        """The whole vector, the constant broadcast over j (for maps that are not shift invariant)."""
        const = self.constant
        parts = ([self.vector] if self.vector is not None else []) + \
                ([const * atoms.Ones(self.dim)] if const != 0 else [])
        return sp.MatAdd(*parts).doit() if len(parts) > 1 else (parts[0] if parts else sp.ZeroMatrix(self.dim, 1))


def vector_form(body, j, dim) -> VectorForm:
    out = VectorForm(dim)
    for term in sp.Add.make_args(sp.expand_mul(body)):
        _term(term, j, out)
    return out


def _term(term, j, out: VectorForm):
    if not term.has(j):
        out.constants.append((term, ""))
        out.expanded.append(term)
        return
    coeff, factors = sp.Integer(1), []
    for f in sp.Mul.make_args(term):
        if f.has(j):
            factors.append(f)
        else:
            coeff = coeff * f
    if len(factors) == 1 and isinstance(factors[0], (atoms.SqNorm, atoms.Dot)):
        for part in _bilinear_terms(factors[0]):
            _product(coeff * part, j, out)
        return
    if len(factors) == 1 and isinstance(factors[0], atoms.Entry) and factors[0].args[1] == j:
        out.add_vector(coeff * factors[0].args[0])
        out.expanded.append(term)
        return
    out.add_vector(coeff * atoms.IndexVector(sp.Mul(*factors), j, out.dim))
    out.per_index.append(term)
    out.expanded.append(term)


def _bilinear_terms(atom):
    """sqnorm(u) -> the terms of u.T @ u expanded; a @ b -> those of a.T @ b (1 x 1 products)."""
    a, b = (atom.args[0], atom.args[0]) if isinstance(atom, atoms.SqNorm) else atom.args
    product = sp.expand(a.T * b)
    return sp.Add.make_args(product) if not isinstance(product, sp.MatAdd) else product.args


def _product(t, j, out: VectorForm):
    """One 1 x 1 term coeff * M1 @ ... @ Mn of an expanded bilinear form."""
    coeff, mats = t.as_coeff_matrices() if isinstance(t, MatMul) else (sp.Integer(1), [t])
    scalar = coeff * _as_scalar(mats)
    out.expanded.append(scalar)
    if not t.has(j):
        out.constants.append((scalar, ""))
        return
    first, last, middle = mats[0], mats[-1], mats[1:-1]
    left_row = _row_of(first.arg, j) if isinstance(first, Transpose) else None
    right_row = _row_of(last, j)
    if left_row is not None and right_row is not None and not any(m.has(j) for m in middle):
        if left_row == right_row and not middle:
            if isinstance(left_row, atoms.RowNormalize):
                out.constants.append((coeff, f"{_text(scalar)} = {_text(coeff)} (unit rows)"))
                return
            out.add_vector(coeff * atoms.RowSqNorm(left_row))
            return
        if left_row == right_row and len(middle) == 2 and middle[0] == middle[1].T:
            out.add_vector(coeff * atoms.RowSqNorm(left_row * middle[0]))
            return
    elif left_row is not None and not any(m.has(j) for m in mats[1:]):
        out.add_vector(coeff * MatMul(left_row, *mats[1:]).doit())
        return
    elif right_row is not None and not any(m.has(j) for m in mats[:-1]):
        row = MatMul(*mats[:-1]).doit() if len(mats) > 2 else mats[0]
        out.add_vector(coeff * (right_row * Transpose(row).doit()))
        return
    out.add_vector(atoms.IndexVector(scalar, j, out.dim))
    out.per_index.append(scalar)


def _row_of(m, j):
    """C for C[j], else None."""
    return m.args[0] if isinstance(m, atoms.Row) and m.args[1] == j else None


def _as_scalar(mats):
    """A 1 x 1 product as the scalar atom a person writes: x.T @ x -> sqnorm(x), a.T @ b -> a @ b."""
    first, rest = mats[0], mats[1:]
    a = first.arg if isinstance(first, Transpose) else Transpose(first).doit()
    b = MatMul(*rest).doit() if len(rest) > 1 else rest[0]
    if a == b:
        return atoms.SqNorm(a)
    if b.has(atoms.Row) and not a.has(atoms.Row):  # one spelling for both orders: C[j] @ x
        a, b = b, a
    return atoms.Dot(a, b)


def _text(expr) -> str:
    from dpc.printing import math
    return math(expr)
