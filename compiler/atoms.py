"""The atoms: every function a .dp program can call, each declared once with all its rules (dpc.declare).

A declaration states the atom's shape rule (the checker, lower.py), its builder, its numpy `reference`
(reference.py), its derivative and curvature bound (calculus.py, passes/splitting.py), its requirements
(requirements.py), its convexity and monotonicity, its prox kind (passes/prox.py), its torch rendering
(backends/torch/printer.py) with any runtime helper it needs, its LaTeX, and how the fuzzer uses it. The
printers, the lexer's word list, the hint strings, the fuzzer and the docs' atom table read these
declarations; docs/design.md, "Adding an atom", walks through one.

The IR's own nodes that no program calls by name (Dot, Entry, IndexSum, Row, IndexVector, Ones, CG, the
initial values) are plain classes at the end of this file; each printer has a rule for them.

Shapes are tuples of dim names: () a scalar, (n,) a vector, (m, n) a matrix.
In sympy a vector R[n] is an n x 1 MatrixExpr.
"""
from __future__ import annotations

import contextvars

import sympy as sp
from sympy import Basic, HadamardPower, HadamardProduct, MatrixExpr

from dpc.declare import Fuzz, Pullback, declare, declare_macro, helper
from dpc.declare import ATOMS, BY_CLASS  # noqa: F401 - name -> declaration, the checker's table

Shape = tuple


class ShapeError(Exception):
    """Raised by a shape rule; lower.py turns it into a DpcError at the call's span (with the hint, if any)."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint


# --- the kinds of IR node an atom is ------------------------------------------------------------

class ScalarAtom(sp.Function):
    """A real scalar computed from vectors or matrices (norms, sums)."""

    is_real = True
    is_commutative = True

    @classmethod
    def eval(cls, *args):
        return None

    def _eval_derivative(self, s):  # diff goes through dpc's calculus (calculus.py)
        if not self.has(s):  # d/d lam of lam * opnorm(D): the atom is a constant in lam
            return sp.S.Zero
        raise NotImplementedError(f"{type(self).__name__} has no scalar derivative")


class VectorAtom(MatrixExpr):
    """A matrix expression whose shape is its first argument's shape (entrywise functions, thresholds)."""

    def __new__(cls, *args):
        return Basic.__new__(cls, *(sp.sympify(a) for a in args))

    @property
    def shape(self):
        return self.args[0].shape

    def _eval_transpose(self):
        return None


# --- shape rules ----------------------------------------------------------------------------------

def show_shape(shape: Shape) -> str:
    return "R" if not shape else "R[" + ", ".join(shape) + "]"


def _one(args):
    if len(args) != 1:
        raise ShapeError(f"takes 1 argument, got {len(args)}")


def _one_of_rank(args, ranks, what):
    """The one argument's shape, which must have one of the ranks (1 a vector, 2 a matrix)."""
    _one(args)
    if len(args[0]) not in ranks:
        raise ShapeError(f"needs {what}, got {show_shape(args[0])}")
    return args[0]


def vector_to_scalar(args):
    _one_of_rank(args, (1,), "a vector")
    return ()


def array_to_scalar(args):
    """A vector, a matrix or an image stack R[c, h, w] (all its entries: sqnorm is then the squared Frobenius
    norm) to a scalar."""
    _one_of_rank(args, (1, 2, 3), "a vector or matrix")
    return ()


def matrix_to_scalar(args):
    _one_of_rank(args, (2,), "a matrix")
    return ()


def _matrix_only(what):
    def rule(args):
        _one(args)
        if len(args[0]) != 2:
            raise ShapeError(f"needs a matrix, got {show_shape(args[0])}", what)
        return ()
    return rule


def _vector_only(hint):
    """A vector to a scalar; hint: what to write for a matrix."""
    def rule(args):
        _one(args)
        if len(args[0]) != 1:
            raise ShapeError(f"needs a vector, got {show_shape(args[0])}", hint)
        return ()
    return rule


def elementwise(args):
    """Any shape, scalars included, to the same shape."""
    _one(args)
    return args[0]


def entrywise(args):
    """A vector or matrix to the same shape."""
    _one(args)
    if args[0] == ():
        raise ShapeError("needs a vector or matrix (it acts entrywise), got a scalar")
    return args[0]


def vector_same(args):
    return _one_of_rank(args, (1,), "a vector")


def matrix_same(args):
    return _one_of_rank(args, (2,), "a matrix")


def with_scalars(count):
    """A vector or matrix, then `count` scalars (thresholds, bounds, widths), to the first's shape."""
    def rule(args):
        if len(args) != 1 + count:
            raise ShapeError(f"takes {1 + count} arguments, got {len(args)}")
        if args[0] == ():
            raise ShapeError("needs a vector or matrix first (it acts entrywise), got a scalar")
        for a in args[1:]:
            if a != ():
                raise ShapeError(f"needs scalar thresholds/bounds after the first argument, got {show_shape(a)}")
        return args[0]
    return rule


def vector_with_scalars(count):
    """A vector, then `count` scalars, to the vector's shape (a projection or threshold of the whole vector)."""
    def rule(args):
        if len(args) != 1 + count:
            raise ShapeError(f"takes {1 + count} arguments, got {len(args)}")
        if len(args[0]) != 1:
            raise ShapeError(f"needs a vector first, got {show_shape(args[0])}")
        return with_scalars(count)(args)
    return rule


def scalar_only(args):
    _one(args)
    if args[0] != ():
        raise ShapeError(f"needs a scalar, got {show_shape(args[0])}")
    return ()


def _matrix_rows(args):
    return (_one_of_rank(args, (2,), "a matrix")[0],)


def _solve_shape(args):
    if len(args) != 2:
        raise ShapeError(f"takes 2 arguments, got {len(args)}")
    a, b = args
    if len(a) != 2 or a[0] != a[1]:
        raise ShapeError(f"needs a square matrix first, got {show_shape(a)}")
    if len(b) != 1 or b[0] != a[0]:
        raise ShapeError(f"needs a vector of size {a[0]} second, got {show_shape(b)}")
    return b


def _scalar_or(cls, scalar_fn):
    """The builder of an atom that also takes scalars: elementwise on vectors, scalar_fn on scalars."""
    def build(v):
        if isinstance(v, MatrixExpr):
            return cls(v)
        try:
            return scalar_fn(v)
        except (NotImplementedError, TypeError):  # sympy's own evaluation trips on a matrix inside the scalar
            with sp.evaluate(False):              # (abs of an entry of D @ (0.1 - s)): keep it as written
                return scalar_fn(v)
    return build


def _ones_like(v):
    return Ones(*v.shape)


# --- printing helpers for the rules below -------------------------------------------------------

def _norm_latex(sub, squared=False):
    r"""\left\|v\right\|_{sub}, raised to sympy's `exp` when the norm is (opnorm(D)^2)."""
    def latex(printer, expr, exp=None):
        tex = rf"\left\|{printer._print(expr.args[0])}\right\|_{{{sub}}}"
        if squared:
            tex += "^{2}"
            return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"
        return tex if exp is None else f"{tex}^{{{exp}}}"
    return latex


def _abs_latex(printer, expr, exp=None):
    tex = rf"\left|{printer._print(expr.args[0])}\right|"
    return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"


def _reduced(method_code):
    """A reduction over the last axis (one number per sample) of code built from the argument; over the last
    two of a matrix (every entry)."""
    return lambda pr, e: pr.reduce(method_code(pr, e.args[0]), axes=_axes(e.args[0]))


def _axes(arg) -> int:
    """How many trailing axes a reduction of every entry of arg sums: 1 for a vector, 2 for a matrix, 3 for
    an image stack R[c, h, w]."""
    return tensor_rank(arg)


# ==================================================================================================
# Scalars of vectors and matrices
# ==================================================================================================

class SqNorm(ScalarAtom):
    """sqnorm(v) = ||v||_2^2."""


declare("sqnorm", SqNorm, signature="sqnorm(v)", doc="||v||_2^2", shape=array_to_scalar,
        reference=lambda np, v: np.sum(v * v),
        torch=_reduced(lambda pr, v: f"{pr.wrap(v, 'call')}.square()"), latex=_norm_latex("2", squared=True),
        derivative=lambda v: 2 * v, curvature=None, convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=(),
        prox="ridge", fuzz=Fuzz("reduction"))


class Norm1(ScalarAtom):
    """norm1(v) = sum |v_i|."""


declare("norm1", Norm1, signature="norm1(v)", doc="sum_i |v_i|", shape=array_to_scalar,
        reference=lambda np, v: np.sum(np.abs(v)),
        torch=_reduced(lambda pr, v: f"{pr.wrap(v, 'call')}.abs()"), latex=_norm_latex("1"),
        derivative=None, curvature=None, convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=(),
        prox="norm1", fuzz=Fuzz("reduction"))


class Norm2(ScalarAtom):
    """norm2(v) = ||v||_2."""


declare("norm2", Norm2, signature="norm2(v)", doc="||v||_2",
        shape=_vector_only("of a matrix, write sqrt(sqnorm(A)) (Frobenius), nuclear(A) or norm21(A) in place of "
                           "norm2(A)"),
        reference=lambda np, v: np.sqrt(np.sum(v * v)),
        torch=lambda pr, e: (f"torch.linalg.vector_norm({pr(e.args[0])}, dim=-1"
                             f"{', keepdim=True' if pr.keepdim else ''})"),
        latex=_norm_latex("2"), derivative=None, curvature=None, convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=(), prox="norm2", fuzz=Fuzz("reduction"))


class Norm0(ScalarAtom):
    """norm0(v) = number of non-zero entries."""


# |sign(v)| counts the non-zeros in v's own dtype (a bool sum would be int64)
declare("norm0", Norm0, signature="norm0(v)", doc="number of non-zeros",
        shape=_vector_only("norm0 counts a vector's non-zeros; of a matrix, penalise norm1(A) (entrywise) in place "
                           "of norm0(A)"),
        reference=lambda np, v: np.float64(np.count_nonzero(v)),
        torch=_reduced(lambda pr, v: f"{pr.wrap(v, 'call')}.sign().abs()"), latex=_norm_latex("0"),
        derivative=None, curvature=None, convexity=None, monotone=None, scalar=None, sign="nonnegative", requires=(),
        prox="norm0", fuzz=Fuzz("reduction", weight=0.5))


class SumAll(ScalarAtom):
    """sum(v) = sum of the entries."""


declare("sum", SumAll, signature="sum(v)", doc="sum of entries", shape=array_to_scalar,
        reference=lambda np, v: np.sum(v), torch=_reduced(lambda pr, v: pr.wrap(v, "call")), latex=None,
        derivative=_ones_like, curvature=None, convexity="affine", monotone="increasing", scalar=None,
        sign=None, requires=(), prox=None, fuzz=Fuzz("reduction", weight=2))


class OpNorm(ScalarAtom):
    """opnorm(A): the largest singular value of A."""


# the fuzzer writes opnorm of its params itself (Lipschitz lets)
declare("opnorm", OpNorm, signature="opnorm(A)", doc="largest singular value",
        shape=_matrix_only("opnorm is a matrix's largest singular value; of a vector write norm2(v) in place of "
                           "opnorm(v)"),
        reference=lambda np, A: np.linalg.norm(A, 2),
        torch=lambda pr, e: pr.keep_scalar(f"torch.linalg.matrix_norm({pr(e.args[0])}, ord=2)")
        if pr.is_batched(e.args[0]) else f"torch.linalg.matrix_norm({pr(e.args[0])}, ord=2)",
        latex=_norm_latex("2"),  # of a matrix: the spectral norm, as the LISTA papers write L
        derivative=None, curvature=None, convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=(), prox=None,
        fuzz=None)


def _xlogx(np, v):
    """v log v elementwise, 0 where v = 0."""
    return np.where(v == 0, 0.0, v * np.log(np.where(v == 0, 1.0, v)))


ENTR = helper("_entr", '''
def _entr(v):
    """-v * log(v), 0 at v = 0, like torch.special.entr but with a finite gradient where v underflows to 0
    (the log reads v clamped to the smallest normal number), so entropies of softmax outputs backpropagate."""
    return -v * v.clamp_min(torch.finfo(v.dtype).tiny).log()
''')


class Entropy(ScalarAtom):
    """entropy(v) = -sum_i v_i log v_i (with 0 log 0 = 0): Shannon entropy of a distribution."""


# the fuzzer writes entropy(softmax(...)) and bentropy(sigmoid(...)) itself: their arguments are distributions
declare("entropy", Entropy, signature="entropy(v)", doc="-sum_i v_i log v_i", shape=vector_to_scalar,
        reference=lambda np, v: -np.sum(_xlogx(np, v)),
        torch=lambda pr, e: pr.reduce(f"{pr.use(ENTR)}({pr(e.args[0])})"), latex=None,
        derivative=lambda v: -(Log(v) + _ones_like(v)), curvature=None, convexity="concave", monotone=None,
        scalar=None, sign=None, requires=(), prox=None, fuzz=None)


class BinaryEntropy(ScalarAtom):
    """bentropy(v) = -sum_i (v_i log v_i + (1 - v_i) log(1 - v_i)): entropies of independent bits."""


declare("bentropy", BinaryEntropy, signature="bentropy(v)", doc="-sum_i (v_i log v_i + (1 - v_i) log(1 - v_i))",
        shape=vector_to_scalar, reference=lambda np, v: -np.sum(_xlogx(np, v) + _xlogx(np, 1 - v)),
        torch=lambda pr, e: pr.reduce(f"({pr.use(ENTR)}({pr(e.args[0])}) + _entr(1 - {pr.wrap(e.args[0], 'add+')}))"),
        latex=None, derivative=lambda v: Log(_ones_like(v) - v) - Log(v), curvature=None, convexity="concave",
        monotone=None, scalar=None, sign=None, requires=(), prox=None, fuzz=None)


