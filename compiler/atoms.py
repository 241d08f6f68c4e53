"""The IR's atoms: sympy classes for the functions a .dp program can call.

Atoms state only local facts: their shape rule (used by the checker in lower.py)
and how they are built. Printing lives with each printer (printing.py for math,
backends/torch/printer.py for code); proximal operators live in passes/prox.py.

Shapes are tuples of dim names: () a scalar, (n,) a vector, (m, n) a matrix.
In sympy a vector R[n] is an n x 1 MatrixExpr.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp
from sympy import Basic, MatrixExpr

Shape = tuple


# --- scalar-valued atoms ------------------------------------------------------

class ScalarAtom(sp.Function):
    """A real scalar computed from vectors or matrices (norms, sums)."""

    is_real = True
    is_commutative = True

    @classmethod
    def eval(cls, *args):
        return None

    def _eval_derivative(self, s):  # diff goes through matrix calculus (passes/smooth.py)
        raise NotImplementedError(f"{type(self).__name__} has no scalar derivative")


class SqNorm(ScalarAtom):
    """sqnorm(v) = ||v||_2^2."""


class Norm1(ScalarAtom):
    """norm1(v) = sum |v_i|."""


class Norm2(ScalarAtom):
    """norm2(v) = ||v||_2."""


class Norm0(ScalarAtom):
    """norm0(v) = number of non-zero entries."""


class SumAll(ScalarAtom):
    """sum(v) = sum of the entries."""


class Dot(ScalarAtom):
    """v @ w for two vectors: the inner product."""


class OpNorm(ScalarAtom):
    """opnorm(A): the largest singular value of A."""


class Entry(ScalarAtom):
    """s[j]: entry j of a vector, j a sum index."""


class IndexSum(ScalarAtom):
    """sum_j body: args are (body, j, dim) with j ranging over dim."""


# --- vector- and matrix-valued atoms -----------------------------------------

class VectorAtom(MatrixExpr):
    """A matrix expression whose shape is its first argument's shape."""

    def __new__(cls, *args):
        return Basic.__new__(cls, *(sp.sympify(a) for a in args))

    @property
    def shape(self):
        return self.args[0].shape

    def _eval_transpose(self):
        return None


class Soft(VectorAtom):
    """soft(v, t) = sign(v) * max(|v| - t, 0): the prox of t*norm1."""


class Hard(VectorAtom):
    """hard(v, t) = v * [|v| > t]: the prox of (t^2/2)*norm0."""


class SoftPos(VectorAtom):
    """softpos(v, t) = max(v - t, 0): the prox of t*norm1 restricted to v >= 0."""


class Clamp(VectorAtom):
    """clamp(v, lo, hi) = min(max(v, lo), hi): projection onto a box."""


class Relu(VectorAtom):
    """relu(v) = max(v, 0)."""


class Sigmoid(VectorAtom):
    """sigmoid(v) = 1 / (1 + exp(-v))."""


class Tanh(VectorAtom):
    """tanh(v), elementwise."""


class Exp(VectorAtom):
    """exp(v), elementwise."""


class Log(VectorAtom):
    """log(v), elementwise."""


class Abs(VectorAtom):
    """abs(v), elementwise."""


class Softmax(VectorAtom):
    """softmax(v) = exp(v) / sum(exp(v))."""


class Row(MatrixExpr):
    """C[j]: row j of a matrix, as a column vector; args (C, j)."""

    def __new__(cls, matrix, index):
        return Basic.__new__(cls, matrix, index)

    @property
    def shape(self):
        return (self.args[0].shape[1], sp.S.One)


# Atoms that are proximal/elementwise non-linearities whose scalar arguments
# after the first are thresholds (learn weights makes them parameters).
THRESHOLD_ATOMS = (Soft, SoftPos, Hard)
ELEMENTWISE = (Soft, SoftPos, Hard, Clamp, Relu, Sigmoid, Tanh, Exp, Log, Abs)


# --- the table the checker reads ---------------------------------------------

class ShapeError(Exception):
    """Raised by a shape rule; lower.py turns it into a DpcError at the call's span."""


@dataclass(frozen=True)
class AtomSpec:
    name: str
    signature: str  # shown in errors, e.g. "soft(v, t)"
    rule: Callable[[list[Shape]], Shape]
    build: Callable[..., Basic]
    doc: str


