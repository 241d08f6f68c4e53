"""Reverse-mode differentiation on the IR: the gradient of a smooth scalar objective w.r.t. a vector var.

dpc's own rules, not sympy's matrix calculus (which recurses without end on atoms it does not know, and
writes the derivative of an entrywise function as a dense diagonal matrix). A scalar term is a sympy
expression in scalar atoms (sqnorm, inner products, sum, sum_j, ...); sympy differentiates it in those
atoms (the chain rule's outer part: 2*sqnorm(v) for sqnorm(v)^2), and each atom pulls a cotangent back
through its vector argument (`pullback`):

    A @ v                    w -> A.T @ w
    v1 + v2                  w -> w, w
    v1 * v2 (entrywise)      w -> w * v2, w * v1
    v ^ p (entrywise)        w -> w * p v^(p-1)
    phi(v) (entrywise atom)  w -> w * phi'(v)      phi' from the atom's declared `derivative` (atoms.py)
    f(v) (other atoms)       w -> the declared Pullback(w)   (softmax: s * w - (s @ w) s)

so the gradient of sum(phi(A @ z + b)) is A.T @ phi'(A @ z + b): matrix-vector products only.
A term outside these rules raises NotDifferentiable carrying the offending subterm (its place in the
source is where derive reports it).
"""
from __future__ import annotations

import sympy as sp
from sympy import HadamardPower, HadamardProduct, MatAdd, MatMul, MatrixExpr, ZeroMatrix

from dpc import atoms, declare


class NotDifferentiable(Exception):
    """The term is outside what the gradient rules know; carries the offending subterm."""

    def __init__(self, term):
        super().__init__(str(term))
        self.term = term


def gradient_terms(expr, var) -> list:
    """The gradient of the scalar expr w.r.t. var as a list of vector summands (empty: constant in var)."""
    if not expr.has(var):
        return []
    if isinstance(expr, MatrixExpr):
        raise NotDifferentiable(expr)
    if isinstance(expr, sp.Add):  # term by term: an error names the summand at fault
        return [t for term in expr.args for t in gradient_terms(term, var)]
    terms = []
    for a, coeff in _partials(expr, _outer_atoms(expr, var), var, expr):
        terms += _scaled(coeff, _atom_gradient(a, var))
    return terms


def _partials(expr, parts, var, at) -> list:
    """The chain rule's outer step: [(part, d expr / d part)] for the scalar parts of expr that hold var,
    each part treated as a variable. var outside every part (a vector, which a scalar expression cannot
    hold) or a coefficient that is not a scalar is NotDifferentiable(at)."""
    dummies = {part: sp.Dummy(real=True) for part in parts}
    outer = expr.xreplace(dummies)
    if outer.has(var):
        raise NotDifferentiable(at)
    back = {d: part for part, d in dummies.items()}
    out = []
    for part, d in dummies.items():
        coeff = sp.diff(outer, d).xreplace(back)
        _check_scalar(coeff, at)
        out.append((part, coeff))
    return out


def _outer_atoms(expr, var) -> list:
    """The scalar atoms of expr that hold var and sit in no other scalar atom, in a fixed order."""
    found = []

    def walk(e):
        if isinstance(e, atoms.ScalarAtom):
            if e.has(var) and e not in found:
                found.append(e)
            return
        for arg in e.args:
            walk(arg)
    walk(expr)
    return found


# scalar nodes whose derivatives the backends print: arithmetic, and the scalar forms of declared atoms that
# have a derivative (sp.exp, sp.log, sp.tanh); anything else sympy's diff leaves (sign, Heaviside, Derivative,
# Piecewise, ...) means the term is not smooth in a way dpc can print
_ARITHMETIC = (sp.Add, sp.Mul, sp.Pow, sp.Symbol, sp.Number, sp.NumberSymbol)


