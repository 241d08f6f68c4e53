"""IR expression -> PyTorch source, in row form.

A vector v (n x 1 in the IR) is printed as a tensor of shape (..., n): (batch, n) when it
depends on the sample, (n,) when it is a constant. A product A @ v therefore prints as
`v @ A.mT` (F.linear(v, A)) and A.T @ v as `v @ A`: matrix-vector products, never
matrix-matrix, applied right to left. Sums of two or more batched products fuse into
torch.addmm. Scalars that depend on the sample reduce with keepdim in updates (so they
broadcast against vectors) and without it in the objective (one number per sample).
"""
from __future__ import annotations

import sympy as sp
from sympy import Identity, MatAdd, MatMul, MatrixSymbol, OneMatrix, Transpose

from dpc import atoms
from dpc.errors import DpcError

ATOM, CALL, POW, UNARY, MUL, ADD = 100, 90, 60, 50, 40, 30


class Unsupported(DpcError):
    pass


class TorchPrinter:
    """Prints expressions given how each symbol is spelled in code.

    names: symbol name -> code (`x`, `self.W[k]`, `self.lam`).
    batched: names of per-sample values (inputs, states, temporaries).
    keepdim: reductions keep the last axis (inside updates).
    like: a tensor whose dtype and device new tensors (eye) follow.
    """

    def __init__(self, names: dict[str, str], batched: set[str], keepdim: bool = True, like: str = "x"):
        self.names = names
        self.batched = batched
        self.keepdim = keepdim
        self.like = like
        self.helpers: set[str] = set()  # module-level helpers the printed code calls

    def __call__(self, expr) -> str:
        return self.p(expr)[0]

    # --- helpers ---
    def p(self, expr):
        method = getattr(self, "_" + type(expr).__name__, None)
        if method is None:
            for klass in type(expr).__mro__[1:]:
                method = getattr(self, "_" + klass.__name__, None)
                if method is not None:
                    break
        if method is None:
            raise Unsupported(f"the torch backend cannot print {type(expr).__name__} ({expr})")
        return method(expr)

    def wrap(self, expr, prec):
        code, own = self.p(expr)
        return f"({code})" if own < prec else code

    def is_batched(self, expr) -> bool:
        return any(getattr(s, "name", None) in self.batched for s in expr.free_symbols)

    def _name(self, name):
        code = self.names.get(name)
        if code is None:
            raise Unsupported(f"the torch backend has no binding for '{name}'")
        return code

    # --- scalars ---
    def _Symbol(self, e):
        return self._name(e.name), ATOM

    def _Integer(self, e):
        if abs(e) > 2 ** 31:  # a Python int this large overflows torch's int64 scalars: print it as a float
            return repr(float(e)), ATOM if e >= 0 else UNARY
        return str(int(e)), ATOM if e >= 0 else UNARY

    def _Rational(self, e):
        return repr(float(e)), ATOM if e >= 0 else UNARY

    def _Float(self, e):
        return repr(float(e)), ATOM if e >= 0 else UNARY

    def _NumberSymbol(self, e):
        return repr(float(e)), ATOM

    def _Infinity(self, e):
        return "float('inf')", CALL

    def _NegativeInfinity(self, e):
        return "-float('inf')", UNARY

    def _Add(self, e):
        return self._sum(list(e.args))

    def _Mul(self, e):
        if e.could_extract_minus_sign():
            return "-" + self.wrap(-e, UNARY), UNARY
        num, den = [], []
        for f in e.args:
            if isinstance(f, sp.Pow) and f.exp.is_number and f.exp < 0:
                den.append(f.base if f.exp == -1 else f.base ** (-f.exp))
            else:
                num.append(f)
        # * and @ bind alike, left to right: a factor after the first that prints as a product in row form
        # (an entry of D.T @ v is `v @ D`) needs parentheses, or a * v @ D would mean (a * v) @ D
        out = " * ".join(self.wrap(f, MUL if i == 0 else MUL + 1) for i, f in enumerate(num)) if num else "1"
        for d in den:
            out += " / " + self.wrap(d, MUL + 1)
        return out, MUL

    def _Pow(self, e):
        if e.exp == -1:
            return f"1 / {self.wrap(e.base, MUL + 1)}", MUL
        if e.exp == sp.S.Half:
            return f"{self.wrap(e.base, POW + 1)} ** 0.5", POW
        return f"{self.wrap(e.base, POW + 1)} ** {self.wrap(e.exp, POW + 1)}", POW

    def _Max(self, e):
        a, b = e.args
        if b == 0 or a == 0:
            other = a if b == 0 else b
            return f"torch.relu({self._tensor(other)})", CALL
        return f"torch.maximum({self._tensor(a)}, {self._tensor(b)})", CALL

    def _Min(self, e):
        a, b = e.args
        return f"torch.minimum({self._tensor(a)}, {self._tensor(b)})", CALL

    def _tensor(self, e):
        """A scalar as a tensor in the module's dtype: torch.as_tensor(lam) of a Python float would take the
        default dtype (float32 in a float64 module: a precision loss; float64 in a float32 one: promotion)."""
        return f"torch.as_tensor({self(e)}, dtype={self.like}.dtype, device={self.like}.device)"

    def _exp(self, e):
        return f"torch.exp({self._tensor(e.args[0])})", CALL

    def _log(self, e):
        return f"torch.log({self._tensor(e.args[0])})", CALL

    def _tanh(self, e):
        return f"torch.tanh({self._tensor(e.args[0])})", CALL

    # --- scalar atoms of vectors: one number per sample ---
    def _reduce(self, code, method="sum"):
        return f"{code}.{method}(-1{', keepdim=True' if self.keepdim else ''})", CALL

    def _SqNorm(self, e):
        return self._reduce(f"{self.wrap(e.args[0], CALL)}.square()")

    def _Norm1(self, e):
        return self._reduce(f"{self.wrap(e.args[0], CALL)}.abs()")

    def _Norm2(self, e):
        kd = ", keepdim=True" if self.keepdim else ""
        return f"torch.linalg.vector_norm({self(e.args[0])}, dim=-1{kd})", CALL

    def _Norm0(self, e):  # |sign(v)| counts the non-zeros in v's own dtype (a bool sum would be int64)
        return self._reduce(f"{self.wrap(e.args[0], CALL)}.sign().abs()", "sum")

    def _SumAll(self, e):
        return self._reduce(self.wrap(e.args[0], CALL))

    def _Dot(self, e):
        a, b = e.args
        # * and @ bind alike in Python, left to right: a * (v @ D), not (a * v) @ D
        return self._reduce(f"({self.wrap(a, MUL)} * {self.wrap(b, MUL + 1)})")

    def _OpNorm(self, e):
        return f"torch.linalg.matrix_norm({self(e.args[0])}, ord=2)", CALL

    # --- matrices and vectors ---
    def _MatrixSymbol(self, e):
        return self._name(e.name), ATOM

    def _Transpose(self, e):
        return f"{self.wrap(e.arg, CALL)}.mT", CALL

    def _Identity(self, e):
        return f"torch.eye({self(e.rows)}, dtype={self.like}.dtype, device={self.like}.device)", CALL

    def _ZeroMatrix(self, e):  # a whole vector or matrix that folded to zero keeps its shape
        return f"torch.zeros({self._sizes(e)})", CALL

    def _OneMatrix(self, e):
        return f"torch.ones({self._sizes(e)})", CALL

    def _MatMul(self, e):
        coeff, mats = e.as_coeff_matrices()
        if coeff.could_extract_minus_sign():
            inner, prec = self._scaled(-coeff, mats)
            return f"-{inner if prec > UNARY else f'({inner})'}", UNARY
        return self._scaled(coeff, mats)

    def _scaled(self, coeff, mats):
        """coeff * product, printed as num * product / den (D.mT / L, not 1 / L * D.mT)."""
        body, prec = self._product(mats)
        if coeff == 1:
            return body, prec
        # factor_terms goes inside function arguments and would turn a scaled matrix product there (the
        # argument of an inner product) into a scalar Mul: only for coefficients free of matrices
        # ... and fraction itself fails on some of them: a coefficient holding a matrix is printed as it is
        num, den = (coeff, sp.Integer(1)) if coeff.atoms(sp.MatrixExpr) else sp.fraction(sp.factor_terms(coeff))
        if isinstance(coeff, sp.Rational):
            num, den = coeff, sp.Integer(1)
        if num != 1:
            body, prec = f"{self.wrap(num, MUL)} * {body if prec > MUL else f'({body})'}", MUL
        if den != 1:
            body, prec = f"{body if prec >= MUL else f'({body})'} / {self.wrap(den, MUL + 1)}", MUL
        return body, prec

    def _product(self, mats):
        mats = [m for m in mats if not isinstance(m, Identity)] or mats
        mats = [f for m in mats for f in _powers_expanded(m)]
        if mats[-1].shape[1] != 1:  # a matrix: plain products
            if len(mats) == 1:
                return self.p(mats[0])
            return " @ ".join(self.wrap(m, MUL + 1) for m in mats), MUL
        if len(mats) >= 2 and _is_ones(mats[-1]):  # A @ ones: the row sums of A (A.T @ ones: column sums)
            matrix = mats[-2]
            code = (f"{self.wrap(matrix.arg, CALL)}.sum(0)" if isinstance(matrix, Transpose)
                    else f"{self.wrap(matrix, CALL)}.sum(-1)")
            prec, mats = CALL, mats[:-1]
        else:
            code, prec = self.p(mats[-1])
        for m in reversed(mats[:-1]):
            code, prec = self._apply(m, code, prec)
        return code, prec

    def _apply(self, matrix, code, prec):
        """Row form of matrix @ v: v @ B for matrix = B.T, F.linear(v, matrix) otherwise."""
        if isinstance(matrix, Transpose):
            return f"{code if prec > MUL else f'({code})'} @ {self.wrap(matrix.arg, MUL + 1)}", MUL
        return f"F.linear({code}, {self(matrix)})", CALL

    def _MatAdd(self, e):
        terms = list(e.args)
        if any(_broadcast_scalar(t) is None for t in terms):
            # c * ones beside a whole vector: torch broadcasts the scalar c itself (x + 1, not x + torch.ones(m))
            terms = [_broadcast_scalar(t) if _broadcast_scalar(t) is not None else t for t in terms]
        products = [t for t in terms if self._is_batched_product(t)]
        rest = [t for t in terms if products and t is not products[-1]]
        # fuse only when the rest is a tensor added as it is: addmm(-x, ...) would cost a negation,
        # and addmm takes no Python number as its first argument
        if rest and not all(_negative(t) for t in rest) and any(isinstance(t, sp.MatrixExpr) for t in rest):
            return self._addmm(terms, products)
        return self._sum(terms)

    def _sum(self, terms):
        # vectors before broadcast scalars, positive terms before negative ones (D.sum(-1) - x, not -x + ...),
        # batched before constant; torch broadcasts either way, this is for the reader
        terms = sorted(terms, key=lambda t: (not isinstance(t, sp.MatrixExpr), _negative(t),
                                             not self.is_batched(t)))
        out = self.wrap(terms[0], ADD)
        for t in terms[1:]:
            if _negative(t):
                out += " - " + self.wrap(-t, ADD + 1)
            else:
                out += " + " + self.wrap(t, ADD)
        return out, ADD

    def _is_batched_product(self, t):
        """coeff * A @ v with v batched and A one plain (untransposed) matrix: addmm can take it."""
        if not isinstance(t, MatMul):
            return False
        coeff, mats = t.as_coeff_matrices()
        return (coeff == 1 and len(mats) == 2 and isinstance(mats[0], MatrixSymbol)
                and mats[1].shape[1] == 1 and self.is_batched(mats[1]) and not self.is_batched(mats[0]))

    def _addmm(self, terms, products):
        """A @ v + rest -> torch.addmm(rest, v, A.mT): one fused kernel per product."""
        last = products[-1]
        rest = [t for t in terms if t is not last]
        if len(rest) == 1:
            base = self(rest[0])
        elif all(isinstance(t, sp.MatrixExpr) for t in rest):
            base = self(MatAdd(*rest))
        else:  # a broadcast scalar among the rest: no MatAdd can hold it
            base = self._sum(rest)[0]
        _, (matrix, vector) = last.as_coeff_matrices()
        if len(rest) == 1 and self._is_fresh_product(rest[0]):
            # the base is a product just computed, (batch, n), that nothing else reads or saves for backward
            # (a product's backward keeps its operands, not its result): add into it in place, which saves
            # addmm's copy of the base into a new result
            return f"{self.wrap(rest[0], CALL)}.addmm_({self(vector)}, {self.wrap(matrix, CALL)}.mT)", CALL
        return f"torch.addmm({base}, {self(vector)}, {self.wrap(matrix, CALL)}.mT)", CALL

    def _is_fresh_product(self, t):
        """A @ v with v batched and A constant in the sample, printed as one call (F.linear or v @ B): a new
        (batch, rows) tensor each time it runs."""
        if not isinstance(t, MatMul):
            return False
        coeff, mats = t.as_coeff_matrices()
        return (coeff == 1 and len(mats) == 2 and mats[1].shape[1] == 1 and self.is_batched(mats[1])
                and not self.is_batched(mats[0]) and isinstance(mats[0], (MatrixSymbol, Transpose)))

    def _HadamardPower(self, e):  # z * z is sympy's HadamardPower(z, 2): entrywise
        base, exponent = e.args
        if exponent == 2:
            return f"{self.wrap(base, CALL)}.square()", CALL
        if exponent == -1:  # a derivative's reciprocal (log1p' = 1/(1 + v))
            return f"1 / {self.wrap(base, MUL + 1)}", MUL
        return f"{self.wrap(base, POW + 1)} ** {self.wrap(exponent, POW + 1)}", POW

    def _MatPow(self, e):  # a matrix power that is not applied to a vector (G @ G as a value)
        base, exponent = e.args
        return f"torch.linalg.matrix_power({self(base)}, {self(exponent)})", CALL

    def _HadamardProduct(self, e):
        return " * ".join(self.wrap(a, MUL + 1) for a in e.args), MUL

    # --- elementwise atoms ---
    def _call(self, fn, *args):
        return f"{fn}({', '.join(self(a) for a in args)})", CALL

    def _Soft(self, e):
        self.helpers.add("_soft")
        return self._call("_soft", *e.args)

    def _SoftPos(self, e):
        v, t = e.args
        return f"torch.relu({self.wrap(v, ADD)} - {self.wrap(t, ADD + 1)})", CALL

    def _Hard(self, e):
        self.helpers.add("_hard")
        return self._call("_hard", *e.args)

    def _Clamp(self, e):
        v, lo, hi = e.args
        lo_code = "None" if lo == -sp.oo else self(lo)
        hi_code = "None" if hi == sp.oo else self(hi)
        return f"torch.clamp({self(v)}, {lo_code}, {hi_code})", CALL

    def _Relu(self, e):
        return self._call("torch.relu", e.args[0])

    def _Sigmoid(self, e):
        return self._call("torch.sigmoid", e.args[0])

    def _Tanh(self, e):
        return self._call("torch.tanh", e.args[0])

    def _Exp(self, e):
        return self._call("torch.exp", e.args[0])

    def _Log(self, e):
        return self._call("torch.log", e.args[0])

    def _Abs(self, e):  # sympy's Abs of a scalar and the elementwise atom share the class name
        if isinstance(e, sp.Abs):
            return f"abs({self(e.args[0])})", CALL
        return self._call("torch.abs", e.args[0])

    # smooth entrywise atoms (their derivatives are in atoms.py)
    def _Square(self, e):
        return f"{self.wrap(e.args[0], CALL)}.square()", CALL

    def _Softplus(self, e):  # threshold 40: linear only where log(1 + e^-v) < 1e-17, below float64's precision
        return f"F.softplus({self(e.args[0])}, threshold=40)", CALL

    def _Log1p(self, e):
        return self._call("torch.log1p", e.args[0])

    def _LogCosh(self, e):
        self.helpers.add("_logcosh")
        return self._call("_logcosh", e.args[0])

    def _Huber(self, e):
        self.helpers.add("_huber")
        return self._call("_huber", *e.args)

    def _Softmax(self, e):
        return f"torch.softmax({self(e.args[0])}, dim=-1)", CALL

    # --- relaxations and closed forms (passes/relax.py, passes/closed.py) ---
    def _Sparsemax(self, e):
        self.helpers.add("_sparsemax")
        return self._call("_sparsemax", e.args[0])

    def _Normalize(self, e):
        return f"F.normalize({self(e.args[0])}, dim=-1)", CALL

    def _RowNormalize(self, e):
        return f"F.normalize({self(e.args[0])}, dim=-1)", CALL

    def _RowSqNorm(self, e):
        return f"{self.wrap(e.args[0], CALL)}.square().sum(-1)", CALL

    def _Entropy(self, e):  # _entr: -v log v with a finite gradient where v underflows to 0
        self.helpers.add("_entr")
        return self._reduce(f"_entr({self(e.args[0])})")

    def _BinaryEntropy(self, e):
        self.helpers.add("_entr")
        v = e.args[0]
        return self._reduce(f"(_entr({self(v)}) + _entr(1 - {self.wrap(v, ADD + 1)}))")

    def _Ones(self, e):
        return f"torch.ones({self._sizes(e)})", CALL

    def _CG(self, e):
        matrix, rhs, start, iters = e.args
        self.helpers.add("_cg")
        x0 = "0" if is_zero_matrix(start) else self(start)
        return f"_cg({self(matrix)}, {self(rhs)}, {x0}, {int(iters)})", CALL

    def _Solve(self, e):
        matrix, rhs = e.args
        factor = self.names.get(f"{matrix.name}.factor") if isinstance(matrix, sp.MatrixSymbol) else None
        if factor is not None:  # factored once at construction (emit.py): two triangular solves
            return self._factored_solve(factor, rhs)
        if rhs.shape[1] != 1:  # a matrix right-hand side (a learned weight's start, Dd @ solve(A, Dd.T))
            return f"torch.linalg.solve({self(matrix)}, {self(rhs)})", CALL
        if self.is_batched(rhs) and not self.is_batched(matrix):
            # one matrix for the whole batch: the samples are the columns of one right-hand side, so the
            # matrix is factored once per call (a (batch, n, 1) right-hand side broadcasts the matrix and
            # factors it once per sample: 3.6x slower at n = 200, batch 1024, float64, 1 thread)
            return f"torch.linalg.solve({self(matrix)}, {self.wrap(rhs, CALL)}.mT).mT", CALL
        return f"torch.linalg.solve({self(matrix)}, {self.wrap(rhs, CALL)}.unsqueeze(-1)).squeeze(-1)", CALL

    def _factored_solve(self, factor, rhs):
        """solve(A, rhs) from A's Cholesky factor (one name) or LU factors (two), rhs a batch of rows, a
        constant vector or a matrix."""
        if rhs.shape[1] != 1:
            columns, back = self(rhs), ""
        elif self.is_batched(rhs):
            columns, back = f"{self.wrap(rhs, CALL)}.mT", ".mT"
        else:
            columns, back = f"{self.wrap(rhs, CALL)}.unsqueeze(-1)", ".squeeze(-1)"
        if len(factor) == 1:
            return f"torch.cholesky_solve({columns}, {factor[0]}){back}", CALL
        return f"torch.linalg.lu_solve({factor[0]}, {factor[1]}, {columns}){back}", CALL

    def _IndexSum(self, e):
        from dpc.backends.torch.indexed import print_index_sum
        return print_index_sum(self, e)

    def _IndexVector(self, e):
        from dpc.backends.torch.indexed import print_index_vector
        return print_index_vector(self, e)

    # --- the LISTA family (passes/adapt_support.py, adapt_gates.py; ALISTA's analytic weight) ---
    def _SoftSS(self, e):
        self.helpers.add("_softss")
        return self._call("_softss", *e.args)

    def _Analytic(self, e):
        self.helpers.add("_analytic")
        return self._call("_analytic", e.args[0])

    def _sizes(self, e):
        rows, cols = e.shape
        sizes = self(rows) if cols == 1 else f"{self(rows)}, {self(cols)}"  # row form: a vector is (n,)
        return f"{sizes}, dtype={self.like}.dtype, device={self.like}.device"

    def _Zeros(self, e):
        return f"torch.zeros({self._sizes(e)})", CALL

    def _Xavier(self, e):
        return f"nn.init.xavier_uniform_(torch.empty({self._sizes(e)}))", CALL