# ==================================================================================================
# Thresholds and projections (the proxes; `learn weights` makes their thresholds parameters)
# ==================================================================================================

SOFT_COMPILED = helper("_SoftCompiled", '''
class _SoftCompiled(torch.autograd.Function):
    """_soft under torch.compile: the same values and gradients, with a backward that inductor's CPU code
    runs fast (differentiated as written, inductor stores the relus' masks as bools in slow kernels); this
    backward recomputes the masks as floats from v and t."""

    @staticmethod
    def forward(v, t):
        return torch.relu(v - t) - torch.relu(-v - t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        v, t = ctx.saved_tensors
        up, down = (v - t).relu().sign(), (-v - t).relu().sign()  # 1 where each relu is positive, else 0
        grad_t = (grad * (down - up)).sum_to_size(t.shape) if ctx.needs_input_grad[1] else None
        return grad * (up + down), grad_t
''')

SOFT = helper("_soft", '''
def _soft(v, t):
    """Soft threshold relu(v - t) - relu(-v - t), which is sign(v) * max(|v| - t, 0) for t >= 0 (and stays
    continuous if a learned t goes below 0). Written with -t once, so backward negates one gradient instead
    of four, and the relus run in place on the two fresh temporaries."""
    if torch.compiler.is_compiling():
        return _SoftCompiled.apply(v, torch.as_tensor(t, dtype=v.dtype, device=v.device))
    neg_t = -t
    return (v + neg_t).relu_() - (neg_t - v).relu_()
''', needs=("_SoftCompiled",))


class Soft(VectorAtom):
    """soft(v, t) = max(v - t, 0) - max(-v - t, 0); for t >= 0 this is sign(v) * max(|v| - t, 0), the prox of
    t*norm1. A learned threshold can go below 0 in training: there the formula gives 2v for |v| < -t, which is
    continuous, where sign(v) * max(|v| - t, 0) would jump at v = 0. The formula is the definition."""


def _soft_reference(np, v, t):
    return np.maximum(v - t, 0) - np.maximum(-v - t, 0)


declare("soft", Soft, signature="soft(v, t)", doc="soft threshold", shape=with_scalars(1),
        reference=_soft_reference, torch=SOFT, latex=None, derivative=None, curvature=None, convexity=None,
        monotone="increasing", scalar=None, sign=None, requires=(), prox=None,
        fuzz=Fuzz("threshold", params=("nonnegative",), weight=4))  # the threshold of most programs


class SoftPos(VectorAtom):
    """softpos(v, t) = max(v - t, 0): the prox of t*norm1 restricted to v >= 0."""


declare("softpos", SoftPos, signature="softpos(v, t)", doc="max(v - t, 0)", shape=with_scalars(1),
        reference=lambda np, v, t: np.maximum(v - t, 0), torch="torch.relu({0:add} - {1:add+})", latex=None,
        derivative=None, curvature=None, convexity="convex", monotone="increasing", scalar=None,
        sign="nonnegative", requires=(),
        prox=None, fuzz=Fuzz("threshold", params=("nonnegative",)))


HARD_LEARNED = helper("_HardLearned", '''
class _HardLearned(torch.autograd.Function):
    """_hard with a learned threshold: the same values. hard's own derivative in t is 0 almost everywhere,
    so the threshold gets that of its smooth relaxation v * sigmoid((|v| - t) / w), w = 0.1 |t|: entries
    within a few w of the threshold, the ones a change of t would keep or drop, tell t which way to move
    (in the spirit of the HELU of Wang, Ling & Huang 2016)."""

    @staticmethod
    def forward(v, t):
        return v * (v.abs() > t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        v, t = ctx.saved_tensors
        grad_t = None
        if ctx.needs_input_grad[1]:
            width = 0.1 * t.abs() + torch.finfo(v.dtype).eps
            s = torch.sigmoid((v.abs() - t) / width)
            grad_t = -(grad * v * s * (1 - s) / width).sum_to_size(t.shape)
        return grad * (v.abs() > t), grad_t
''')

HARD = helper("_hard", '''
def _hard(v, t):
    """Hard threshold: keep v where |v| > t, else 0 (a learned t gets a surrogate gradient: _HardLearned)."""
    if isinstance(t, torch.Tensor) and t.requires_grad:
        return _HardLearned.apply(v, t)
    return v * (v.abs() > t)
''', needs=("_HardLearned",))


class Hard(VectorAtom):
    """hard(v, t) = v * [|v| > t]: the prox of (t^2/2)*norm0."""


declare("hard", Hard, signature="hard(v, t)", doc="hard threshold", shape=with_scalars(1),
        reference=lambda np, v, t: v * (np.abs(v) > t), torch=HARD, latex=None, derivative=None, curvature=None,
        convexity=None, monotone=None, scalar=None, sign=None, requires=(), prox=None,
        fuzz=Fuzz("threshold", params=("nonnegative",)))


class Clamp(VectorAtom):
    """clamp(v, lo, hi) = min(max(v, lo), hi): projection onto a box."""


def _clamp_torch(pr, e):
    v, lo, hi = e.args
    lo_code = "None" if lo == -sp.oo else pr(lo)
    hi_code = "None" if hi == sp.oo else pr(hi)
    return f"torch.clamp({pr(v)}, {lo_code}, {hi_code})"


declare("clamp", Clamp, signature="clamp(v, lo, hi)", doc="clip to [lo, hi]", shape=with_scalars(2),
        reference=lambda np, v, lo, hi: np.minimum(np.maximum(v, lo), hi), torch=_clamp_torch, latex=None,
        derivative=None, curvature=None, convexity=None, monotone="increasing", scalar=None, sign=None, requires=(),
        prox=None, fuzz=Fuzz("threshold", params=("real", "real")))


BLOCKSOFT = helper("_blocksoft", '''
def _blocksoft(v, t):
    """Block soft threshold v * max(1 - t/||v||, 0) of every row, 0 for a row of norm <= t (and at v = 0,
    where the norm is floored at the smallest normal number: no 0/0, no NaN gradient)."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return v * torch.relu(1 - t / norm)
''')


class BlockSoft(VectorAtom):
    """blocksoft(v, t) = v * max(1 - t/||v||_2, 0): the prox of t*norm2 (group soft threshold)."""


def _blocksoft_reference(np, v, t):
    norm = np.sqrt(np.sum(v * v))
    return v * max(1 - t / norm, 0.0) if norm > 0 else v * 0.0


declare("blocksoft", BlockSoft, signature="blocksoft(v, t)", doc="block soft threshold: the prox of t*norm2",
        shape=vector_with_scalars(1), reference=_blocksoft_reference,
        torch=BLOCKSOFT, latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None,
        sign=None, requires=(), prox=None, fuzz=Fuzz("threshold", params=("nonnegative",), weight=0.5))


PROJBALL = helper("_projball", '''
def _projball(v, r):
    """Every row of v projected onto the Euclidean ball of radius r: scaled by min(1, r/||v||)."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return v * torch.clamp(r / norm, max=1)
''')


class ProjBall(VectorAtom):
    """projball(v, r): the Euclidean projection of v onto {u : ||u||_2 <= r} (`z in ball(r)`)."""


def _projball_reference(np, v, r):
    norm = np.sqrt(np.sum(v * v))
    return v * min(1.0, r / norm) if norm > 0 else v * 1.0


declare("projball", ProjBall, signature="projball(v, r)", doc="projection onto the ball ||u||_2 <= r",
        shape=vector_with_scalars(1), reference=_projball_reference,
        torch=PROJBALL, latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None,
        sign=None, requires=((1, "nonnegative", "the radius of projball(v, r)"),), prox=None,
        fuzz=Fuzz("threshold", params=("positive",), weight=0.5))


PROJL1BALL = helper("_projl1ball", '''
def _projl1ball(v, r):
    """Every row of v projected onto the l1 ball of radius r: soft(v, theta) with the smallest theta >= 0
    that brings the row's l1 norm to r (the sort-based rule of Duchi et al. 2008)."""
    a = v.abs()
    u = torch.sort(a, dim=-1, descending=True).values
    excess = u.cumsum(-1) - r
    rank = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    count = (u * rank > excess).sum(-1, keepdim=True).clamp(min=1)
    theta = (excess.gather(-1, count - 1) / count.to(v.dtype)).clamp(min=0)
    return v.sign() * torch.relu(a - theta)
''')


class ProjL1Ball(VectorAtom):
    """projl1ball(v, r): the Euclidean projection of v onto {u : ||u||_1 <= r} (`z in l1ball(r)`)."""


def _projl1ball_reference(np, v, r):
    """v itself inside the ball; else soft(v, theta), theta found by sorting |v| (Duchi et al. 2008)."""
    a = np.abs(v.ravel())
    if a.sum() <= r:
        return v * 1.0
    u = np.sort(a)[::-1]
    excess = np.cumsum(u) - r
    rank = np.arange(1, a.size + 1)
    count = max(int(np.sum(u * rank > excess)), 1)
    theta = max(excess[count - 1] / count, 0.0)
    return np.sign(v) * np.maximum(np.abs(v) - theta, 0)


declare("projl1ball", ProjL1Ball, signature="projl1ball(v, r)", doc="projection onto the l1 ball ||u||_1 <= r",
        shape=vector_with_scalars(1), reference=_projl1ball_reference,
        torch=PROJL1BALL, latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None,
        sign=None, requires=((1, "nonnegative", "the radius of projl1ball(v, r)"),), prox=None,
        fuzz=Fuzz("threshold", params=("positive",), weight=0.5))


TOPK = helper("_topk", '''
def _topk(v, k):
    """v where |v| is among the k largest of its row, 0 elsewhere (k rounded down; among equal |v| the lower
    index is kept). The selection carries no gradient; the kept entries pass theirs."""
    n = v.shape[-1]
    magnitude = v.detach().abs()
    if isinstance(k, torch.Tensor) and k.numel() > 1:  # a count per sample: keep the entries ranked below it
        order = torch.sort(-magnitude, dim=-1, stable=True).indices
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=v.device).expand_as(order))
        return v * (rank < k.detach().floor())
    k = min(int(k), n)
    if k < 1:
        return v * 0
    kth = magnitude.kthvalue(n - k + 1, dim=-1, keepdim=True).values
    above, tied = magnitude > kth, magnitude == kth
    return v * (above | (tied & (tied.cumsum(-1) <= k - above.sum(-1, keepdim=True))))
''')


class TopK(VectorAtom):
    """topk(v, k): keep the k entries of largest magnitude, zero the rest: the projection onto
    {u : at most k non-zeros} (`z in sparse(k)`; iterative hard thresholding)."""


def _topk_reference(np, v, k):
    """The first k indices of a stable sort of -|v| are kept (ties: the lower index)."""
    keep = np.zeros(v.size, dtype=bool)
    keep[np.argsort(-np.abs(v.ravel()), kind="stable")[:max(int(np.floor(k)), 0)]] = True
    return np.where(keep.reshape(v.shape), v, 0.0)


declare("topk", TopK, signature="topk(v, k)", doc="keep the k largest |v_i|: projection onto k-sparse vectors",
        shape=vector_with_scalars(1), reference=_topk_reference,
        torch=TOPK, latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None,
        sign=None, requires=((1, "nonnegative", "the count of topk(v, k)"),), prox=None,
        fuzz=Fuzz("threshold", params=("positive",), weight=0.5))


# --- matrices: nuclear norm and singular-value thresholding, row norms and row-wise block thresholds ----
# (issue 19: robust PCA's low-rank part, group lasso with the rows as groups)

def _matrix_with_scalars(count, hint):
    """A matrix, then `count` scalars, to the matrix's shape (a threshold of the whole matrix or its rows);
    hint: what to write for a vector."""
    def rule(args):
        if len(args) != 1 + count:
            raise ShapeError(f"takes {1 + count} arguments, got {len(args)}")
        if len(args[0]) != 2:
            raise ShapeError(f"needs a matrix first, got {show_shape(args[0])}", hint)
        return with_scalars(count)(args)
    return rule



class Nuclear(ScalarAtom):
    """nuclear(A) = sum of the singular values of A (the nuclear norm, the convex envelope of the rank)."""


def _matrix_norm_torch(order):
    def torch_rule(pr, e):  # one number per sample, (batch, 1) in updates (pr.keep_scalar)
        return pr.keep_scalar(f"torch.linalg.matrix_norm({pr(e.args[0])}, ord={order!r})")
    return torch_rule


declare("nuclear", Nuclear, signature="nuclear(A)", doc="sum of the singular values of A (nuclear norm)",
        shape=_matrix_only("the nuclear norm is a matrix's; of a vector it is norm2(v)"),
        reference=lambda np, A: np.sum(np.linalg.svd(A, compute_uv=False)), torch=_matrix_norm_torch("nuc"),
        latex=_norm_latex("*"), derivative=None, curvature=None, convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=(), prox="nuclear", fuzz=Fuzz("reduction"))