def _is_scalar_node(coeff) -> bool:
    if isinstance(coeff, _ARITHMETIC):
        return True
    atom = declare.BY_SCALAR_CLASS.get(type(coeff))
    return atom is not None and atom.derivative is not None


def _check_scalar(coeff, term):
    if isinstance(coeff, (atoms.ScalarAtom, MatrixExpr)):
        return  # its arguments are vectors: printed by its own rule
    if not _is_scalar_node(coeff):
        raise NotDifferentiable(term)
    for arg in coeff.args:
        _check_scalar(arg, term)


def _atom_gradient(a, var) -> list:
    """grad_var of one scalar atom holding var."""
    if isinstance(a, atoms.Dot):
        u, v = a.args
        return pullback(u, v, var) + pullback(v, u, var)
    derivative = getattr(type(a), "derivative", None)  # a declared scalar atom's gradient in its argument
    if derivative is not None and len(a.args) == 1:
        (v,) = a.args
        return pullback(v, derivative(v), var)
    if isinstance(a, atoms.IndexSum):
        return _index_sum_gradient(a, var)
    raise NotDifferentiable(a)


def _index_sum_gradient(a, var) -> list:
    """sum_j body(j): where body reads var only through entries e[j], the gradient is the pullback
    through e of the vector [d body / d e[j]]_j, written as a vector expression when it is one."""
    body, j, dim = a.args
    entries = [e for e in _outer_atoms(body, var)]
    if any(not isinstance(e, atoms.Entry) or e.args[1] != j or e.args[0].has(j) for e in entries):
        raise NotDifferentiable(a)
    terms = []
    for e, coeff in _partials(body, entries, var, a):
        vector = _vectorised(coeff, j, dim)
        if vector is None:
            raise NotDifferentiable(a)
        terms += pullback(e.args[0], vector, var)
    return terms


def _vectorised(expr, j, dim):
    """The vector [expr]_j (j = 0..dim-1) as an entrywise expression: (D @ z - x)[j]^2 -> (D @ z - x)^2.
    None if expr is not built from entries e[j] of size-dim vectors by +, *, numeric powers, exp, log."""
    if not expr.has(j):
        return expr * atoms.Ones(dim, 1) if expr != 0 else ZeroMatrix(dim, 1)
    if isinstance(expr, atoms.Entry):
        vector = expr.args[0]
        return vector if expr.args[1] == j and vector.shape[0] == dim and not vector.has(j) else None
    if isinstance(expr, sp.Add):
        parts = [_vectorised(t, j, dim) for t in expr.args]
        return None if any(p is None for p in parts) else MatAdd(*parts)
    if isinstance(expr, sp.Mul):
        scalar, rest = expr.as_independent(j, as_Add=False)
        parts = [_vectorised(f, j, dim) for f in sp.Mul.make_args(rest)]
        if any(p is None for p in parts):
            return None
        out = parts[0] if len(parts) == 1 else HadamardProduct(*parts)
        return out if scalar == 1 else scalar * out
    if isinstance(expr, sp.Pow) and expr.exp.is_number:
        base = _vectorised(expr.base, j, dim)
        return None if base is None else HadamardPower(base, expr.exp)
    if isinstance(expr, (sp.exp, sp.log)):
        inner = _vectorised(expr.args[0], j, dim)
        return None if inner is None else (atoms.Exp if isinstance(expr, sp.exp) else atoms.Log)(inner)
    return None