def _powers_expanded(matrix):
    """G^3 -> [G, G, G], (A @ B)^2 -> [A, B, A, B]: applied to a vector one product at a time, never a
    matrix-matrix product in the layer."""
    if isinstance(matrix, sp.MatPow) and matrix.exp.is_Integer and 1 <= matrix.exp <= 8:
        return [f for _ in range(int(matrix.exp)) for f in _powers_expanded(matrix.base)]
    if isinstance(matrix, MatMul) and matrix.as_coeff_matrices()[0] == 1:
        return [f for m in matrix.as_coeff_matrices()[1] for f in _powers_expanded(m)]
    return [matrix]


def _is_ones(expr) -> bool:
    return isinstance(expr, (atoms.Ones, OneMatrix))


def _broadcast_scalar(term):
    """c for a scalar broadcast to a vector or matrix (c * ones), else None."""
    if _is_ones(term):
        return sp.Integer(1)
    if isinstance(term, MatMul):
        coeff, mats = term.as_coeff_matrices()
        if len(mats) == 1 and _is_ones(mats[0]):
            return coeff
    return None


def _negative(term) -> bool:
    """Whether a term prints best as `- (its negation)`."""
    if isinstance(term, MatMul):
        return term.as_coeff_matrices()[0].could_extract_minus_sign()
    return term.could_extract_minus_sign()


def is_zero_matrix(expr) -> bool:
    """A start value that folded to zero (the first layer's warm start from z = 0)."""
    import sympy as sp
    return isinstance(expr, sp.ZeroMatrix) or expr == 0