SVT_FUNCTION = helper("_SVTFunction", '''
class _SVTFunction(torch.autograd.Function):
    """_svt where a gradient is wanted: singular-value thresholding U max(S - t, 0) V^T of every matrix of a
    batch (the prox of t*nuclear; t a tensor in A's dtype, as _svt passes it), with the exact derivative of
    this spectral function written out (Candes, Sing-Long & Trzasko 2013), not torch.linalg.svd's backward, which divides by s_i^2 - s_j^2 and is inf or NaN wherever two singular
    values are equal (a zero matrix, the zero singular values of a low-rank one). With f(s) = max(s - t, 0),
    P = U^T G V and k = min(m, n), the gradient is U (F1 * sym(P) + F2 * skew(P)) V^T, F1_ij the divided
    difference (f_i - f_j)/(s_i - s_j) (1 where both s exceed t, 0 where neither does: its limit at equal
    values), F2_ij = (f_i + f_j)/(s_i + s_j) (0 where both are 0), plus, for a non-square matrix, the part
    outside U's (V's) columns scaled by f/s (0 where s <= t). The Jacobian of a prox is symmetric, so this
    one formula is both its JVP and its VJP. t gets -(sum of P_ii where s_i > t).
    Each line of backward is a kernel call that costs a few microseconds of Python at small sizes, where
    torch's own SVD backward runs in C++: the products are torch.bmm on a (batch, m, n) input (matmul's
    reshapes cost as much as the product of a 10 x 10 matrix), and the part outside U's (V's) columns is
    folded into M and one addcmul."""

    @staticmethod
    def forward(ctx, A, t):
        U, s, Vh = torch.linalg.svd(A, full_matrices=False)
        f = torch.relu(s - t)
        ctx.save_for_backward(U, s, Vh, f)
        ctx.t_shape = t.shape
        mm = torch.bmm if A.dim() == 3 else torch.matmul
        return mm(U * f.unsqueeze(-2), Vh)

    @staticmethod
    def backward(ctx, G):
        U, s, Vh, f = ctx.saved_tensors
        mm = torch.bmm if G.dim() == 3 else torch.matmul
        above = f > 0  # s > t (s - t is never rounded to 0 when s != t)
        m, n = G.shape[-2], G.shape[-1]
        if m >= n:  # P = U^T G V, keeping the product the part outside V's columns reuses
            GV = mm(G, Vh.mT)
            P = mm(U.mT, GV)
        else:
            UtG = mm(U.mT, G)
            P = mm(UtG, Vh.mT)
        si, sj, fi, fj, ai = s.unsqueeze(-1), s.unsqueeze(-2), f.unsqueeze(-1), f.unsqueeze(-2), above.unsqueeze(-1)
        # F1: where exactly one of s_i, s_j exceeds t, s_i != s_j and the divided difference is taken; where
        # both do or neither does, its limit (1 or 0), also for s_i = s_j (where the division, discarded, is
        # 0/0: torch.where keeps the other value)
        f1 = torch.where(ai == above.unsqueeze(-2), ai, (fi - fj) / (si - sj))
        # F2: s_i + s_j = 0 only where both are 0, and then f_i + f_j = 0: the clamp makes that 0/0 a 0
        f2 = (fi + fj) / (si + sj).clamp_min(torch.finfo(s.dtype).tiny)
        plus, minus = f1 + f2, f1 - f2  # M = F1 * sym(P) + F2 * skew(P) = (plus * P + minus * P^T) / 2
        if m != n:
            # the part outside U's (V's) columns, (G - U U^T G) V diag(r) V^T with r = f/s (0 where s <= t),
            # is G V diag(r) V^T - U (P diag(r)) V^T (m > n; U diag(r) U^T G - U (diag(r) P) V^T for m < n):
            # its second term enters M as -2 r in plus
            r = torch.where(above, f / s, 0.0)
            plus = torch.sub(plus, r.unsqueeze(-2 if m > n else -1), alpha=2)
        M = torch.addcmul(plus * P, minus, P.mT) / 2
        if m > n:
            dA = mm(torch.addcmul(mm(U, M), GV, r.unsqueeze(-2)), Vh)
        elif m < n:
            dA = mm(U, torch.addcmul(mm(M, Vh), r.unsqueeze(-1), UtG))
        else:
            dA = mm(mm(U, M), Vh)
        grad_t = None
        if ctx.needs_input_grad[1]:
            grad_t = torch.diagonal(P, dim1=-2, dim2=-1) * above
            # a threshold per sample, (batch, 1), gets its own sum; a number, the sum of all
            grad_t = -(grad_t.sum() if len(ctx.t_shape) == 0 else grad_t.sum(-1, keepdim=True).sum_to_size(ctx.t_shape))
        return dA, grad_t
''')

SVT_HELPER = helper("_svt", '''
def _svt(A, t):
    """Singular-value thresholding U max(S - t, 0) V^T of every matrix of a batch (the prox of t*nuclear).
    Where a gradient is wanted, through _SVTFunction, whose backward is finite at repeated singular values;
    without one (torch.no_grad, inputs that need none) the same lines run without an autograd.Function,
    whose Python cost per call is a tenth of a small batch's SVD (8 matrices of 12 x 10)."""
    t = torch.as_tensor(t, dtype=A.dtype, device=A.device)
    if torch.is_grad_enabled() and (A.requires_grad or t.requires_grad):
        return _SVTFunction.apply(A, t)
    U, s, Vh = torch.linalg.svd(A, full_matrices=False)
    mm = torch.bmm if A.dim() == 3 else torch.matmul
    return mm(U * torch.relu(s - t).unsqueeze(-2), Vh)
''', needs=("_SVTFunction",))


class SVT(VectorAtom):
    """svt(A, t) = U max(S - t, 0) V^T for A = U S V^T: singular-value thresholding, the prox of t*nuclear."""


def _svt_reference(np, A, t):
    U, s, Vh = np.linalg.svd(A, full_matrices=False)
    return (U * np.maximum(s - t, 0)) @ Vh


declare("svt", SVT, signature="svt(A, t)", doc="singular-value thresholding: the prox of t*nuclear",
        shape=_matrix_with_scalars(1, "of a vector, svt is the block soft threshold: write blocksoft in place "
                                       "of svt"), reference=_svt_reference,
        torch=lambda pr, e: f"{pr.use(SVT_HELPER)}({pr(e.args[0])}, {pr(e.args[1])})", latex=None, derivative=None,
        curvature=None, convexity=None, monotone=None, scalar=None, sign=None, requires=(), prox=None,
        fuzz=Fuzz("threshold", params=("nonnegative",), weight=0.5))


class Norm21(ScalarAtom):
    """norm21(A) = sum of the Euclidean norms of the rows of A (group lasso, the rows as groups)."""


def _norm21_torch(pr, e):  # one number per sample, (batch, 1) in updates (pr.keep_scalar)
    return pr.keep_scalar(f"torch.linalg.vector_norm({pr(e.args[0])}, dim=-1).sum(-1)")


declare("norm21", Norm21, signature="norm21(A)", doc="sum of the row norms of A",
        shape=_matrix_only("norm21 sums the norms of a matrix's rows; of a vector write norm2(v)"),
        reference=lambda np, A: np.sum(np.sqrt(np.sum(A * A, axis=1))), torch=_norm21_torch,
        latex=lambda printer, expr, exp=None: rf"\left\|{printer._print(expr.args[0])}\right\|_{{2,1}}"
        + ("" if exp is None else f"^{{{exp}}}"),
        derivative=None, curvature=None, convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=(),
        prox="norm21", fuzz=Fuzz("reduction"))


class RowSoft(VectorAtom):
    """rowsoft(A, t): every row of A block soft thresholded, a * max(1 - t/||a||, 0): the prox of t*norm21."""


def _rowsoft_reference(np, A, t):
    norms = np.sqrt(np.sum(A * A, axis=1, keepdims=True))
    return A * np.maximum(1 - t / np.where(norms > 0, norms, 1.0), 0.0) * (norms > 0)


# _blocksoft thresholds the last axis: a matrix's rows (every row of every sample's matrix)
declare("rowsoft", RowSoft, signature="rowsoft(A, t)", doc="row-wise block soft threshold: the prox of t*norm21",
        shape=_matrix_with_scalars(1, "of a vector, write blocksoft in place of rowsoft (the vector one group) "
                                       "or soft (each entry its own)"), reference=_rowsoft_reference, torch=BLOCKSOFT, latex=None, derivative=None,
        curvature=None, convexity=None, monotone=None, scalar=None, sign=None, requires=(), prox=None,
        fuzz=Fuzz("threshold", params=("nonnegative",), weight=0.5))


# ==================================================================================================
# Elementwise functions (on vectors and matrices; those with a scalar form also on scalars)
# ==================================================================================================

class Relu(VectorAtom):
    """relu(v) = max(v, 0)."""


declare("relu", Relu, build=_scalar_or(Relu, lambda v: sp.Max(v, 0)), signature="relu(v)", doc="max(v, 0)",
        shape=elementwise, reference=lambda np, v: np.maximum(v, 0), torch="torch.relu({0})", latex=None,
        derivative=None, curvature=None, convexity="convex", monotone="increasing",
        scalar=lambda v: sp.Max(v, 0), sign="nonnegative", requires=(), prox=None, fuzz=Fuzz("elementwise"))


class Sigmoid(VectorAtom):
    """sigmoid(v) = 1 / (1 + exp(-v))."""


declare("sigmoid", Sigmoid, build=_scalar_or(Sigmoid, lambda v: 1 / (1 + sp.exp(-v))), signature="sigmoid(v)",
        doc="1/(1+exp(-v))", shape=elementwise, reference=lambda np, v: 1 / (1 + np.exp(-v)),
        torch="torch.sigmoid({0})", latex=None,
        derivative=lambda v: HadamardProduct(Sigmoid(v), Sigmoid(-v)),  # s(v)(1 - s(v))
        curvature=sp.sqrt(3) / 18,  # |s''| is largest at v = log(2 -+ sqrt(3)): 1/(6 sqrt(3))
        convexity=None, monotone="increasing", scalar=lambda v: 1 / (1 + sp.exp(-v)),
        sign="positive", requires=(), prox=None,
        fuzz=Fuzz("elementwise"))


class Tanh(VectorAtom):
    """tanh(v), elementwise."""


declare("tanh", Tanh, build=_scalar_or(Tanh, sp.tanh), signature="tanh(v)", doc="tanh", shape=elementwise,
        reference=lambda np, v: np.tanh(v), torch="torch.tanh({0})", latex=r"\tanh",
        derivative=lambda v: _ones_like(v) - HadamardPower(Tanh(v), 2),
        curvature=4 * sp.sqrt(3) / 9,  # |tanh''| = 2 tanh (1 - tanh^2) is largest at tanh = 1/sqrt(3)
        convexity=None, monotone="increasing", scalar=sp.tanh,
        sign=None, requires=(), prox=None, fuzz=Fuzz("elementwise"))


class Exp(VectorAtom):
    """exp(v), elementwise."""


declare("exp", Exp, build=_scalar_or(Exp, sp.exp), signature="exp(v)", doc="exp", shape=elementwise,
        reference=lambda np, v: np.exp(v), torch="torch.exp({0})", latex=r"\exp", derivative=lambda v: Exp(v),
        curvature=None, convexity="convex", monotone="increasing", scalar=sp.exp,
        sign="positive", requires=(), prox=None,
        fuzz=Fuzz("elementwise", domain="bounded"))


class Log(VectorAtom):
    """log(v), elementwise."""


declare("log", Log, build=_scalar_or(Log, sp.log), signature="log(v)", doc="log", shape=elementwise,
        reference=lambda np, v: np.log(v), torch="torch.log({0})", latex=r"\log",
        derivative=lambda v: HadamardPower(v, -1), curvature=None, convexity="concave", monotone="increasing",
        scalar=sp.log, sign=None, requires=(), prox=None, fuzz=Fuzz("elementwise", domain="positive", weight=0.5))


class Abs(VectorAtom):
    """abs(v), elementwise."""


declare("abs", Abs, build=_scalar_or(Abs, sp.Abs), signature="abs(v)", doc="|v|", shape=elementwise,
        reference=lambda np, v: np.abs(v), torch="torch.abs({0})", latex=_abs_latex, derivative=None,
        curvature=None, convexity="convex", monotone=None, scalar=sp.Abs, sign="nonnegative", requires=(), prox=None,
        fuzz=Fuzz("elementwise"))


# --- smooth entrywise functions: each states its derivative beside its reference ---------------------
# derivative(v, *params): phi'(v) entrywise, an IR value of v's shape (calculus.py chains it: the gradient
# of sum(phi(A @ z + b)) is A.T @ phi'(A @ z + b), never a diagonal matrix).
# curvature: sup over the reals of |phi''|, a Lipschitz constant of phi' (splitting.py bounds the step with
# it); None where phi'' is unbounded (exp, log, log1p): derive then needs an explicit step.

class Square(VectorAtom):
    """square(v) = v * v, entrywise."""


declare("square", Square, signature="square(v)", doc="v * v", shape=entrywise, reference=lambda np, v: v * v,
        torch="{0:call}.square()", latex=None, derivative=lambda v: 2 * v, curvature=sp.Integer(2),
        convexity="convex", monotone=None, scalar=None, sign="nonnegative", requires=(), prox=None, fuzz=Fuzz("smooth"))


class Softplus(VectorAtom):
    """softplus(v) = log(1 + exp(v)), entrywise, computed without overflow."""


# threshold 40: linear only where log(1 + e^-v) < 1e-17, below float64's precision
declare("softplus", Softplus, signature="softplus(v)", doc="log(1 + exp(v)), stable", shape=entrywise,
        reference=lambda np, v: np.logaddexp(0, v), torch="F.softplus({0}, threshold=40)", latex=None,
        derivative=lambda v: Sigmoid(v), curvature=sp.Rational(1, 4), convexity="convex", monotone="increasing",
        scalar=None, sign="positive", requires=(), prox=None, fuzz=Fuzz("smooth"))


class Log1p(VectorAtom):
    """log1p(v) = log(1 + v), entrywise, accurate for small v."""


declare("log1p", Log1p, signature="log1p(v)", doc="log(1 + v)", shape=entrywise,
        reference=lambda np, v: np.log1p(v), torch="torch.log1p({0})", latex=None,
        derivative=lambda v: HadamardPower(_ones_like(v) + v, -1), curvature=None, convexity="concave",
        monotone="increasing", scalar=None, sign=None, requires=(), prox=None,
        fuzz=Fuzz("smooth", domain="positive", weight=0.5))


