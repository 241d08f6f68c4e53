"""The IR's atoms: sympy classes for the functions a .dp program can call.

Atoms state only local facts, each in one place: their shape rule (used by the checker
in lower.py), how they are built, their numpy `reference` (reference.py) and, for smooth
entrywise atoms, their `derivative` and `curvature` (calculus.py, passes/splitting.py).
Printing lives with each printer (printing.py for math, backends/torch/printer.py for
code); proximal operators live in passes/prox.py.

Shapes are tuples of dim names: () a scalar, (n,) a vector, (m, n) a matrix.
In sympy a vector R[n] is an n x 1 MatrixExpr.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp
from sympy import Basic, HadamardPower, HadamardProduct, MatrixExpr

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


SqNorm.reference = staticmethod(lambda np, v: np.sum(v * v))


class Norm1(ScalarAtom):
    """norm1(v) = sum |v_i|."""


Norm1.reference = staticmethod(lambda np, v: np.sum(np.abs(v)))


class Norm2(ScalarAtom):
    """norm2(v) = ||v||_2."""


Norm2.reference = staticmethod(lambda np, v: np.sqrt(np.sum(v * v)))


class Norm0(ScalarAtom):
    """norm0(v) = number of non-zero entries."""


Norm0.reference = staticmethod(lambda np, v: np.float64(np.count_nonzero(v)))


class SumAll(ScalarAtom):
    """sum(v) = sum of the entries."""


SumAll.reference = staticmethod(lambda np, v: np.sum(v))


class Dot(ScalarAtom):
    """v @ w for two vectors: the inner product."""


Dot.reference = staticmethod(lambda np, a, b: np.sum(a * b))


class OpNorm(ScalarAtom):
    """opnorm(A): the largest singular value of A."""


OpNorm.reference = staticmethod(lambda np, A: np.linalg.norm(A, 2))  # the largest singular value


class Entry(ScalarAtom):
    """s[j]: entry j of a vector, j a sum index."""


Entry.reference = staticmethod(lambda np, v, j: v[j, 0])  # j: the sum index's value


class IndexSum(ScalarAtom):
    """sum_j body: args are (body, j, dim) with j ranging over dim."""


# body: a function of the index's value (reference.py binds j); dim: an int
IndexSum.reference = staticmethod(lambda np, body, dim: sum(body(j) for j in range(dim)))


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
    """soft(v, t) = max(v - t, 0) - max(-v - t, 0); for t >= 0 this is sign(v) * max(|v| - t, 0), the prox of
    t*norm1. A learned threshold can go below 0 in training: there the formula gives 2v for |v| < -t, which is
    continuous, where sign(v) * max(|v| - t, 0) would jump at v = 0. The formula is the definition."""


def _soft_reference(np, v, t):
    return np.maximum(v - t, 0) - np.maximum(-v - t, 0)


Soft.reference = staticmethod(_soft_reference)


class Hard(VectorAtom):
    """hard(v, t) = v * [|v| > t]: the prox of (t^2/2)*norm0."""


Hard.reference = staticmethod(lambda np, v, t: v * (np.abs(v) > t))


class SoftPos(VectorAtom):
    """softpos(v, t) = max(v - t, 0): the prox of t*norm1 restricted to v >= 0."""


SoftPos.reference = staticmethod(lambda np, v, t: np.maximum(v - t, 0))


class Clamp(VectorAtom):
    """clamp(v, lo, hi) = min(max(v, lo), hi): projection onto a box."""


Clamp.reference = staticmethod(lambda np, v, lo, hi: np.minimum(np.maximum(v, lo), hi))


class Relu(VectorAtom):
    """relu(v) = max(v, 0)."""


Relu.reference = staticmethod(lambda np, v: np.maximum(v, 0))


class Sigmoid(VectorAtom):
    """sigmoid(v) = 1 / (1 + exp(-v))."""


Sigmoid.reference = staticmethod(lambda np, v: 1 / (1 + np.exp(-v)))
Sigmoid.derivative = staticmethod(lambda v: HadamardProduct(Sigmoid(v), Sigmoid(-v)))  # s(v)(1 - s(v))
Sigmoid.curvature = sp.sqrt(3) / 18  # |s''| is largest at v = log(2 -+ sqrt(3)): 1/(6 sqrt(3))


class Tanh(VectorAtom):
    """tanh(v), elementwise."""


Tanh.reference = staticmethod(lambda np, v: np.tanh(v))
Tanh.derivative = staticmethod(lambda v: _ones_like(v) - HadamardPower(Tanh(v), 2))
Tanh.curvature = 4 * sp.sqrt(3) / 9  # |tanh''| = 2 tanh (1 - tanh^2) is largest at tanh = 1/sqrt(3)


class Exp(VectorAtom):
    """exp(v), elementwise."""


Exp.reference = staticmethod(lambda np, v: np.exp(v))
Exp.derivative = staticmethod(lambda v: Exp(v))
Exp.curvature = None


class Log(VectorAtom):
    """log(v), elementwise."""


Log.reference = staticmethod(lambda np, v: np.log(v))
Log.derivative = staticmethod(lambda v: HadamardPower(v, -1))
Log.curvature = None


class Abs(VectorAtom):
    """abs(v), elementwise."""


Abs.reference = staticmethod(lambda np, v: np.abs(v))


# --- smooth elementwise atoms: each states its derivative beside its reference ---------------
# derivative(v, *params): phi'(v) entrywise, an IR value of v's shape (calculus.py chains it: the gradient
# of sum(phi(A @ z + b)) is A.T @ phi'(A @ z + b), never a diagonal matrix).
# curvature: sup over the reals of |phi''|, a Lipschitz constant of phi' (splitting.py bounds the step with
# it); None where phi'' is unbounded (exp, log, log1p): derive then needs an explicit step.

def _ones_like(v):
    return Ones(*v.shape)


class Square(VectorAtom):
    """square(v) = v * v, entrywise."""

    dp_name = "square"


Square.reference = staticmethod(lambda np, v: v * v)
Square.derivative = staticmethod(lambda v: 2 * v)
Square.curvature = sp.Integer(2)


class Softplus(VectorAtom):
    """softplus(v) = log(1 + exp(v)), entrywise, computed without overflow."""

    dp_name = "softplus"


Softplus.reference = staticmethod(lambda np, v: np.logaddexp(0, v))
Softplus.derivative = staticmethod(lambda v: Sigmoid(v))
Softplus.curvature = sp.Rational(1, 4)


class Log1p(VectorAtom):
    """log1p(v) = log(1 + v), entrywise, accurate for small v."""

    dp_name = "log1p"


Log1p.reference = staticmethod(lambda np, v: np.log1p(v))
Log1p.derivative = staticmethod(lambda v: HadamardPower(_ones_like(v) + v, -1))
Log1p.curvature = None


class LogCosh(VectorAtom):
    """logcosh(v) = log(cosh(v)), entrywise, computed without overflow: ~ v^2/2 near 0, ~ |v| - log 2 far."""

    dp_name = "logcosh"


LogCosh.reference = staticmethod(lambda np, v: np.logaddexp(v, -v) - np.log(2))
LogCosh.derivative = staticmethod(lambda v: Tanh(v))
LogCosh.curvature = sp.Integer(1)


class Huber(VectorAtom):
    """huber(v, d) = v^2/2 where |v| <= d, d*(|v| - d/2) elsewhere, entrywise (Huber 1964); d >= 0."""

    dp_name = "huber"


Huber.reference = staticmethod(
    lambda np, v, d: np.where(np.abs(v) <= d, 0.5 * v * v, d * (np.abs(v) - 0.5 * d)))
Huber.derivative = staticmethod(lambda v, d: Clamp(v, -d, d))
Huber.curvature = sp.Integer(1)
# what an argument must be for the atom to mean anything: (argument index, relation, why), checked at the
# default and in the constructor where the argument is a hyper or let (dpc.requirements)
Huber.requires = ((1, "nonnegative", "the width of huber(v, d)"),)


class Softmax(VectorAtom):
    """softmax(v) = exp(v) / sum(exp(v))."""


Softmax.reference = staticmethod(lambda np, v: np.exp(v - v.max()) / np.sum(np.exp(v - v.max())))


class Row(MatrixExpr):
    """C[j]: row j of a matrix, as a column vector; args (C, j)."""

    def __new__(cls, matrix, index):
        return Basic.__new__(cls, matrix, index)

    @property
    def shape(self):
        return (self.args[0].shape[1], sp.S.One)


Row.reference = staticmethod(lambda np, C, j: C[j].reshape(-1, 1))  # row j as a column vector


# Atoms that are proximal/elementwise non-linearities whose scalar arguments
# after the first are thresholds (learn weights makes them parameters).
THRESHOLD_ATOMS = (Soft, SoftPos, Hard)


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


def _entrywise(args):
    _one(args)
    if args[0] == ():
        raise ShapeError("needs a vector or matrix (it acts entrywise), got a scalar")
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
        if args[0] == ():
            raise ShapeError("needs a vector or matrix first (it acts entrywise), got a scalar")
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
        if isinstance(v, MatrixExpr):
            return cls(v)
        try:
            return scalar_fn(v)
        except (NotImplementedError, TypeError):  # sympy's own evaluation trips on a matrix inside the scalar
            with sp.evaluate(False):              # (abs of an entry of D @ (0.1 - s)): keep it as written
                return scalar_fn(v)
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
    AtomSpec("square", "square(v)", _entrywise, Square, "v * v"),
    AtomSpec("softplus", "softplus(v)", _entrywise, Softplus, "log(1 + exp(v)), stable"),
    AtomSpec("log1p", "log1p(v)", _entrywise, Log1p, "log(1 + v)"),
    AtomSpec("logcosh", "logcosh(v)", _entrywise, LogCosh, "log(cosh(v)), stable"),
    AtomSpec("huber", "huber(v, d)", _with_scalars(1), Huber, "v^2/2 for |v| <= d, d*(|v| - d/2) beyond"),
    AtomSpec("eye", "eye(n)", _eye, None, "identity matrix"),
]}


def _scalar_only(args):
    _one(args)
    if args[0] != ():
        raise ShapeError(f"needs a scalar, got {_show(args[0])}")
    return ()


show_shape = _show


# --- relaxations and closed forms (passes/relax.py, passes/closed.py) ---------

class Entropy(ScalarAtom):
    """entropy(v) = -sum_i v_i log v_i (with 0 log 0 = 0): Shannon entropy of a distribution."""

    dp_name = "entropy"


def _xlogx(np, v):
    """v log v elementwise, 0 where v = 0."""
    return np.where(v == 0, 0.0, v * np.log(np.where(v == 0, 1.0, v)))


Entropy.reference = staticmethod(lambda np, v: -np.sum(_xlogx(np, v)))


class BinaryEntropy(ScalarAtom):
    """bentropy(v) = -sum_i (v_i log v_i + (1 - v_i) log(1 - v_i)): entropies of independent bits."""

    dp_name = "bentropy"


BinaryEntropy.reference = staticmethod(lambda np, v: -np.sum(_xlogx(np, v) + _xlogx(np, 1 - v)))


class Sparsemax(VectorAtom):
    """sparsemax(v): the Euclidean projection of v onto the probability simplex."""

    dp_name = "sparsemax"


def _sparsemax_reference(np, v):
    """max(v - tau, 0) with tau such that the entries sum to 1: sort descending, the support is every
    k with 1 + k z_k > z_1 + ... + z_k (Held, Wolfe & Crowder 1974; Michelot 1986)."""
    z = np.sort(v.ravel())[::-1]
    cumsum = np.cumsum(z)
    k = np.arange(1, z.size + 1)
    support = k[1 + k * z > cumsum].max(initial=1)  # >= 1: the largest entry, even where 1 + z_1 rounds to z_1
    tau = (cumsum[support - 1] - 1) / support
    return np.maximum(v - tau, 0)


Sparsemax.reference = staticmethod(_sparsemax_reference)


# normalize and rownormalize divide by max(||v||, NORM_FLOOR): the zero vector stays 0 (not 0/0), as in
# torch's F.normalize, which the emitter uses.
NORM_FLOOR = 1e-12


class Normalize(VectorAtom):
    """normalize(v) = v / max(||v||_2, 1e-12): v scaled to unit norm, and 0 for v = 0."""

    dp_name = "normalize"


Normalize.reference = staticmethod(lambda np, v: v / max(np.sqrt(np.sum(v * v)), NORM_FLOOR))


class RowNormalize(VectorAtom):
    """rownormalize(A): every row of A divided by max(its Euclidean norm, 1e-12) (same shape as A)."""

    dp_name = "rownormalize"


RowNormalize.reference = staticmethod(
    lambda np, A: A / np.maximum(np.sqrt(np.sum(A * A, axis=1, keepdims=True)), NORM_FLOOR))


class RowSqNorm(MatrixExpr):
    """rowsqnorm(A): the vector of squared row norms, entry j = ||A[j]||^2; A (k x d) -> k x 1."""

    dp_name = "rowsqnorm"

    def __new__(cls, matrix):
        return Basic.__new__(cls, sp.sympify(matrix))

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.S.One)


RowSqNorm.reference = staticmethod(lambda np, A: np.sum(A * A, axis=1, keepdims=True))


class Solve(MatrixExpr):
    """solve(A, b) = A^-1 b, computed by a linear solve (never an explicit inverse); args (A, b)."""

    dp_name = "solve"

    def __new__(cls, matrix, rhs):
        return Basic.__new__(cls, sp.sympify(matrix), sp.sympify(rhs))

    @property
    def shape(self):
        return self.args[1].shape


Solve.reference = staticmethod(lambda np, A, b: np.linalg.solve(A, b))


class CG(MatrixExpr):
    """cg(A, b, x0, k): k steps of conjugate gradients for A x = b (A symmetric positive definite) from x0;
    args (A, b, x0, k). No syntax of its own: `derive admm(solve = cg(iters = k))` builds it, warm-started
    at the previous z. A direction of zero curvature (the residual is already 0) does not move x."""

    def __new__(cls, matrix, rhs, start, iters):
        return Basic.__new__(cls, sp.sympify(matrix), sp.sympify(rhs), sp.sympify(start), sp.sympify(iters))

    @property
    def shape(self):
        return self.args[1].shape


def _cg_reference(np, A, b, x0, iters):
    x = np.zeros_like(b) + x0
    r = b - A @ x
    p, rs = r, float((r * r).sum())
    for _ in range(int(iters)):
        Ap = A @ p
        curvature = float((p * Ap).sum())
        alpha = rs / curvature if curvature > 0 else 0.0
        x, r = x + alpha * p, r - alpha * Ap
        rs_next = float((r * r).sum())
        p = r + (rs_next / rs if rs > 0 else 0.0) * p
        rs = rs_next
    return x


CG.reference = staticmethod(_cg_reference)


class IndexVector(MatrixExpr):
    """[body]_j: the vector whose entry j is the scalar body; args (body, j, dim). No syntax of its own:
    passes build it (the cost vector c[j] = body of sum_j s[j] * body)."""

    def __new__(cls, body, index, dim):
        return Basic.__new__(cls, body, index, sp.sympify(dim))

    @property
    def shape(self):
        return (self.args[2], sp.S.One)


# body: a function of the index's value (reference.py binds j); dim: an int
IndexVector.reference = staticmethod(lambda np, body, dim: np.array([[body(j)] for j in range(dim)], dtype=float))


class Ones(MatrixExpr):
    """ones(rows[, cols]): the all-ones vector (or matrix) as a value of its own. Every scalar that meets a
    vector or matrix becomes c * Ones(shape) when lowered (x + 1, a start value 0.5, c - D @ z), so the
    algebra never mistakes a broadcast scalar for a scalar: D @ (c * ones(n)) is c * D @ ones(n), the row
    sums of D, not c * D. (sympy's OneMatrix is not used for this: its products simplify as a scalar's.)"""

    dp_name = "ones"

    def __new__(cls, rows, cols=1):
        return Basic.__new__(cls, sp.sympify(rows), sp.sympify(cols))

    @property
    def shape(self):
        return (self.args[0], self.args[1])

    def _eval_transpose(self):
        return Ones(self.args[1], self.args[0])


Ones.reference = staticmethod(lambda np, rows, cols: np.ones((int(rows), int(cols))))


def _matrix_rows(args):
    _one(args)
    if len(args[0]) != 2:
        raise ShapeError(f"needs a matrix, got {_show(args[0])}")
    return (args[0][0],)


def _matrix_same(args):
    _one(args)
    if len(args[0]) != 2:
        raise ShapeError(f"needs a matrix, got {_show(args[0])}")
    return args[0]


def _solve(args):
    if len(args) != 2:
        raise ShapeError(f"takes 2 arguments, got {len(args)}")
    a, b = args
    if len(a) != 2 or a[0] != a[1]:
        raise ShapeError(f"needs a square matrix first, got {_show(a)}")
    if len(b) != 1 or b[0] != a[0]:
        raise ShapeError(f"needs a vector of size {a[0]} second, got {_show(b)}")
    return b


ATOMS.update({a.name: a for a in [
    AtomSpec("entropy", "entropy(v)", _vector_to_scalar, Entropy, "-sum_i v_i log v_i"),
    AtomSpec("bentropy", "bentropy(v)", _vector_to_scalar, BinaryEntropy,
             "-sum_i (v_i log v_i + (1 - v_i) log(1 - v_i))"),
    AtomSpec("sparsemax", "sparsemax(v)", _vector_same, Sparsemax, "projection onto the simplex"),
    AtomSpec("normalize", "normalize(v)", _vector_same, Normalize, "v / ||v||_2"),
    AtomSpec("rownormalize", "rownormalize(A)", _matrix_same, RowNormalize, "rows of A scaled to unit norm"),
    AtomSpec("rowsqnorm", "rowsqnorm(A)", _matrix_rows, RowSqNorm, "squared norm of every row of A"),
    AtomSpec("solve", "solve(A, b)", _solve, Solve, "A^-1 b by a linear solve"),
]})


# --- the LISTA family (passes/adapt_support.py, adapt_gates.py, learn_coupled.py) ---

LAYER = sp.Symbol("_layer", integer=True, positive=True)  # the layer number t = 1..T; the emitter binds it


class SoftSS(VectorAtom):
    """softss(v, t, p, pmax): soft threshold with support selection (LISTA-CPSS, Chen et al. 2018).

    args (v, t, p, pmax, layer). At layer number `layer` the share p_t = min(layer * p, pmax) percent:
    in each sample the k = floor(p_t * len(v) / 100) largest |v_i| pass unshrunk where |v_i| > t
    (the selection mask carries no gradient); every other entry is soft-thresholded.
    """

    dp_name = "softss"


def _softss_reference(np, v, t, p, pmax, layer):
    """soft(v, t), except that the k = floor(min(layer * p, pmax) * n / 100) entries of largest |v| (ties:
    the lower index first) pass unshrunk where |v| > t."""
    n = v.size
    k = min(int(np.floor(min(layer * p, pmax) * n / 100 + 1e-6)), n)  # 1e-6: a share rounded just below k is k
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-np.abs(v.ravel()), kind="stable")[:max(k, 0)]] = True
    keep = top.reshape(v.shape) & (np.abs(v) > t)
    return np.where(keep, v, _soft_reference(np, v, t))


SoftSS.reference = staticmethod(_softss_reference)


class Analytic(MatrixExpr):
    """analytic(D): ALISTA's analytic weight (Liu et al. 2019), the same shape as D.

    W = argmin ||off-diagonal of W.T @ D||_F subject to diag(W.T @ D) = 1; column i is
    G^+ D_i / (D_i.T G^+ D_i) with G = D @ D.T, the exact minimiser.
    """

    dp_name = "analytic"

    def __new__(cls, matrix):
        return Basic.__new__(cls, sp.sympify(matrix))

    @property
    def shape(self):
        return self.args[0].shape


def _analytic_reference(np, D):
    """Column i of W is G^+ D_i / (D_i.T G^+ D_i), G = D D.T (the docstring above)."""
    pinv = np.linalg.pinv(D @ D.T, hermitian=True)
    return np.column_stack([pinv @ d / (d @ pinv @ d) for d in D.T])


Analytic.reference = staticmethod(_analytic_reference)


class InitialValue(MatrixExpr):
    """A learned weight's starting value that is no function of the program: args (rows, cols)."""

    def __new__(cls, rows, cols):
        return Basic.__new__(cls, sp.sympify(rows), sp.sympify(cols))

    @property
    def shape(self):
        return self.args