def _one(args):
    if len(args) != 1:
        raise ShapeError(f"takes 1 argument, got {len(args)}")


def _vector_to_scalar(args):
    _one(args)
    if len(args[0]) != 1:
        raise ShapeError(f"needs a vector, got {_show(args[0])}")
    return ()


def _matrix_to_scalar(args):
    _one(args)
    if len(args[0]) != 2:
        raise ShapeError(f"needs a matrix, got {_show(args[0])}")
    return ()


def _elementwise(args):
    _one(args)
    return args[0]


def _vector_same(args):
    _one(args)
    if len(args[0]) != 1:
        raise ShapeError(f"needs a vector, got {_show(args[0])}")
    return args[0]


def _with_scalars(count):
    def rule(args):
        if len(args) != 1 + count:
            raise ShapeError(f"takes {1 + count} arguments, got {len(args)}")
        for a in args[1:]:
            if a != ():
                raise ShapeError(f"needs scalar thresholds/bounds after the first argument, got {_show(a)}")
        return args[0]
    return rule


def _eye(args):
    raise ShapeError("is handled by the checker")  # eye(n) takes a dim, not a value


def _show(shape: Shape) -> str:
    return "R" if not shape else "R[" + ", ".join(shape) + "]"


def _scalar_or(cls, scalar_fn):
    """Elementwise on vectors, the sympy function on scalars."""
    def build(v):
        return cls(v) if isinstance(v, MatrixExpr) else scalar_fn(v)
    return build


ATOMS: dict[str, AtomSpec] = {a.name: a for a in [
    AtomSpec("sqnorm", "sqnorm(v)", _vector_to_scalar, SqNorm, "||v||_2^2"),
    AtomSpec("norm1", "norm1(v)", _vector_to_scalar, Norm1, "sum_i |v_i|"),
    AtomSpec("norm2", "norm2(v)", _vector_to_scalar, Norm2, "||v||_2"),
    AtomSpec("norm0", "norm0(v)", _vector_to_scalar, Norm0, "number of non-zeros"),
    AtomSpec("sum", "sum(v)", _vector_to_scalar, SumAll, "sum of entries"),
    AtomSpec("opnorm", "opnorm(A)", _matrix_to_scalar, OpNorm, "largest singular value"),
    AtomSpec("soft", "soft(v, t)", _with_scalars(1), Soft, "soft threshold"),
    AtomSpec("softpos", "softpos(v, t)", _with_scalars(1), SoftPos, "max(v - t, 0)"),
    AtomSpec("hard", "hard(v, t)", _with_scalars(1), Hard, "hard threshold"),
    AtomSpec("clamp", "clamp(v, lo, hi)", _with_scalars(2), Clamp, "clip to [lo, hi]"),
    AtomSpec("relu", "relu(v)", _elementwise, _scalar_or(Relu, lambda v: sp.Max(v, 0)), "max(v, 0)"),
    AtomSpec("sigmoid", "sigmoid(v)", _elementwise,
             _scalar_or(Sigmoid, lambda v: 1 / (1 + sp.exp(-v))), "1/(1+exp(-v))"),
    AtomSpec("tanh", "tanh(v)", _elementwise, _scalar_or(Tanh, sp.tanh), "tanh"),
    AtomSpec("exp", "exp(v)", _elementwise, _scalar_or(Exp, sp.exp), "exp"),
    AtomSpec("log", "log(v)", _elementwise, _scalar_or(Log, sp.log), "log"),
    AtomSpec("abs", "abs(v)", _elementwise, _scalar_or(Abs, sp.Abs), "|v|"),
    AtomSpec("sqrt", "sqrt(a)", lambda a: _scalar_only(a), sp.sqrt, "square root of a scalar"),
    AtomSpec("softmax", "softmax(v)", _vector_same, Softmax, "exp(v)/sum(exp(v))"),
    AtomSpec("eye", "eye(n)", _eye, None, "identity matrix"),
]}


def _scalar_only(args):
    _one(args)
    if args[0] != ():
        raise ShapeError(f"needs a scalar, got {_show(args[0])}")
    return ()


show_shape = _show