LOGCOSH = helper("_logcosh", '''
def _logcosh(v):
    """log(cosh(v)) = |v| + log(1 + exp(-2|v|)) - log(2), which never overflows (cosh does past |v| ~ 710)."""
    a = v.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - 0.6931471805599453
''')


class LogCosh(VectorAtom):
    """logcosh(v) = log(cosh(v)), entrywise, computed without overflow: ~ v^2/2 near 0, ~ |v| - log 2 far."""


declare("logcosh", LogCosh, signature="logcosh(v)", doc="log(cosh(v)), stable", shape=entrywise,
        reference=lambda np, v: np.logaddexp(v, -v) - np.log(2), torch=LOGCOSH, latex=None,
        derivative=lambda v: Tanh(v), curvature=sp.Integer(1), convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=(), prox=None, fuzz=Fuzz("smooth"))


HUBER = helper("_huber", '''
def _huber(v, d):
    """Huber's function, v^2/2 where |v| <= d and d*(|v| - d/2) beyond, as c*(v - c/2) with c = v clipped to
    [-d, d]: one formula, whose gradient is c."""
    c = torch.clamp(v, -d, d)
    return c * (v - 0.5 * c)
''')


class Huber(VectorAtom):
    """huber(v, d) = v^2/2 where |v| <= d, d*(|v| - d/2) elsewhere, entrywise (Huber 1964); d >= 0."""


declare("huber", Huber, signature="huber(v, d)", doc="v^2/2 for |v| <= d, d*(|v| - d/2) beyond",
        shape=with_scalars(1),
        reference=lambda np, v, d: np.where(np.abs(v) <= d, 0.5 * v * v, d * (np.abs(v) - 0.5 * d)),
        torch=HUBER, latex=None, derivative=lambda v, d: Clamp(v, -d, d), curvature=sp.Integer(1),
        convexity="convex", monotone=None, scalar=None,
        sign="nonnegative", requires=((1, "nonnegative", "the width of huber(v, d)"),),
        prox=None, fuzz=Fuzz("smooth", params=("positive",), weight=0.5))


# ==================================================================================================
# Distributions and normalisations (relaxations, closed forms)
# ==================================================================================================

class Softmax(VectorAtom):
    """softmax(v) = exp(v) / sum(exp(v)); of a matrix along one axis, args (A, axis): softmax(A, axis = 1)
    normalises every row (the entries along axis 1), axis = 0 every column."""


def _axis_shape(name):
    """The shape rule of an atom that acts along one axis: a vector along its one axis (axis 0, or none
    given), a matrix along the axis it names (which it must name)."""
    def rule(args, axis=None):
        _one(args)
        shape = args[0]
        if len(shape) == 1:
            if axis not in (None, 0):
                raise ShapeError(f"has no axis {axis}: a vector {show_shape(shape)} has one axis, 0",
                                 f"delete `, axis = {axis}` (a vector's {name} is along its one axis)")
        elif len(shape) == 2:
            if axis is None:
                raise ShapeError(f"of a matrix {show_shape(shape)} needs the axis it acts along",
                                 "add `, axis = 1` after the matrix, for every row (axis = 0: every column)")
            if axis > 1:
                raise ShapeError(f"has no axis {axis}: a matrix {show_shape(shape)} has axes 0 (its "
                                 f"{shape[0]} rows) and 1 (its {shape[1]} columns)", "write axis = 1")
        else:
            raise ShapeError(f"needs a vector or matrix, got {show_shape(shape)}")
        return shape
    return rule


def _torch_dim(e) -> int:
    """The torch dim of the axis an along-an-axis atom acts on: a matrix's axis 1 is the last (-1), axis 0
    the one before (-2), batched or not; a vector's one axis is the last."""
    return -1 if len(e.args) == 1 or e.args[1] == 1 else -2


def _softmax_reference(np, v, axis=None):
    axis = None if axis is None else int(axis)
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_pullback(s, w):
    from dpc.calculus import hadamard  # the chain rule's entrywise product (calculus imports this module)
    if len(s.args) == 1:
        return hadamard(s, w) - Dot(s, w) * s
    sw = hadamard(s, w)  # along an axis: s * (w - the sum of s * w along it), per row (column)
    return sw - HadamardProduct(s, AxisSum(sw, s.args[1]))


def _softmax_build(v, axis=None):
    return Softmax(v) if axis is None or v.shape[1] == 1 else Softmax(v, sp.Integer(axis))


# the fuzzer writes softmax, normalize and sparsemax where a distribution or a direction fits
declare("softmax", Softmax, build=_softmax_build, signature="softmax(v)", options={"axis": "of a matrix: 1 along "
        "every row, 0 along every column"},
        doc="exp(v)/sum(exp(v)), max-subtracted; softmax(A, axis = 1) along every row of a matrix",
        shape=_axis_shape("softmax"), reference=_softmax_reference,
        torch=lambda pr, e: f"torch.softmax({pr(e.args[0])}, dim={_torch_dim(e)})",
        latex=None, derivative=Pullback(_softmax_pullback), curvature=None, convexity=None, monotone=None,
        scalar=None, sign="positive", requires=(), prox=None, fuzz=None)


class AxisSum(VectorAtom):
    """The sum along one axis of a matrix, spread back over that axis (every entry of a row replaced by the
    row's sum, axis 1; of a column, axis 0); args (M, axis). No syntax: softmax's pullback along an axis
    builds it, and it is only ever multiplied entrywise (its torch form keeps the axis, and broadcasts)."""


declare("axissum", AxisSum, syntax=False, signature="axissum(M, axis)", doc="sums along an axis, spread back",
        shape=None, reference=lambda np, M, axis: np.broadcast_to(M.sum(axis=int(axis), keepdims=True), M.shape),
        torch=lambda pr, e: f"{pr.wrap(e.args[0], 'call')}.sum({_torch_dim(e)}, keepdim=True)", latex=None,
        derivative=None, curvature=None, convexity="affine", monotone="increasing", scalar=None, sign=None,
        requires=(), prox=None, fuzz=None)


class LogSumExp(ScalarAtom):
    """logsumexp(v) = log(sum(exp(v))), computed max-subtracted (never overflows)."""


class LogSumExpAlong(MatrixExpr):
    """logsumexp(A, axis = 1): the vector of log(sum(exp(row))) of every row of A (axis 0: every column)."""

    def __new__(cls, matrix, axis):
        return Basic.__new__(cls, sp.sympify(matrix), sp.sympify(axis))

    @property
    def shape(self):
        rows, cols = self.args[0].shape
        return (rows if self.args[1] == 1 else cols, sp.S.One)


def _logsumexp_reference(np, v, axis=None):
    axis = None if axis is None else int(axis)
    m = v.max(axis=axis, keepdims=True)
    out = m + np.log(np.exp(v - m).sum(axis=axis, keepdims=True))
    return out.reshape(()) if axis is None else out.reshape(-1, 1)


def _logsumexp_build(v, axis=None):
    return LogSumExp(v) if axis is None or v.shape[1] == 1 else LogSumExpAlong(v, sp.Integer(axis))


def _logsumexp_torch(pr, e):
    keep = ", keepdim=True" if pr.keepdim else ""
    return f"torch.logsumexp({pr(e.args[0])}, dim=-1{keep})"


def _axis_rows(args, axis=None):
    """logsumexp's shape: a vector to a scalar; a matrix along axis 1 to its rows (a vector), axis 0 columns."""
    shape = _axis_shape("logsumexp")(args, axis)
    return () if len(shape) == 1 else ((shape[0],) if axis == 1 else (shape[1],))


# the matrix form is LogSumExpAlong (declared below, no syntax of its own: this builder makes it)
declare("logsumexp", LogSumExp, build=_logsumexp_build, signature="logsumexp(v)",
        options={"axis": "of a matrix: 1 along every row (a vector of the rows'), 0 along every column"},
        doc="log(sum(exp(v))), max-subtracted; logsumexp(A, axis = 1): a vector, one per row",
        shape=_axis_rows, reference=_logsumexp_reference, torch=_logsumexp_torch, latex=None,
        derivative=lambda v: Softmax(v), curvature=None, convexity="convex", monotone="increasing", scalar=None,
        sign=None, requires=(), prox=None, fuzz=None)  # the fuzzer: see compiler/fuzz


def _logsumexp_along_pullback(e, w):
    A, axis = e.args  # d/dA: softmax(A) along the axis, times w spread over it
    return HadamardProduct(Softmax(A, axis), Spread(w, axis, A.shape[1] if axis == 1 else A.shape[0]))


declare("logsumexp", LogSumExpAlong, syntax=False, signature="logsumexp(A, axis = 1)", options={"axis": "1 or 0"},
        doc="log(sum(exp(.))) along an axis of a matrix", shape=None, reference=_logsumexp_reference,
        torch=lambda pr, e: f"torch.logsumexp({pr(e.args[0])}, dim={_torch_dim(e)})", latex=None,
        derivative=Pullback(_logsumexp_along_pullback), curvature=None, convexity="convex",
        monotone="increasing", scalar=None, sign=None, requires=(), prox=None, fuzz=None)


class Spread(MatrixExpr):
    """spread(w, axis, size): a vector spread over a matrix, w as every column (axis 1: entry (i, j) = w_i,
    size columns) or as every row (axis 0: entry (i, j) = w_j, size rows); args (w, axis, size). No syntax:
    logsumexp's pullback along an axis builds it, and it is only ever multiplied entrywise (its torch form
    is w with an axis added, which broadcasts)."""

    def __new__(cls, vector, axis, size):
        return Basic.__new__(cls, sp.sympify(vector), sp.sympify(axis), sp.sympify(size))

    @property
    def shape(self):
        n = self.args[0].shape[0]
        return (n, self.args[2]) if self.args[1] == 1 else (self.args[2], n)


def _spread_reference(np, w, axis, size):
    column = w.reshape(-1, 1)
    return np.repeat(column, int(size), axis=1) if int(axis) == 1 else np.repeat(column.T, int(size), axis=0)


declare("spread", Spread, syntax=False, signature="spread(w, axis, size)", doc="a vector spread over a matrix",
        shape=None, reference=_spread_reference,
        torch=lambda pr, e: f"{pr.wrap(e.args[0], 'call')}.unsqueeze({-1 if e.args[1] == 1 else -2})", latex=None,
        derivative=None, curvature=None, convexity="affine", monotone="increasing", scalar=None, sign=None,
        requires=(), prox=None, fuzz=None)


SPARSEMAX = helper("_sparsemax", '''
def _sparsemax(v):
    """Euclidean projection of every row of v onto the probability simplex (Martins & Astudillo, 2016)."""
    z = torch.sort(v, dim=-1, descending=True).values
    cumsum = z.cumsum(-1) - 1
    rank = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    support = (rank * z > cumsum).sum(-1, keepdim=True).clamp(min=1)  # >= 1 even where z + 1 rounds to z
    threshold = cumsum.gather(-1, support - 1) / support.to(v.dtype)
    return torch.clamp(v - threshold, min=0)
''')


class Sparsemax(VectorAtom):
    """sparsemax(v): the Euclidean projection of v onto the probability simplex."""


def _sparsemax_reference(np, v):
    """max(v - tau, 0) with tau such that the entries sum to 1: sort descending, the support is every
    k with 1 + k z_k > z_1 + ... + z_k (Held, Wolfe & Crowder 1974; Michelot 1986)."""
    z = np.sort(v.ravel())[::-1]
    cumsum = np.cumsum(z)
    k = np.arange(1, z.size + 1)
    support = k[1 + k * z > cumsum].max(initial=1)  # >= 1: the largest entry, even where 1 + z_1 rounds to z_1
    tau = (cumsum[support - 1] - 1) / support
    return np.maximum(v - tau, 0)


declare("sparsemax", Sparsemax, signature="sparsemax(v)", doc="projection onto the simplex", shape=vector_same,
        reference=_sparsemax_reference, torch=SPARSEMAX, latex=None, derivative=None, curvature=None,
        convexity=None, monotone=None, scalar=None, sign="nonnegative", requires=(), prox=None, fuzz=None)


# normalize and rownormalize divide by max(||v||, NORM_FLOOR): the zero vector stays 0 (not 0/0), as in
# torch's F.normalize, which the emitter uses.
NORM_FLOOR = 1e-12


class Normalize(VectorAtom):
    """normalize(v) = v / max(||v||_2, 1e-12): v scaled to unit norm, and 0 for v = 0."""


declare("normalize", Normalize, signature="normalize(v)", doc="v / ||v||_2", shape=vector_same,
        reference=lambda np, v: v / max(np.sqrt(np.sum(v * v)), NORM_FLOOR), torch="F.normalize({0}, dim=-1)",
        latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None, sign=None, requires=(),
        prox=None, fuzz=None)


class RowNormalize(VectorAtom):
    """rownormalize(A): every row of A divided by max(its Euclidean norm, 1e-12) (same shape as A)."""


declare("rownormalize", RowNormalize, signature="rownormalize(A)", doc="rows of A scaled to unit norm",
        shape=matrix_same,
        reference=lambda np, A: A / np.maximum(np.sqrt(np.sum(A * A, axis=1, keepdims=True)), NORM_FLOOR),
        torch="F.normalize({0}, dim=-1)", latex=None, derivative=None, curvature=None, convexity=None,
        monotone=None, scalar=None, sign=None, requires=(), prox=None, fuzz=None)


class RowSqNorm(MatrixExpr):
    """rowsqnorm(A): the vector of squared row norms, entry j = ||A[j]||^2; A (k x d) -> k x 1."""

    def __new__(cls, matrix):
        return Basic.__new__(cls, sp.sympify(matrix))

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.S.One)


declare("rowsqnorm", RowSqNorm, signature="rowsqnorm(A)", doc="squared norm of every row of A",
        shape=_matrix_rows, reference=lambda np, A: np.sum(A * A, axis=1, keepdims=True),
        torch="{0:call}.square().sum(-1)", latex=None, derivative=None, curvature=None, convexity=None,
        monotone=None, scalar=None, sign="nonnegative", requires=(), prox=None, fuzz=None)