class Zeros(InitialValue):
    """zeros(rows, cols): all zero."""

    dp_name = "zeros"


Zeros.reference = staticmethod(lambda np, rows, cols: np.zeros((int(rows), int(cols))))


class Xavier(InitialValue):
    """xavier(rows, cols): uniform on [-a, a], a = sqrt(6 / (rows + cols)) (Glorot & Bengio 2010), drawn at
    construction from torch's generator."""

    dp_name = "xavier"


Xavier.reference = None  # random: reference.evaluate needs the weight's value given (weights=)


def _softss(args):
    if len(args) != 4:
        raise ShapeError(f"takes 4 arguments, got {len(args)}")
    if len(args[0]) != 1:
        raise ShapeError(f"needs a vector first, got {_show(args[0])}")
    return _with_scalars(3)(args)


def _analytic(args):
    _one(args)
    if len(args[0]) != 2:
        raise ShapeError(f"needs a matrix, got {_show(args[0])}")
    return args[0]


THRESHOLD_ATOMS = THRESHOLD_ATOMS + (SoftSS,)
ATOMS.update({a.name: a for a in [
    AtomSpec("softss", "softss(v, t, p, pmax)", _softss, lambda v, t, p, pmax: SoftSS(v, t, p, pmax, LAYER),
             "soft threshold; the largest min(layer*p, pmax) percent of |v| pass unshrunk"),
    AtomSpec("analytic", "analytic(D)", _analytic, Analytic, "ALISTA's analytic weight for D"),
]})

# what `learn weights` linearises: the thresholds (their t becomes a learned theta) and the projections of
# a constraint (clamp, relu: their bounds stay, they are the constraint)
LINEARISED_ATOMS = THRESHOLD_ATOMS + (Clamp, Relu)
