"""Index sums and index vectors in row form: the sum index j becomes a tensor axis.

`sum_j s[j] * sqnorm(x - C[j])` prints as

    (s * (x.unsqueeze(-2) - C).square().sum(-1)).sum(-1)

Inside the body every value that involves j carries j as an axis: a row C[j] is the
whole matrix C (k, d) with j on axis -2; an entry s[j] is the whole vector s (..., k);
a scalar that involves j is (..., k), because reductions over a vector that involves j
reduce its last axis and leave j last. Values free of j are printed by the enclosing
printer and broadcast: vectors get `.unsqueeze(-2)`, scalars keep their reduced axis
((batch, 1)). Scaling a vector by a scalar that involves j would need j on two different
axes; it is refused rather than printed wrong.
"""
from __future__ import annotations

from sympy import MatrixExpr

from dpc.backends.torch.printer import CALL, TorchPrinter, Unsupported


class IndexedPrinter(TorchPrinter):
    """Prints a body in which the sum index `j` is an axis (see the module docstring)."""

    def __init__(self, outer: TorchPrinter, j):
        super().__init__(outer.names, outer.batched, keepdim=False, like=outer.like)
        self.outer = TorchPrinter(outer.names, outer.batched, keepdim=True, like=outer.like)
        self.j = j

    def p(self, expr):
        if expr.has(self.j):
            return super().p(expr)
        code, prec = self.outer.p(expr)
        self.helpers |= self.outer.helpers
        if isinstance(expr, MatrixExpr) and expr.shape[1] == 1 and code not in ("0", "1"):
            return f"{code if prec >= CALL else f'({code})'}.unsqueeze(-2)", CALL
        return code, prec

    def _Entry(self, e):
        vector, _ = e.args
        code, prec = self.outer.p(vector)
        self.helpers |= self.outer.helpers
        return code, prec

    def _Row(self, e):
        matrix, _ = e.args
        return self.outer.p(matrix)

    def _MatMul(self, e):
        coeff, mats = e.as_coeff_matrices()
        if coeff.has(self.j) and not all(m.shape == (1, 1) for m in mats):
            raise Unsupported(f"the torch backend cannot scale a vector by a scalar that involves the sum "
                              f"index {self.j} ({e})")
        return super()._MatMul(e)


def print_index_sum(printer: TorchPrinter, e):
    """sum_j body: the body with j as its last axis, summed over it."""
    body, j, _ = e.args
    inner = IndexedPrinter(printer, j)
    code, prec = inner.p(body)
    printer.helpers |= inner.helpers
    keep = ", keepdim=True" if printer.keepdim else ""
    return f"{code if prec >= CALL else f'({code})'}.sum(-1{keep})", CALL


def print_index_vector(printer: TorchPrinter, e):
    """[body]_j: the body with j as its last axis, a vector in row form."""
    body, j, _ = e.args
    inner = IndexedPrinter(printer, j)
    code, prec = inner.p(body)
    printer.helpers |= inner.helpers
    return code, prec