# ==================================================================================================
# Linear algebra
# ==================================================================================================

class Diag(MatrixExpr):
    """diag(v): the square matrix with v on its diagonal, 0 elsewhere; R[n] -> R[n, n]."""

    def __new__(cls, vector):
        return Basic.__new__(cls, sp.sympify(vector))

    @property
    def shape(self):
        return (self.args[0].shape[0], self.args[0].shape[0])

    def _eval_transpose(self):
        return self


def _diag_shape(args):
    v = _one_of_rank(args, (1,), "a vector")
    return (v[0], v[0])


def _diag_pullback(e, w):
    """The cotangent of v in diag(v): the diagonal of w's; of an outer product u @ a.T (what a product
    D @ diag(v) @ a pulls back), u * a entrywise, with no matrix formed."""
    if isinstance(w, sp.MatMul):
        coeff, mats = w.as_coeff_matrices()
        if len(mats) >= 2 and mats[-1].shape[0] == 1:
            from dpc.calculus import hadamard
            column = sp.MatMul(*mats[:-1]) if len(mats) > 2 else mats[0]
            return coeff * hadamard(column, mats[-1].T)
    return Diagonal(w)


declare("diag", Diag, signature="diag(v)", doc="the diagonal matrix with v on its diagonal", shape=_diag_shape,
        reference=lambda np, v: np.diag(v.ravel()), torch="torch.diag_embed({0})", latex=None,
        derivative=Pullback(_diag_pullback), curvature=None, convexity="affine", monotone="increasing",
        scalar=None, sign=None, requires=(), prox=None, fuzz=None)  # the fuzzer's programs: see compiler/fuzz


class Diagonal(MatrixExpr):
    """The diagonal of a square matrix as a vector; R[n, n] -> R[n]. No syntax: diag's pullback builds it."""

    def __new__(cls, matrix):
        return Basic.__new__(cls, sp.sympify(matrix))

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.S.One)


declare("diagonal", Diagonal, syntax=False, signature="diagonal(A)", doc="the diagonal of A", shape=None,
        reference=lambda np, A: np.diag(A).reshape(-1, 1), torch="torch.diagonal({0}, dim1=-2, dim2=-1)",
        latex=None, derivative=Pullback(lambda e, w: Diag(w)), curvature=None, convexity="affine",
        monotone="increasing", scalar=None, sign=None, requires=(), prox=None, fuzz=None)


class Solve(MatrixExpr):
    """solve(A, b) = A^-1 b, computed by a linear solve (never an explicit inverse); args (A, b)."""

    def __new__(cls, matrix, rhs):
        return Basic.__new__(cls, sp.sympify(matrix), sp.sympify(rhs))

    @property
    def shape(self):
        return self.args[1].shape


def _solve_torch(pr, e):
    matrix, rhs = e.args
    factor = pr.names.get(f"{matrix.name}.factor") if isinstance(matrix, sp.MatrixSymbol) else None
    if factor is not None:  # factored once at construction (backends/torch/constructor.py): two triangular solves
        return _factored_solve(pr, factor, rhs)
    if rhs.shape[1] != 1:  # a matrix right-hand side (a learned weight's start, Dd @ solve(A, Dd.T))
        return f"torch.linalg.solve({pr(matrix)}, {pr(rhs)})"
    if pr.is_batched(rhs) and not pr.is_batched(matrix):
        # one matrix for the whole batch: the samples are the columns of one right-hand side, so the matrix
        # is factored once per call (a (batch, n, 1) right-hand side would factor it once per sample)
        return f"torch.linalg.solve({pr(matrix)}, {pr.wrap(rhs, 'call')}.mT).mT"
    return f"torch.linalg.solve({pr(matrix)}, {pr.wrap(rhs, 'call')}.unsqueeze(-1)).squeeze(-1)"


def _factored_solve(pr, factor, rhs):
    """solve(A, rhs) from A's Cholesky factor (one name) or LU factors (two), rhs a batch of rows, a constant
    vector or a matrix."""
    if rhs.shape[1] != 1:
        columns, back = pr(rhs), ""
    elif pr.is_batched(rhs):
        columns, back = f"{pr.wrap(rhs, 'call')}.mT", ".mT"
    else:
        columns, back = f"{pr.wrap(rhs, 'call')}.unsqueeze(-1)", ".squeeze(-1)"
    if len(factor) == 1:
        return f"torch.cholesky_solve({columns}, {factor[0]}){back}"
    return f"torch.linalg.lu_solve({factor[0]}, {factor[1]}, {columns}){back}"


# the fuzzer builds a positive definite matrix for solve itself
declare("solve", Solve, signature="solve(A, b)", doc="A^-1 b by a linear solve", shape=_solve_shape,
        reference=lambda np, A, b: np.linalg.solve(A, b), torch=_solve_torch, latex=None, derivative=None,
        curvature=None, convexity=None, monotone=None, scalar=None, sign=None, requires=(), prox=None, fuzz=None)


declare_macro("sqrt", signature="sqrt(a)", doc="square root of a scalar", shape=scalar_only, build=sp.sqrt)
declare_macro("eye", signature="eye(n)", doc="identity matrix", shape=None, build=None)  # takes a dim: lower.py


# ==================================================================================================
# The LISTA family (passes/adapt_support.py, adapt_gates.py, learn_coupled.py)
# ==================================================================================================

LAYER = sp.Symbol("_layer", integer=True, positive=True)  # the layer number t = 1..T; the emitter binds it

SOFTSS = helper("_softss", '''
def _softss(v, t, p, pmax, layer):
    """Soft threshold with support selection (LISTA-CPSS): at layer number `layer` the largest
    min(layer * p, pmax) percent of |v| in each sample (k entries, k = floor of that share) pass
    unshrunk where |v| > t; the rest are soft-thresholded (as _soft does). The selection carries no
    gradient. Among equal |v| the lower index is kept (what a stable sort gives, the same on every
    device), found without sorting: the k-th largest |v| (kthvalue), every entry above it, and the
    first of those equal to it."""
    n = v.shape[-1]
    k = min(int(min(layer * p, pmax) * n / 100 + 1e-6), n)
    shrunk = _soft(v, t)
    if k < 1:
        return shrunk
    magnitude = v.detach().abs()
    kth = magnitude.kthvalue(n - k + 1, dim=-1, keepdim=True).values
    above, tied = magnitude > kth, magnitude == kth
    top = above | (tied & (tied.cumsum(-1) <= k - above.sum(-1, keepdim=True)))
    return torch.where(top & (magnitude > t), v, shrunk)
''', needs=("_soft",))


class SoftSS(VectorAtom):
    """softss(v, t, p, pmax): soft threshold with support selection (LISTA-CPSS, Chen et al. 2018).

    args (v, t, p, pmax, layer). At layer number `layer` the share p_t = min(layer * p, pmax) percent:
    in each sample the k = floor(p_t * len(v) / 100) largest |v_i| pass unshrunk where |v_i| > t
    (the selection mask carries no gradient); every other entry is soft-thresholded.
    """


def _softss_reference(np, v, t, p, pmax, layer):
    """soft(v, t), except that the k = floor(min(layer * p, pmax) * n / 100) entries of largest |v| (ties:
    the lower index first) pass unshrunk where |v| > t."""
    n = v.size
    k = min(int(np.floor(min(layer * p, pmax) * n / 100 + 1e-6)), n)  # 1e-6: a share rounded just below k is k
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-np.abs(v.ravel()), kind="stable")[:max(k, 0)]] = True
    keep = top.reshape(v.shape) & (np.abs(v) > t)
    return np.where(keep, v, _soft_reference(np, v, t))


# the fuzzer writes softss in updates itself (it needs the layer number)
declare("softss", SoftSS, build=lambda v, t, p, pmax: SoftSS(v, t, p, pmax, LAYER), signature="softss(v, t, p, pmax)",
        doc="soft threshold; the largest min(layer*p, pmax) percent of |v| pass unshrunk", shape=vector_with_scalars(3),
        reference=_softss_reference, torch=SOFTSS, latex=None, derivative=None, curvature=None, convexity=None,
        monotone=None, scalar=None, sign=None, requires=(), prox=None, fuzz=None)


ANALYTIC = helper("_analytic", '''
def _analytic(D):
    """ALISTA's analytic weight (Liu et al. 2019): W minimising ||W.T @ D||_F off the diagonal subject to
    diag(W.T @ D) = 1. The problem splits by columns; column i is G^+ D_i / (D_i.T G^+ D_i), G = D @ D.T."""
    Z = torch.linalg.pinv(D @ D.mT, hermitian=True) @ D
    return Z / (D * Z).sum(0)
''')


class Analytic(MatrixExpr):
    """analytic(D): ALISTA's analytic weight (Liu et al. 2019), the same shape as D.

    W = argmin ||off-diagonal of W.T @ D||_F subject to diag(W.T @ D) = 1; column i is
    G^+ D_i / (D_i.T G^+ D_i) with G = D @ D.T, the exact minimiser.
    """

    def __new__(cls, matrix):
        return Basic.__new__(cls, sp.sympify(matrix))

    @property
    def shape(self):
        return self.args[0].shape


def _analytic_reference(np, D):
    """Column i of W is G^+ D_i / (D_i.T G^+ D_i), G = D D.T (the docstring above)."""
    pinv = np.linalg.pinv(D @ D.T, hermitian=True)
    return np.column_stack([pinv @ d / (d @ pinv @ d) for d in D.T])


# the fuzzer writes analytic(D) lets itself
declare("analytic", Analytic, signature="analytic(D)", doc="ALISTA's analytic weight for D", shape=matrix_same,
        reference=_analytic_reference, torch=ANALYTIC, latex=None, derivative=None, curvature=None,
        convexity=None, monotone=None, scalar=None, sign=None, requires=(), prox=None, fuzz=None)


# what `learn weights` makes learned thresholds of (their t becomes a learned theta), and what it linearises:
# the thresholds and the projections of a constraint (clamp, relu, the balls, topk: their bounds and counts
# stay, they are the constraint; topk keeps its k in every layer)
THRESHOLD_ATOMS = (Soft, SoftPos, Hard, SoftSS, BlockSoft, RowSoft, SVT)
LINEARISED_ATOMS = THRESHOLD_ATOMS + (Clamp, Relu, ProjBall, ProjL1Ball, TopK)


def names_of(classes) -> str:
    """The declared names of atom classes, for messages: 'soft/softpos/hard/...'."""
    return "/".join(BY_CLASS[c].name for c in classes)


# ==================================================================================================
# The IR's own nodes: built by passes, never called by name in a program
# ==================================================================================================

class Dot(ScalarAtom):
    """v @ w for two vectors: the inner product."""


Dot.reference = staticmethod(lambda np, a, b: np.sum(a * b))


class Entry(ScalarAtom):
    """s[j]: entry j of a vector, j a sum index."""


Entry.reference = staticmethod(lambda np, v, j: v[j, 0])  # j: the sum index's value


class IndexSum(ScalarAtom):
    """sum_j body: args are (body, j, dim) with j ranging over dim."""


# body: a function of the index's value (reference.py binds j); dim: an int
IndexSum.reference = staticmethod(lambda np, body, dim: sum(body(j) for j in range(dim)))


class Row(MatrixExpr):
    """C[j]: row j of a matrix, as a column vector; args (C, j)."""

    def __new__(cls, matrix, index):
        return Basic.__new__(cls, matrix, index)

    @property
    def shape(self):
        return (self.args[0].shape[1], sp.S.One)


Row.reference = staticmethod(lambda np, C, j: C[j].reshape(-1, 1))  # row j as a column vector


class CG(MatrixExpr):
    """cg(A, b, x0, k): k steps of conjugate gradients for A x = b (A symmetric positive definite) from x0;
    args (A, b, x0, k). No syntax of its own: `derive admm(solve = cg(iters = k))` builds it, warm-started
    at the previous z. A direction of zero curvature (the residual is already 0) does not move x."""

    def __new__(cls, matrix, rhs, start, iters):
        return Basic.__new__(cls, sp.sympify(matrix), sp.sympify(rhs), sp.sympify(start), sp.sympify(iters))

    @property
    def shape(self):
        return self.args[1].shape


# The fuzz judge's probe of rounding in the iterative solves (dpc.reference.perturbed_solves): while it holds
# (rng, relative), every CG step's A p is multiplied entrywise by 1 + relative * N(0, 1), a model of the rounding
# in which the module's torch and the reference's numpy differ (their orders of summation). None everywhere else.
SOLVE_ROUNDING = contextvars.ContextVar("dpc_solve_rounding", default=None)


def _rounded(np, Ap):
    """A p as computed, or under SOLVE_ROUNDING's perturbation while the judge probes the solve."""
    noise = SOLVE_ROUNDING.get()
    if noise is None:
        return Ap
    rng, relative = noise
    return Ap * (1 + relative * rng.standard_normal(np.shape(Ap)))


def _cg_reference(np, A, b, x0, iters):
    x = np.zeros_like(b) + x0
    r = b - A @ x
    p, rs = r, float((r * r).sum())
    for _ in range(int(iters)):
        Ap = _rounded(np, A @ p)
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


# ==================================================================================================
# Linear operators on signals and images (docs/imaging.md): matrix-free, each with its exact adjoint
# ==================================================================================================
# A value R[c, h, w] is (c*h) x w in the algebra (ir.ImageSymbol: its channels stacked along the rows, numpy's
# reshape(c*h, w); its rows ir.StackRows(c, h), so a zero or ones sympy builds from its shape is printed (c, h, w)
# too) and (batch, c, h, w) in torch; R[h, w] is h x w and (batch, h, w). The adjoints are atoms
# programs do not call (syntax=False): calculus pulls a cotangent back through an operator by its adjoint
# (the gradient of sum(phi(conv(K, u))) is convT(K, phi'(conv(K, u)))), derive pdhg applies it to the dual.