def pullback(e, w, var) -> list:
    """The vector-Jacobian product w.T @ d e / d var, as summands: e and the cotangent w have one shape."""
    if not e.has(var):
        return []
    if e == var:
        return [w]
    if isinstance(e, MatAdd):
        return [t for arg in e.args for t in pullback(arg, w, var)]
    if isinstance(e, MatMul):
        return _matmul_pullback(e, w, var)
    if isinstance(e, HadamardProduct):
        out = []
        for i, arg in enumerate(e.args):
            if arg.has(var):
                others = [b for k, b in enumerate(e.args) if k != i]
                out += pullback(arg, hadamard(w, *others), var)
        return out
    if isinstance(e, HadamardPower):
        base, p = e.args
        if p.has(var) or not p.is_number:
            raise NotDifferentiable(e)
        slope = base if p == 2 else HadamardPower(base, p - 1)
        return pullback(base, hadamard(w, p * slope), var)
    atom = declare.of(e)
    if atom is not None and isinstance(atom.derivative, declare.Pullback):
        i = atom.linear.operand if atom.linear is not None else 0  # conv(K, u): u is the operand
        v, params = e.args[i], e.args[:i] + e.args[i + 1:]
        if any(p.has(var) for p in params):
            raise NotDifferentiable(e)
        return pullback(v, atom.derivative.fn(e, w), var)
    derivative = getattr(type(e), "derivative", None)
    if isinstance(e, atoms.VectorAtom) and derivative is not None:
        v, params = e.args[0], e.args[1:]
        if any(p.has(var) for p in params):
            raise NotDifferentiable(e)
        return pullback(v, hadamard(w, derivative(v, *params)), var)
    raise NotDifferentiable(e)


def _matmul_pullback(e, w, var) -> list:
    """c * M1 @ ... @ Mk @ v: only v (and the scalar c) may hold var; w -> c * Mk.T @ ... @ M1.T @ w."""
    coeff, mats = e.as_coeff_matrices()
    if any(m.has(var) for m in mats[:-1]):
        return _inner_factor_pullback(e, coeff, mats, w, var)
    last = mats[-1]
    rest = MatMul(*mats) if len(mats) > 1 else last
    out = []
    if coeff.has(var):  # a scalar that reads var scales a vector: product rule, (w @ rest) grad c
        out += _scaled(atoms.Dot(w, rest), gradient_terms(coeff, var))
    if last.has(var):
        pulled = MatMul(*[m.T for m in reversed(mats[:-1])], w) if len(mats) > 1 else w
        out += _scaled(coeff, pullback(last, pulled, var))
    return out


def _inner_factor_pullback(e, coeff, mats, w, var) -> list:
    """c * M1 @ ... @ Mk with var in a factor before the last (a matrix var: A @ L @ B): the product rule,
    factor Mi pulls back (M1 ... M(i-1)).T @ w @ (M(i+1) ... Mk).T; only a product of matrices (its
    cotangent a matrix) and a coefficient free of var."""
    if coeff.has(var) or e.shape[1] == 1 and any(m.shape[1] == 1 for m in mats[:-1]):
        raise NotDifferentiable(e)
    out = []
    for i, m in enumerate(mats):
        if not m.has(var):
            continue
        left = [f.T for f in reversed(mats[:i])]
        right = [f.T for f in reversed(mats[i + 1:])]
        pulled = MatMul(*left, w, *right) if left or right else w
        out += _scaled(coeff, pullback(m, pulled, var))
    return out


def hadamard(w, *factors):
    """w * f1 * f2 ... entrywise, with all-ones factors (sum's cotangent) and scalar broadcasts folded."""
    out, scale = [], sp.Integer(1)
    for f in (w, *factors):
        if isinstance(f, ZeroMatrix):
            return f
        c, mats = f.as_coeff_matrices() if isinstance(f, MatMul) else (sp.Integer(1), [f])
        if len(mats) == 1 and isinstance(mats[0], atoms.Ones):
            scale = scale * c
            continue
        out.append(f)
    if not out:
        return scale * atoms.Ones(*w.shape)
    product = out[0] if len(out) == 1 else HadamardProduct(*out)
    return product if scale == 1 else scale * product


def _scaled(coeff, terms) -> list:
    if coeff == 1:
        return list(terms)
    return [coeff * t for t in terms]


def curvature(cls):
    """sup |phi''| of an entrywise atom, or None (unbounded, or not a smooth atom)."""
    return getattr(cls, "curvature", None)
