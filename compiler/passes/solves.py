"""A linear solve with a fixed matrix is a linear map: `learn weights` reads it through.

solve(A, b) with A built from params, hypers and lets only is A^-1 @ b, linear in b. For the
affine analysis it becomes P @ b with P a placeholder symbol standing for A^-1; coefficients that
come out holding P are turned back into solves (left @ P @ right -> left @ solve(A, right)), so no
inverse is ever formed: a weight starts at, e.g., Dd @ solve(A, Dd.T), one solve at construction.
"""
from __future__ import annotations

from sympy import Identity, MatMul, MatrixSymbol

from dpc import atoms


def open_solves(expr, per_sample: set[str]):
    """(expr with each fixed-matrix solve(A, b) as P_A @ b, {P_A: A})."""
    found: dict = {}

    def visit(e):
        if not e.args:
            return e
        new = [visit(a) for a in e.args]
        e = e if all(a is b for a, b in zip(new, e.args)) else e.func(*new)
        if isinstance(e, atoms.Solve):
            matrix, rhs = e.args
            if not {getattr(s, "name", None) for s in matrix.free_symbols} & per_sample:
                placeholder = next((p for p, m in found.items() if m == matrix), None)
                if placeholder is None:
                    placeholder = MatrixSymbol(f"_inverse_{len(found)}", *matrix.shape)
                    found[placeholder] = matrix
                return MatMul(placeholder, rhs)
        return e
    return visit(expr), found


def close_solves(expr, found: dict):
    """Every P_A in expr turned back into a solve with A (left @ P_A @ right -> left @ solve(A, right))."""
    if not found or not any(expr.has(p) for p in found):
        return expr

    def rewrite(e):
        if isinstance(e, MatMul):
            coeff, mats = e.as_coeff_matrices()
            for i, m in enumerate(mats):
                if m in found:
                    right = mats[i + 1:]
                    rhs = rewrite(MatMul(*right).doit()) if len(right) > 1 else (right[0] if right else
                                                                                  Identity(m.shape[1]))
                    solved = atoms.Solve(found[m], rhs)
                    left = mats[:i]
                    return coeff * (MatMul(*left, solved) if left else solved)
            return e
        if e in found:
            return atoms.Solve(found[e], Identity(e.shape[1]))
        if not e.args:
            return e
        return e.func(*[rewrite(a) for a in e.args])
    out = rewrite(expr)
    assert not any(out.has(p) for p in found), out
    return out