from dpc.declare import Linear  # noqa: E402
from dpc.ir import StackRows  # noqa: E402


def tensor_rank(e) -> int:
    """How many axes a value has per sample in torch: 1 a vector, 2 a matrix (or one image), 3 an image stack
    (R[c, h, w], which the algebra holds as a (c*h) x w matrix whose rows are StackRows(c, h): a zero or ones
    sympy built from a stack's shape is rank 3 too)."""
    rank = getattr(e, "rank", None)
    if isinstance(rank, int):
        return rank
    if isinstance(e.shape[0], StackRows):
        return 3
    if isinstance(e, (sp.MatAdd, HadamardProduct)):
        return max(tensor_rank(a) for a in e.args if isinstance(a, MatrixExpr))
    if isinstance(e, sp.MatMul):
        _, mats = e.as_coeff_matrices()
        if len(mats) == 1:
            return tensor_rank(mats[0])
    if isinstance(e, (VectorAtom, HadamardPower)) and isinstance(e.args[0], MatrixExpr):
        return tensor_rank(e.args[0])
    return 1 if e.shape[1] == 1 else 2


class _Operator(MatrixExpr):
    """A linear operator applied to its operand; shape and rank from the operand. A base, not an atom: its
    subclasses declare their references."""

    reference = None

    def __new__(cls, *args):
        obj = Basic.__new__(cls, *(sp.sympify(a) for a in args))
        # a linear operator of zero is zero where the zero can be printed: a start of 0 folded into the first
        # layer made ADMM's grad2dT(w - u) grad2dT(0) of a (2h) x w ZeroMatrix, printed torch.zeros(2*h, w), which
        # _grad2d_t cannot read (fuzz finding). A result of rank <= 2 (an image, a vector) becomes ZeroMatrix; an
        # image stack (grad2d, a bank's conv) stays the operator of its operand's zero, which prints its shape.
        if isinstance(obj.args[getattr(cls, "operands", 1) - 1], sp.ZeroMatrix) and tensor_rank(obj) <= 2:
            return sp.ZeroMatrix(*obj.shape)
        return obj

    def _eval_transpose(self):
        return None


def _dim_text(expr) -> str:
    return str(expr)


# --- diff: R[n] -> R[n - 1], (diff z)_i = z_{i+1} - z_i ---

DIFF = helper("_diff", '''
def _diff(z):
    """Forward differences along the last axis: (..., n) -> (..., n - 1)."""
    return z[..., 1:] - z[..., :-1]
''')
DIFF_T = helper("_diff_t", '''
def _diff_t(y):
    """The adjoint of _diff: (..., n - 1) -> (..., n), (D.T y)_i = y_{i-1} - y_i (y_{-1} = y_{n-1} = 0)."""
    return F.pad(y, (1, 0)) - F.pad(y, (0, 1))
''')


class Diff(_Operator):
    """diff(z): forward differences z[i+1] - z[i] of a vector, one fewer entry."""

    rank = 1

    @property
    def shape(self):
        return (self.args[0].shape[0] - 1, sp.Integer(1))


class DiffT(_Operator):
    """The adjoint of diff: (n-1) -> n."""

    rank = 1

    @property
    def shape(self):
        return (self.args[0].shape[0] + 1, sp.Integer(1))


def _diff_shape(args):
    _one(args)
    (shape,) = args
    if len(shape) != 1:
        raise ShapeError(f"needs a vector, got {show_shape(shape)}", hint="for an image write grad2d(u)")
    if shape[0].isdigit() and int(shape[0]) < 3:
        raise ShapeError(f"needs a vector of at least 3 entries, got {show_shape(shape)}")
    from dpc.ir import dim_symbol
    return (_dim_text(dim_symbol(shape[0]) - 1),)


def _diff_t_shape(args):
    _one(args)
    (shape,) = args
    from dpc.ir import dim_symbol
    return (_dim_text(dim_symbol(shape[0]) + 1),)


def _diff_reference(np, z):
    return z[1:] - z[:-1]


def _diff_t_reference(np, y):
    out = np.zeros((y.shape[0] + 1, 1))
    out[1:] += y
    out[:-1] -= y
    return out


# fuzz role "operator": the generator's image/signal programs (compiler/fuzz/generate.py, operator_program)
declare("diff", Diff, signature="diff(z)", doc="forward differences z[i+1] - z[i]: R[n] -> R[n - 1]",
        shape=_diff_shape, reference=_diff_reference, torch=DIFF, latex=r"\operatorname{diff}",
        derivative=Pullback(lambda e, w: DiffT(w)), curvature=None, convexity="affine", monotone=None,
        scalar=None, sign=None, requires=(), prox=None, fuzz=Fuzz("operator"),
        linear=Linear(adjoint=lambda e, w: DiffT(w), opnorm=lambda e: sp.Integer(2)))
declare("diffT", DiffT, syntax=False, signature="diffT(y)", doc="the adjoint of diff: R[n - 1] -> R[n]",
        shape=_diff_t_shape, reference=_diff_t_reference, torch=DIFF_T, latex=r"\operatorname{diff}^{T}",
        derivative=Pullback(lambda e, w: Diff(w)), curvature=None, convexity="affine", monotone=None,
        scalar=None, sign=None, requires=(), prox=None, fuzz=None,
        linear=Linear(adjoint=lambda e, w: Diff(w), opnorm=lambda e: sp.Integer(2)))


# --- grad2d: R[h, w] -> R[2, h, w], forward differences with the Neumann boundary ---

GRAD2D = helper("_grad2d", '''
def _grad2d(u):
    """Forward differences of (..., h, w) along h and along w, the last one in each direction 0 (Neumann):
    (..., 2, h, w)."""
    gh = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    gw = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    return torch.stack((gh, gw), dim=-3)
''')
GRAD2D_T = helper("_grad2d_t", '''
def _grad2d_t(p):
    """The adjoint of _grad2d (minus the divergence): (..., 2, h, w) -> (..., h, w)."""
    qh = p[..., 0, :-1, :]
    qw = p[..., 1, :, :-1]
    return F.pad(qh, (0, 0, 1, 0)) - F.pad(qh, (0, 0, 0, 1)) + F.pad(qw, (1, 0)) - F.pad(qw, (0, 1))
''')


class Grad2D(_Operator):
    """grad2d(u): the two forward differences of an image, stacked: R[h, w] -> R[2, h, w]."""

    rank = 3

    @property
    def shape(self):
        rows, cols = self.args[0].shape
        return (StackRows(2, rows), cols)


class Grad2DT(_Operator):
    """The adjoint of grad2d: R[2, h, w] -> R[h, w]."""

    rank = 2

    @property
    def shape(self):
        rows, cols = self.args[0].shape
        return (rows.height if isinstance(rows, StackRows) else rows / 2, cols)


def _grad2d_shape(args):
    _one(args)
    (shape,) = args
    if len(shape) != 2:
        raise ShapeError(f"needs one image R[h, w], got {show_shape(shape)}",
                         hint="for a signal R[n] write diff(z)" if len(shape) == 1 else None)
    return ("2",) + tuple(shape)


def _grad2d_t_shape(args):
    _one(args)
    (shape,) = args
    return tuple(shape[1:])


def _grad2d_reference(np, u):
    gh = np.zeros_like(u)
    gw = np.zeros_like(u)
    gh[:-1, :] = u[1:, :] - u[:-1, :]
    gw[:, :-1] = u[:, 1:] - u[:, :-1]
    return np.concatenate([gh, gw], axis=0)


def _grad2d_t_reference(np, p):
    h = p.shape[0] // 2
    qh, qw = p[:h], p[h:]
    out = np.zeros((h, p.shape[1]))
    out[1:, :] += qh[:-1, :]
    out[:-1, :] -= qh[:-1, :]
    out[:, 1:] += qw[:, :-1]
    out[:, :-1] -= qw[:, :-1]
    return out


declare("grad2d", Grad2D, signature="grad2d(u)",
        doc="forward differences along h and w, Neumann (the last one 0): R[h, w] -> R[2, h, w]",
        shape=_grad2d_shape, reference=_grad2d_reference, torch=GRAD2D, latex=r"\nabla",
        derivative=Pullback(lambda e, w: Grad2DT(w)), curvature=None, convexity="affine", monotone=None,
        scalar=None, sign=None, requires=(), prox=None, fuzz=Fuzz("operator"),
        linear=Linear(adjoint=lambda e, w: Grad2DT(w), opnorm=lambda e: sp.sqrt(8)))
declare("grad2dT", Grad2DT, syntax=False, signature="grad2dT(p)", doc="the adjoint of grad2d: R[2, h, w] -> R[h, w]",
        shape=_grad2d_t_shape, reference=_grad2d_t_reference, torch=GRAD2D_T, latex=r"\nabla^{T}",
        derivative=Pullback(lambda e, w: Grad2D(w)), curvature=None, convexity="affine", monotone=None,
        scalar=None, sign=None, requires=(), prox=None, fuzz=None,
        linear=Linear(adjoint=lambda e, w: Grad2D(w), opnorm=lambda e: sp.sqrt(8)))


# --- conv: a filter bank K : R[k, s, s] (or one kernel R[s, s]) correlated with an image, same size ---

PADS = ("zero", "reflect", "circular")   # conv's boundaries; the default is reflect (PADS[1])
_TORCH_PAD = {"zero": "constant", "reflect": "reflect", "circular": "circular"}
_NUMPY_PAD = {"zero": "constant", "reflect": "reflect", "circular": "wrap"}

PAD_FITS = helper("_check_pad_fits", '''
def _check_pad_fits(h, w, s0, s1, pad):
    """Reflect and circular borders come from inside the image: it must be larger than the border (torch's
    reflect pad refuses otherwise, and the adjoint's fold would silently crop)."""
    if pad != "constant" and (h <= s0 // 2 or w <= s1 // 2):
        raise ValueError(f"images of {h} x {w} are too small for {s0} x {s1} filters with {pad} padding: h must be "
                         f"above {s0 // 2} and w above {s1 // 2}")
''')
CONV = helper("_conv", '''
def _conv(K, u, pad):
    """The correlation (F.conv2d) of each image u (..., h, w) with each filter of K (k, s, s), on u padded by
    (s - 1) // 2 before and s // 2 after in each direction with torch's `pad` mode (constant: zeros):
    (..., k, h, w); one kernel K (s, s) gives (..., h, w)."""
    s0, s1 = K.shape[-2], K.shape[-1]
    h, w = u.shape[-2], u.shape[-1]
    _check_pad_fits(h, w, s0, s1, pad)
    x = F.pad(u.reshape(-1, 1, h, w), ((s1 - 1) // 2, s1 // 2, (s0 - 1) // 2, s0 // 2), mode=pad)
    out = F.conv2d(x, K.reshape(-1, 1, s0, s1))
    return out.reshape(u.shape[:-2] + out.shape[1:] if K.dim() == 3 else u.shape)
''', needs=("_check_pad_fits",))
PAD_T = helper("_pad_t", '''
def _pad_t(g, lo, hi, pad, axis):
    """The adjoint of F.pad(., lo before and hi after, mode=pad) along axis (-1 or -2): folds the border back."""
    n = g.shape[axis] - lo - hi
    inner = g.narrow(axis, lo, n)
    if pad == "constant":
        return inner
    where = (lambda t, a, b: F.pad(t, (a, b))) if axis == -1 else (lambda t, a, b: F.pad(t, (0, 0, a, b)))
    if lo > 0:
        left = g.narrow(axis, 0, lo)
        inner = inner + (where(left, n - lo, 0) if pad == "circular" else where(left.flip(axis), 1, n - 1 - lo))
    if hi > 0:
        right = g.narrow(axis, lo + n, hi)
        inner = inner + (where(right, 0, n - hi) if pad == "circular" else where(right.flip(axis), n - 1 - hi, 1))
    return inner
''')
CONV_T = helper("_conv_t", '''
def _conv_t(K, v, pad):
    """The adjoint of _conv(K, ., pad): (..., k, h, w) -> (..., h, w) by F.conv_transpose2d and the adjoint of
    the padding."""
    s0, s1 = K.shape[-2], K.shape[-1]
    h, w = v.shape[-2], v.shape[-1]
    _check_pad_fits(h, w, s0, s1, pad)
    lead = v.shape[:-3] if K.dim() == 3 else v.shape[:-2]
    W = K.reshape(-1, 1, s0, s1)
    g = F.conv_transpose2d(v.reshape(-1, W.shape[0], h, w), W)
    g = _pad_t(_pad_t(g, (s1 - 1) // 2, s1 // 2, pad, -1), (s0 - 1) // 2, s0 // 2, pad, -2)
    return g.reshape(lead + (h, w))
''', needs=("_pad_t", "_check_pad_fits"))


class Conv(_Operator):
    """conv(K, u, pad): args (K, u, pad index into PADS)."""

    operands = 2

    @property
    def shape(self):
        K, u = self.args[0], self.args[1]
        rows, cols = u.shape
        if isinstance(K.shape[0], StackRows):  # a bank R[k, s, s]: k images; one kernel R[s, s]: one
            return (StackRows(K.shape[0].channels, rows), cols)
        return (rows, cols)

    @property
    def rank(self):
        return 3 if tensor_rank(self.args[0]) == 3 else 2


class ConvT(_Operator):
    """The adjoint of conv: args (K, v, pad)."""

    operands = 2
    rank = 2

    @property
    def shape(self):
        K, v = self.args[0], self.args[1]
        rows, cols = v.shape
        return (rows.height if isinstance(rows, StackRows) else rows, cols)


def _conv_shape(args, pad=1):
    if len(args) != 2:
        raise ShapeError(f"takes a filter bank and an image, got {len(args)} arguments")
    ks, us = args
    if len(ks) not in (2, 3) or ks[-1] != ks[-2]:
        raise ShapeError(f"needs square filters K : R[k, s, s] (or one kernel R[s, s]), got {show_shape(ks)}")
    if len(us) != 2:
        raise ShapeError(f"convolves one image u : R[h, w], got {show_shape(us)}")
    return (ks[0],) + tuple(us) if len(ks) == 3 else tuple(us)


def _conv_t_shape(args, pad=1):
    ks, vs = args
    return tuple(vs[-2:])


def _pad_index(np, pad, h, w, lo0, hi0, lo1, hi1):
    """Where each entry of the padded h x w image comes from (a flat index), -1 for a zero."""
    mode = _NUMPY_PAD[PADS[int(pad)]]
    index = np.arange(h * w).reshape(h, w)
    if mode == "constant":
        return np.pad(index, ((lo0, hi0), (lo1, hi1)), mode="constant", constant_values=-1)
    return np.pad(index, ((lo0, hi0), (lo1, hi1)), mode=mode)


def _filters(np, K):
    """K in the algebra's layout ((k*s) x s, or s x s) as (k, s, s)."""
    s = K.shape[1]
    return K.reshape(-1, s, s)


def _conv_reference(np, K, u, pad):
    """numpy: pad by index (np.pad's constant, reflect, wrap), then correlate offset by offset."""
    filters = _filters(np, K)
    s0, s1 = filters.shape[1:]
    h, w = u.shape
    index = _pad_index(np, pad, h, w, (s0 - 1) // 2, s0 // 2, (s1 - 1) // 2, s1 // 2)
    padded = np.where(index >= 0, u.reshape(-1)[np.maximum(index, 0)], 0.0)
    out = np.zeros((filters.shape[0], h, w))
    for a in range(s0):
        for b in range(s1):
            out += filters[:, a, b][:, None, None] * padded[None, a:a + h, b:b + w]
    return out.reshape(-1, w)


def _conv_t_reference(np, K, v, pad):
    """numpy: scatter each offset's product into the padded grid, then add each padded entry to its source."""
    filters = _filters(np, K)
    k, s0, s1 = filters.shape
    w = v.shape[1]
    h = v.shape[0] // k
    v = v.reshape(k, h, w)
    grid = np.zeros((h + s0 - 1, w + s1 - 1))
    for a in range(s0):
        for b in range(s1):
            grid[a:a + h, b:b + w] += (filters[:, a, b][:, None, None] * v).sum(axis=0)
    index = _pad_index(np, pad, h, w, (s0 - 1) // 2, s0 // 2, (s1 - 1) // 2, s1 // 2)
    out = np.zeros(h * w)
    keep = index >= 0
    np.add.at(out, index[keep], grid[keep])
    return out.reshape(h, w)


def _conv_torch(helper_name):
    def rule(pr, e):
        pr.helpers.add(helper_name)
        K, u, pad = e.args
        return f"{helper_name}({pr(K)}, {pr(u)}, {_TORCH_PAD[PADS[int(pad)]]!r})"
    return rule


def _conv_build(K, u, pad=1):
    return Conv(K, u, sp.Integer(pad))


def _conv_norm(e):
    """An upper bound on ||conv(K, ., pad)|| at every image size, from the symbol: S = sup over frequencies w of
    sum_k |K_k^(w)|^2 (ConvSymbol). zero: the operator is a compression of the infinite convolution, whose norm is
    sqrt(S); circular: its norm at h x w is the largest sqrt(sum_k |K_k^|^2) over the h x w DFT grid, at most
    sqrt(S) and equal to it in the limit; reflect: the padded image is a window of u's symmetric periodic
    extension (period 2h - 2 by 2w - 2: _conv pads less than the image), whose energy per period is at most 4 ||u||^2,
    so 2*sqrt(S), which a shift filter attains at every size (no bound read from the symbol alone is lower).
    docs/imaging.md, "Operator norms"."""
    K, pad = e.args[0], int(e.args[2])
    bound = sp.sqrt(ConvSymbol(K))
    return 2 * bound if PADS[pad] == "reflect" else bound


CONV_SYMBOL = helper("_conv_symbol", '''
def _conv_symbol(K):
    """An upper bound on S = sup over frequencies w of sum_k |K_k^(w)|^2 for filters K (k, s0, s1) or one kernel
    (s0, s1), within 1 % of S: P = sum_k |K_k^|^2 is the Fourier series of the filters' summed autocorrelation
    (2 s - 1 lags each way), taken on an n x n grid (n a power of 2, at least 64 and 45 (s - 1)); its largest value
    there (conv's exact opnorm^2 with circular padding on n x n images) is divided by 1 - 2 (pi (s - 1) / n)^2,
    which covers the frequencies between grid points (P has degree s - 1 in each frequency: Bernstein's
    inequality at P's maximum, where its gradient is 0)."""
    s0, s1 = K.shape[-2], K.shape[-1]
    d = max(s0, s1) - 1
    n = 64
    while n < 45 * d:
        n = 2 * n
    W = K.reshape(1, -1, s0, s1)
    R = F.conv2d(W, W, padding=(s0 - 1, s1 - 1))[0, 0]  # sum_k sum_x K_k(x) K_k(x + t), t in (-s + 1, s - 1)
    P = torch.fft.rfft2(R, s=(n, n)).abs()  # |sum_t R(t) e^(-i w (t + s - 1))| = P(w): P is real and >= 0
    return P.amax() / (1 - 2 * (torch.pi * d / n) ** 2)
''')


class ConvSymbol(ScalarAtom):
    """An upper bound (within 1 %) on sup_w sum_k |K_k^(w)|^2 of a filter bank (k, s, s) or one kernel (s, s):
    the square of conv's operator norm with zero or circular padding at any image size (_conv_norm)."""


def _conv_symbol_reference(np, K):
    """numpy: each filter's 2-D DFT on the same n x n grid, |.|^2 summed over the filters, the same factor."""
    s = K.shape[1]
    filters = K.reshape(-1, s, s)
    d = s - 1
    n = 64
    while n < 45 * d:
        n *= 2
    P = (np.abs(np.fft.fft2(filters, s=(n, n))) ** 2).sum(axis=0)
    return np.float64(P.max() / (1 - 2 * (np.pi * d / n) ** 2))


declare("convsymbol", ConvSymbol, syntax=False, signature="convsymbol(K)",
        doc="sup over frequencies of sum_k |K_k^|^2, bounded within 1 % (conv's operator norm squared, zero or "
            "circular padding, any image size)",
        shape=lambda args: (), reference=_conv_symbol_reference, torch=CONV_SYMBOL,
        latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None,
        sign="nonnegative", requires=(), prox=None, fuzz=None)

declare("conv", Conv, build=_conv_build, signature="conv(K, u)",
        options={"pad": PADS},
        doc="correlation of an image with each filter of K : R[k, s, s] (F.conv2d), same size: R[h, w] -> "
            "R[k, h, w]; pad = reflect (default) | zero | circular",
        shape=_conv_shape, reference=_conv_reference, torch=_conv_torch("_conv"), latex=None,
        derivative=Pullback(lambda e, w: ConvT(e.args[0], w, e.args[2])), curvature=None, convexity="affine",
        monotone=None, scalar=None, sign=None, requires=(), prox=None, fuzz=Fuzz("operator"),
        linear=Linear(adjoint=lambda e, w: ConvT(e.args[0], w, e.args[2]), opnorm=_conv_norm, operand=1))
declare("convT", ConvT, syntax=False, signature="convT(K, v)", options={"pad": PADS},
        doc="the adjoint of conv: R[k, h, w] -> R[h, w] (F.conv_transpose2d and the padding's adjoint)",
        shape=_conv_t_shape, reference=_conv_t_reference, torch=_conv_torch("_conv_t"), latex=None,
        derivative=Pullback(lambda e, w: Conv(e.args[0], w, e.args[2])), curvature=None, convexity="affine",
        monotone=None, scalar=None, sign=None, requires=(), prox=None, fuzz=None,
        linear=Linear(adjoint=lambda e, w: Conv(e.args[0], w, e.args[2]), opnorm=_conv_norm, operand=1))


# ==================================================================================================
# Solves with operators (issue 20, item 3): the u-step of derive admm / hqs on an objective with operators
# solves (c0 I + sum_i c_i A_i^T A_i) x = b matrix-free (passes/operator_solve.py): by the FFT when every A_i
# is a circular convolution (a circulant system), else by conjugate gradients on the operator (OperatorCG).
# ==================================================================================================

CIRCULANT_SOLVE = helper("_circulant_solve", '''
def _circulant_solve(b, c0, filters, weights):
    """x with (c0 I + sum_i weights[i] conv(K_i).T conv(K_i)) x = b for images b (..., h, w), every conv circular
    (_conv with pad 'circular'): the system is diagonal in the Fourier basis, its symbol c0 + sum_i weights[i]
    sum_k |FFT(K_ik)|^2 (each filter zero-padded to h x w; where a filter sits, its centre convention, changes
    the phase of its FFT, not its modulus). One rfft2 of b, a division, one irfft2. Where the symbol is 0 (at
    most eps times its largest value: no term reaches that frequency) x takes 0 there, the least-norm solution."""
    h, w = b.shape[-2], b.shape[-1]
    symbol = c0 + torch.zeros(h, w // 2 + 1, dtype=b.dtype, device=b.device)
    for K, c in zip(filters, weights):
        if K.shape[-2] > h or K.shape[-1] > w:
            raise ValueError(f"images of {h} x {w} are too small for the FFT solve with {K.shape[-2]} x "
                             f"{K.shape[-1]} filters: h and w must be at least the filter size")
        G = torch.fft.rfft2(K, s=(h, w))
        symbol = symbol + c * (G.real.square() + G.imag.square()).reshape(-1, h, w // 2 + 1).sum(0)
    keep = symbol > torch.finfo(symbol.dtype).eps * symbol.abs().amax()
    inverse = torch.where(keep, 1 / torch.where(keep, symbol, 1), 0)
    return torch.fft.irfft2(torch.fft.rfft2(b) * inverse, s=(h, w))
''')


class CirculantSolve(MatrixExpr):
    """circsolve(b, c0, K_1, c_1, ..., K_n, c_n): x with (c0 I + sum_i c_i conv(K_i, ., circular).T conv(K_i, .,
    circular)) x = b, by the FFT. No syntax: passes/operator_solve.py builds it for a circulant u-step."""

    def __new__(cls, rhs, c0, *terms):
        return Basic.__new__(cls, sp.sympify(rhs), sp.sympify(c0), *(sp.sympify(t) for t in terms))

    @property
    def shape(self):
        return self.args[0].shape

    rank = 2


def _circulant_solve_reference(np, b, c0, *terms):
    """numpy.fft: the symbol of each conv(K_k, ., circular).T conv(K_k, ., circular) is |fft2(K_k, (h, w))|^2."""
    h, w = b.shape
    symbol = c0 + np.zeros((h, w))
    for K, c in zip(terms[::2], terms[1::2]):
        for f in _filters(np, np.asarray(K)):
            symbol = symbol + c * np.abs(np.fft.fft2(f, s=(h, w))) ** 2
    keep = symbol > np.finfo(np.float64).eps * np.abs(symbol).max()
    inverse = np.where(keep, 1 / np.where(keep, symbol, 1), 0)
    return np.real(np.fft.ifft2(np.fft.fft2(b) * inverse))


def _circulant_solve_torch(pr, e):
    b, c0, *terms = e.args
    tuple_of = lambda items: f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"  # noqa: E731
    filters, weights = tuple_of([pr(K) for K in terms[::2]]), tuple_of([pr(c) for c in terms[1::2]])
    return f"{pr.use(CIRCULANT_SOLVE)}({pr(b)}, {pr(c0)}, {filters}, {weights})"


declare("circsolve", CirculantSolve, syntax=False, signature="circsolve(b, c0, K, c, ...)",
        doc="x with (c0 I + sum_i c_i conv(K_i).T conv(K_i)) x = b, every conv circular, by the FFT",
        shape=None, reference=_circulant_solve_reference, torch=_circulant_solve_torch, latex=None,
        derivative=None, curvature=None, convexity=None, monotone=None, scalar=None, sign=None, requires=(),
        prox=None, fuzz=None)


class OperatorCG(MatrixExpr):
    """cg(A, b, x0, k) with A a linear map applied matrix-free: args (A(p), p, b, x0, k), A(p) the map written
    on the placeholder symbol p (c0 p + sum_i c_i A_i.T(A_i(p)), from the operators' declared adjoints). No
    syntax: derive admm / hqs build it for a u-step with operators that is not circulant, warm-started at the
    previous u. The reference evaluator binds p (reference.py), the torch printer writes A as a lambda."""

    def __new__(cls, body, placeholder, rhs, start, iters):
        return Basic.__new__(cls, body, placeholder, sp.sympify(rhs), sp.sympify(start), sp.sympify(iters))

    @property
    def shape(self):
        return self.args[2].shape

    @property
    def rank(self):
        return tensor_rank(self.args[2])


def _operator_cg_reference(np, apply, b, x0, iters):
    """The same steps as _cg_reference, A @ p replaced by apply(p); as _cg_op, no step once the residual is
    at rounding level of b (|r| <= 64 eps |b|, float64 here)."""
    x = np.zeros_like(b) + x0
    r = b - apply(x)
    p, rs = r, float((r * r).sum())
    floor = float((b * b).sum()) * (64 * np.finfo(np.float64).eps) ** 2
    for _ in range(int(iters)):
        Ap = _rounded(np, apply(p))
        curvature = float((p * Ap).sum())
        alpha = rs / curvature if curvature > 0 and rs > floor else 0.0
        x, r = x + alpha * p, r - alpha * Ap
        rs_next = float((r * r).sum())
        p = r + (rs_next / rs if rs > 0 else 0.0) * p
        rs = rs_next
    return x


OperatorCG.reference = staticmethod(_operator_cg_reference)


# ==================================================================================================
# Learned nonlinearities (issue 20, item 4; passes/learn_rbf.py): `learn influence` and `learn shrink` replace an
# elementwise function by phi(z) = sum_j W[c, j] exp(-(z - mu_j)^2 / (2 gamma^2)), M centres mu_j equally spaced
# on [-r, r], gamma their spacing 2r / (M - 1) (TNRD's radial basis functions), one row of W per channel c of z
# (channels: axis -3 of an image stack; one row for anything else). W starts at the least-squares fit of the
# function it replaces, sampled on a fine grid of [-r, r] (rbffit, computed in the constructor).
# ==================================================================================================

RBF_RADIUS = 5  # the generated code sums the 2 * RBF_RADIUS centres nearest to each z


def rbf_tail_bound(radius: int = RBF_RADIUS) -> float:
    """How far the sum over the 2 * radius centres nearest to z can be from the full sum, per unit of max|W|:
    every centre left out is at least `radius` spacings (gamma) from z on either side, so the tail is at most
    2 * sum_{d >= radius} exp(-d^2 / 2) (7.5e-6 for radius 5)."""
    import math as _m
    return 2 * sum(_m.exp(-d * d / 2) for d in range(radius, radius + 40))


def rbf_fit_points(rbfs: int) -> int:
    """The fine grid a fit samples the replaced function on: 20 points per spacing of the centres."""
    return 20 * (int(rbfs) - 1) + 1


RBF_PARTS = helper("_rbf_parts", '''
def _rbf_parts(z, W, r):
    """Where each z sits among the M = W.shape[-1] centres, in units of their spacing gamma = 2r / (M - 1): t = (z + r)
    / gamma clamped to [-5, M + 4], its integer part n and fraction f in [0, 1), the row `first` of _rbf_tables that
    holds its window of the 10 nearest centres (n - 4 .. n + 5), whether t was clamped. W (c, M): c = 1 applies its
    one row to all of z, c > 1 row i to channel i (axis -3) of z."""
    c, M = W.shape
    step = 2.0 * r / (M - 1)
    t = (z + r) / step
    tc = t.clamp(-5, M + 4)
    n = tc.detach().floor()
    first = n.long().clamp(-5, M + 4) + 6  # the clamp keeps a NaN's index in range (its value stays NaN)
    if c > 1:
        if z.dim() < 3 or z.shape[-3] != c:
            raise ValueError(f"W has {c} rows (one per channel) but z has shape {tuple(z.shape)}: channels on axis -3")
        first = first + torch.arange(c, device=z.device).view(c, 1, 1) * (M + 11)
    return tc - n, first, t != tc, step
''')

RBF_TABLES = helper("_rbf_tables", '''
def _rbf_tables(W):
    """tables[i, m] = exp(-(i - 4)^2 / 2) W[centre m - 10 + i] (0 past the ends), i = 0 .. 9, m = 0 .. M + 10 per
    row of W (c (M + 11) columns): window m's i-th centre and its Gaussian's constant factor, so that with t = n + f,
    exp(-(t - centre)^2 / 2) = exp(-f^2 / 2 - 4 f) exp(f)^i exp(-(i - 4)^2 / 2), the sum over a window is
    exp(-f^2 / 2 - 4 f) times a polynomial in exp(f) (Horner: 10 gathers and multiply-adds on z-sized tensors)."""
    offsets = torch.arange(-4, 6, dtype=W.dtype, device=W.device)
    windows = F.pad(W, (10, 10)).unfold(-1, 10, 1) * torch.exp(-0.5 * offsets.square())  # (c, M + 11, 10)
    return windows.reshape(-1, 10).t().contiguous(), offsets
''')

RBF_EVAL = helper("_rbf_eval", '''
def _rbf_eval(z, W, r, slope):
    """phi(z) by the 10 nearest centres (see _rbf_tables), and with slope its derivative in z (0 where clamped)."""
    f, first, clamped, step = _rbf_parts(z, W, r)
    tables, offsets = _rbf_tables(W)
    q = f.exp()
    acc = torch.take(tables[9], first)
    dacc = acc * offsets[9] if slope else None
    for i in range(8, -1, -1):
        entry = torch.take(tables[i], first)
        acc = torch.addcmul(entry, acc, q)
        if slope:
            dacc = torch.addcmul(entry * offsets[i], dacc, q)
    scale = torch.exp(f * (-0.5 * f - 4))
    phi = scale * acc
    if not slope:
        return phi, None
    return phi, torch.where(clamped, 0, scale * (dacc - f * acc) / step)
''', needs=("_rbf_parts", "_rbf_tables"))

RBF_FUNCTION = helper("_RBFLocal", '''
class _RBFLocal(torch.autograd.Function):
    """_rbf with a written-out backward: phi's slope in z comes out of forward's Horner loop (a second polynomial,
    one z-sized tensor saved); the gradient in W is 10 index_add_ of grad * each centre's Gaussian into the
    tables' rows, folded back onto W (no gather's index bookkeeping, nothing 10 times z's size)."""

    @staticmethod
    def forward(z, W, r, slope):
        return _rbf_eval(z, W, r, slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, W, r, slope = inputs
        ctx.mark_non_differentiable(output[1]) if output[1] is not None else None
        ctx.save_for_backward(z, W, output[1])
        ctx.r = r

    @staticmethod
    def backward(ctx, grad, _):
        z, W, dphi = ctx.saved_tensors
        grad_z = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_z = grad * dphi
        if ctx.needs_input_grad[1]:
            c, M = W.shape
            f, first, _, _ = _rbf_parts(z, W, ctx.r)
            q, index = f.exp(), first.reshape(-1)
            term = grad * torch.exp(f * (-0.5 * f - 4))
            rows = torch.zeros(10, c * (M + 11), dtype=W.dtype, device=W.device)
            for i in range(10):  # rows[i, m]: the gradient of tables[i, m]
                rows[i].index_add_(0, index, term.reshape(-1))
                if i < 9:
                    term = term * q
            offsets = torch.arange(-4, 6, dtype=W.dtype, device=W.device)
            windows = (rows.t() * torch.exp(-0.5 * offsets.square())).reshape(c, M + 11, 10)
            padded = torch.zeros(c, M + 20, dtype=W.dtype, device=W.device)
            for i in range(10):  # window m's i-th entry is padded centre m + i
                padded[:, i:i + M + 11] += windows[:, :, i]
            grad_W = padded[:, 10:10 + M]
        return grad_z, grad_W, None, None
''', needs=("_rbf_parts", "_rbf_eval"))

RBF = helper("_rbf", '''
def _rbf(z, W, r):
    """phi(z) = sum_j W[., j] exp(-(z - mu_j)^2 / (2 gamma^2)), M = W.shape[-1] centres mu_j equally spaced on
    [-r, r], gamma = 2r / (M - 1), summed over the 10 centres nearest each z: the centres left out are at least
    5 gamma away, so the result is within 7.5e-6 max|W| of the full sum. W (c, M): one row for all of z, or row i
    for channel i (axis -3)."""
    if torch.is_grad_enabled() and (z.requires_grad or W.requires_grad):
        return _RBFLocal.apply(z, W, r, z.requires_grad)[0]
    return _rbf_eval(z, W, r, False)[0]
''', needs=("_RBFLocal", "_rbf_eval"))


class Rbf(VectorAtom):
    """rbf(z, W, r): the learned function of `learn influence` / `learn shrink`, entrywise in z (see above)."""


def _rbf_reference(np, z, W, r):
    """numpy: the full sum over all M centres, each channel's row of W on its block of rows of z."""
    W = np.asarray(W, dtype=float)
    W = W.reshape(-1, W.shape[-1])
    c, M = W.shape
    mu = np.linspace(-float(r), float(r), M)
    gamma = 2.0 * float(r) / (M - 1)
    zz = np.asarray(z, dtype=float).reshape(c, -1)
    out = (W[:, None, :] * np.exp(-(zz[..., None] - mu) ** 2 / (2 * gamma ** 2))).sum(-1)
    return out.reshape(np.shape(z))


declare("rbf", Rbf, syntax=False, signature="rbf(z, W, r)",
        doc="sum_j W[c, j] exp(-(z - mu_j)^2 / (2 gamma^2)), entrywise, M = W's columns centres on [-r, r], gamma "
            "their spacing, row c of W for channel c of z (learn influence, learn shrink)",
        shape=lambda args: args[0], reference=_rbf_reference, torch=RBF,
        latex=lambda printer, expr, exp=None: rf"\varphi_{{{printer._print(expr.args[1])}}}\left({printer._print(expr.args[0])}\right)",
        derivative=None, curvature=None, convexity=None, monotone=None, scalar=None, sign=None, requires=(),
        prox=None, fuzz=None)  # no syntax: the fuzzer's programs cannot call it; `learn influence/shrink` build it


class RbfGrid(MatrixExpr):
    """rbfgrid(r, m): the vector of m points equally spaced on [-r, r] that a fit samples a function on."""

    def __new__(cls, r, m):
        return Basic.__new__(cls, sp.sympify(r), sp.sympify(m))

    @property
    def shape(self):
        return (self.args[1], sp.Integer(1))

    rank = 1


declare("rbfgrid", RbfGrid, syntax=False, signature="rbfgrid(r, m)",
        doc="m points equally spaced on [-r, r] (a vector), where an RBF fit samples the function it replaces",
        shape=lambda args: (str(args[1]),),
        reference=lambda np, r, m: np.linspace(-float(r), float(r), int(m)).reshape(-1, 1),
        torch=lambda pr, e: f"torch.linspace({-float(e.args[0])!r}, {float(e.args[0])!r}, {int(e.args[1])}, "
                            f"dtype=torch.float64)",
        latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None, sign=None,
        requires=(), prox=None, fuzz=None)


RBF_FIT = helper("_rbf_fit", '''
def _rbf_fit(values, r, rbfs, rows):
    """The least-squares RBF weights (rows, rbfs) (every row the same, float64) of the function sampled as
    `values` on len(values) points equally spaced on [-r, r]: torch.linalg.lstsq in float64; and the fit's
    largest error on those points."""
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    z = torch.linspace(-r, r, values.numel(), dtype=torch.float64)
    centres = torch.linspace(-r, r, rbfs, dtype=torch.float64)
    A = torch.exp(-0.5 * ((z[:, None] - centres) / (2.0 * r / (rbfs - 1))).square())
    w = torch.linalg.lstsq(A, values[:, None], driver="gelsd" if A.device.type == "cpu" else None).solution[:, 0]
    return w.expand(int(rows), rbfs).clone(), float((A @ w - values).abs().max())
''')


class RbfFit(MatrixExpr):
    """rbffit(g, r, M, c, kind): the (c, M) weights of learn influence (kind 0) or learn shrink (kind 1), each row
    the least-squares fit of the values g (a function sampled on rbfgrid(r, len(g))) by M RBFs on [-r, r]."""

    def __new__(cls, g, r, M, c, kind):
        return Basic.__new__(cls, *(sp.sympify(a) for a in (g, r, M, c, kind)))

    @property
    def shape(self):
        return (self.args[3], self.args[2])

    rank = 2


def _rbf_fit_reference(np, g, r, M, c, kind):
    g = np.asarray(g, dtype=float).reshape(-1)
    z = np.linspace(-float(r), float(r), g.size)
    mu = np.linspace(-float(r), float(r), int(M))
    A = np.exp(-0.5 * ((z[:, None] - mu) / (2.0 * float(r) / (int(M) - 1))) ** 2)
    w = np.linalg.lstsq(A, g, rcond=None)[0]
    return np.tile(w, (int(c), 1))


declare("rbffit", RbfFit, syntax=False, signature="rbffit(g, r, M, c, kind)",
        doc="the least-squares weights (c, M) of M RBFs on [-r, r] fitted to g, sampled on rbfgrid(r, len(g))",
        shape=lambda args: (str(args[3]), str(args[2])), reference=_rbf_fit_reference,
        torch=lambda pr, e: f"{pr.helpers.add('_rbf_fit') or '_rbf_fit'}({pr(e.args[0])}, {float(e.args[1])!r}, "
                            f"{int(e.args[2])}, {pr(e.args[3])})[0]",
        latex=None, derivative=None, curvature=None, convexity=None, monotone=None, scalar=None, sign=None,
        requires=(), prox=None, fuzz=None)


RBF_CURVES = helper("_rbf_curves", '''
def _rbf_curves(module, names, r, z, shrink):
    """The learned functions of a module sampled for plotting: z (n,) (default: 1001 points of [-1.2 r, 1.2 r],
    float64) and, per weight name, values (layers, rows, n) in float64: phi(z) for learn influence, the
    shrinkage z - psi(z) for learn shrink; a weight shared by the layers is repeated. One name gives the pair
    (z, values); several a dict name -> (z, values)."""
    z = torch.linspace(-1.2 * r, 1.2 * r, 1001, dtype=torch.float64) if z is None else torch.as_tensor(z, dtype=torch.float64).reshape(-1)
    curves = {}
    with torch.no_grad():
        for name in names:
            W = getattr(module, name)
            per_layer = isinstance(W, nn.ParameterList) or W.dim() == 3  # a list, or stacked (steps, rows, M)
            copies = list(W) if per_layer else [W] * getattr(module, "steps", 1)
            values = torch.stack([_rbf(z.to(p.device).expand(p.shape[0], z.numel()), p.double(), r) if p.shape[0] == 1
                                  else _rbf(z.to(p.device).expand(p.shape[0], 1, z.numel()), p.double(), r)[:, 0]
                                  for p in copies]).cpu()
            curves[name] = (z, z - values if shrink else values)
    return curves[names[0]] if len(names) == 1 else curves
''', needs=("_rbf",))
