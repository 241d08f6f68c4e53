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

from dpc import atoms, declare
from dpc.declare import PRECEDENCE
from dpc.errors import DpcError
from dpc.ir import stack_dims

ATOM, CALL, POW, UNARY, MUL, ADD = (PRECEDENCE[k] for k in ("atom", "call", "pow", "unary", "mul", "add"))


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
        atom = declare.of(expr)
        if atom is not None:
            return self._atom(atom, expr)
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
        if isinstance(prec, str):  # a rule's name for a precedence: 'call', 'add+' (tighter than a sum)
            prec = PRECEDENCE[prec.rstrip("+")] + prec.endswith("+")
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
            return _float_literal(e)
        return str(int(e)), ATOM if e >= 0 else UNARY

    def _Rational(self, e):
        return _float_literal(e)

    def _Float(self, e):
        return _float_literal(e)

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
        if len(e.args) > 2:  # max(a, b, c) (a joint Lipschitz bound of three vars): nested maxima
            return f"torch.maximum({self._tensor(sp.Max(*e.args[:-1]))}, {self._tensor(e.args[-1])})", CALL
        a, b = e.args
        if b == 0 or a == 0:
            other = a if b == 0 else b
            return f"torch.relu({self._tensor(other)})", CALL
        return f"torch.maximum({self._tensor(a)}, {self._tensor(b)})", CALL

    def _Min(self, e):
        if len(e.args) > 2:  # nested minima
            return f"torch.minimum({self._tensor(sp.Min(*e.args[:-1]))}, {self._tensor(e.args[-1])})", CALL
        a, b = e.args
        return f"torch.minimum({self._tensor(a)}, {self._tensor(b)})", CALL

    def _tensor(self, e):
        """A scalar as a tensor in the module's dtype: torch.as_tensor(lam) of a Python float would take the
        default dtype (float32 in a float64 module: a precision loss; float64 in a float32 one: promotion)."""
        return f"torch.as_tensor({self(e)}, dtype={self.like}.dtype, device={self.like}.device)"

    # --- scalar atoms of vectors: one number per sample ---
    def _reduce(self, code, method="sum", axes=1):
        if axes == 1:
            return f"{code}.{method}(-1{', keepdim=True' if self.keepdim else ''})", CALL
        # a matrix's every entry: its last two axes, to one number per sample kept as (batch, 1) in updates
        return self.keep_scalar(f"{code}.{method}({'(-3, -2, -1)' if axes == 3 else '(-2, -1)'})")

    def keep_scalar(self, code):
        """A scalar of a matrix computed without keepdim ((batch,) for a per-sample matrix), in the layout of
        a per-sample scalar in updates: (batch, 1), which scales a (batch, n) vector row by row. Not
        (batch, 1, 1): that would broadcast against (batch, n) into (batch, batch, n). (A per-sample scalar
        never scales a per-sample matrix: plan.py refuses that.)"""
        return (f"{code}.unsqueeze(-1)" if self.keepdim else code), CALL

    def _Dot(self, e):
        a, b = e.args
        # * and @ bind alike in Python, left to right: a * (v @ D), not (a * v) @ D
        return self._reduce(f"({self.wrap(a, MUL)} * {self.wrap(b, MUL + 1)})")

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
        if num != 1 and len(mats) == 1 and _is_reciprocal(mats[0]):  # c / b entrywise, not c * (1 / b)
            body, prec = f"{self.wrap(num, MUL)} / {self.wrap(mats[0].base, MUL + 1)}", MUL
        elif num != 1:
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
            code = (f"{self.wrap(matrix.arg, CALL)}.sum(-2)" if isinstance(matrix, Transpose)  # a batch's too
                    else f"{self.wrap(matrix, CALL)}.sum(-1)")
            prec, mats = CALL, mats[:-1]
        else:
            code, prec = self.p(mats[-1])
        batched = self.is_batched(mats[-1])
        for m in reversed(mats[:-1]):
            code, prec = self._apply(m, code, prec, batched)
            batched = batched or self.is_batched(m)
        return code, prec

    def _apply(self, matrix, code, prec, batched=False):
        """Row form of matrix @ v: v @ B for matrix = B.T, F.linear(v, matrix) otherwise; a matrix per sample
        ((batch, m, n)) applied to a vector is a batched product of its rows (the vector per sample or not:
        a matrix input applied to a constant start's vector in the folded first layer)."""
        if self.is_batched(matrix):
            if isinstance(matrix, Transpose):
                return f"({code if prec >= CALL else f'({code})'}.unsqueeze(-2) @ {self.wrap(matrix.arg, MUL + 1)})" \
                       ".squeeze(-2)", CALL
            return f"({self.wrap(matrix, MUL)} @ {code if prec >= CALL else f'({code})'}.unsqueeze(-1)).squeeze(-1)", CALL
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
        if exponent == -1:  # a derivative's reciprocal (1/(1 + v))
            return f"1 / {self.wrap(base, MUL + 1)}", MUL
        return f"{self.wrap(base, POW + 1)} ** {self.wrap(exponent, POW + 1)}", POW

    def _MatPow(self, e):  # a matrix power that is not applied to a vector (G @ G as a value)
        base, exponent = e.args
        return f"torch.linalg.matrix_power({self(base)}, {self(exponent)})", CALL

    def _HadamardProduct(self, e):
        # a / b entrywise is a * b^-1 in the IR: printed as the division it was written as
        over = [a.base for a in e.args if _is_reciprocal(a)]
        factors = [a for a in e.args if not _is_reciprocal(a)]
        out = " * ".join(self.wrap(a, MUL + 1) for a in factors) if factors else "1"
        return out + "".join(f" / {self.wrap(b, MUL + 1)}" for b in over), MUL

    # --- declared atoms: each renders by its declaration's torch rule (dpc.atoms) ---
    def _atom(self, atom, e):
        rule = atom.torch
        args = e.args
        if atom.scalar_class is not None and isinstance(e, atom.scalar_class):
            # the scalar form (sympy's tanh of a hyper): the same rendering, on a tensor in the module's dtype
            if not isinstance(rule, (str, declare.Helper)):
                raise Unsupported(f"atom '{atom.name}': its torch rule cannot print its scalar form {e}")
            args = [_Code(self._tensor(a)) for a in args]
        if isinstance(rule, str):
            return rule.format(*(_Formatted(self, a) for a in args)), CALL
        if isinstance(rule, declare.Helper):
            return self._call(self.use(rule), *args)
        out = rule(self, e)
        return out if isinstance(out, tuple) else (out, CALL)

    def use(self, helper) -> str:
        """A runtime helper the printed code calls (emitted with the module, with what it needs)."""
        self.helpers.add(helper.name)
        return helper.name

    def reduce(self, code, method="sum", axes=1):
        """code reduced over the last axis (the last two for a matrix, axes=2): one number per sample (kept as
        an axis inside updates)."""
        return self._reduce(code, method, axes)

    def tensor(self, e):
        return self._tensor(e)

    def _call(self, fn, *args):
        return f"{fn}({', '.join(a.code if isinstance(a, _Code) else self(a) for a in args)})", CALL

    def _Ones(self, e):
        return f"torch.ones({self._sizes(e)})", CALL

    def _CG(self, e):
        matrix, rhs, start, iters = e.args
        self.helpers.add("_cg")
        x0 = "0" if is_zero_matrix(start) else self(start)
        return f"_cg({self(matrix)}, {self(rhs)}, {x0}, {int(iters)})", CALL

    def _OperatorCG(self, e):
        """_cg_op(lambda p: A(p), b, x0, k, axes): the map written on a lambda's argument, a name no binding uses."""
        body, placeholder, rhs, start, iters = e.args
        self.helpers.add("_cg_op")
        taken = set(self.names.values())
        local = next(n for n in ("p", "v", "q", "p_cg", "v_cg") if n not in taken)
        saved = self.names.get(placeholder.name)
        self.names[placeholder.name] = local
        self.batched.add(placeholder.name)
        try:
            code = self(body)
        finally:
            self.batched.discard(placeholder.name)
            if saved is None:
                self.names.pop(placeholder.name)
            else:
                self.names[placeholder.name] = saved
        x0 = "0" if is_zero_matrix(start) else self(start)
        axes = atoms.tensor_rank(rhs)
        return f"_cg_op(lambda {local}: {code}, {self(rhs)}, {x0}, {int(iters)}, {axes})", CALL

    def _IndexSum(self, e):
        from dpc.backends.torch.indexed import print_index_sum
        return print_index_sum(self, e)

    def _IndexVector(self, e):
        from dpc.backends.torch.indexed import print_index_vector
        return print_index_vector(self, e)

    def _StackRows(self, e):  # an image stack's rows c*h (dpc.ir) where a size is printed whole
        return f"{self.wrap(e.channels, MUL)} * {self.wrap(e.height, MUL + 1)}", MUL

    def _sizes(self, e):
        rows, cols = e.shape
        stack = stack_dims(e.shape)
        if stack is not None:  # an image stack's zeros or ones: (c, h, w), its rows StackRows(c, h) (dpc.ir)
            sizes = ", ".join(self(d) for d in stack)
        else:
            sizes = self(rows) if cols == 1 else f"{self(rows)}, {self(cols)}"  # row form: a vector is (n,)
        return f"{sizes}, dtype={self.like}.dtype, device={self.like}.device"

    def _Zeros(self, e):
        return f"torch.zeros({self._sizes(e)})", CALL

    def _Xavier(self, e):
        return f"nn.init.xavier_uniform_(torch.empty({self._sizes(e)}))", CALL


class _Code:
    """Code already printed (a scalar made a tensor), passed where a rule expects an argument."""

    def __init__(self, code):
        self.code = code


class _Formatted:
    """An argument in a torch template: {0} prints it, {0:call} wraps it to bind as tightly as a call,
    {0:add+} to bind tighter than a sum."""

    def __init__(self, printer, expr):
        self.printer, self.expr = printer, expr

    def __format__(self, spec):
        if isinstance(self.expr, _Code):
            return self.expr.code  # torch.as_tensor(...): a call, binding as tightly as any spec asks
        return self.printer.wrap(self.expr, spec) if spec else self.printer(self.expr)


def _float_literal(e):
    """A number as a Python float literal; one past float64's range as float("inf") (a bare `inf` would be
    a NameError; the pipeline refuses such constants where it can say where they came from)."""
    value = float(e)
    if value != value or value in (float("inf"), float("-inf")):
        text = 'float("nan")' if value != value else ('float("inf")' if value > 0 else '-float("inf")')
        return text, (CALL if value != value or value > 0 else UNARY)
    return repr(value), ATOM if value >= 0 else UNARY


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


def _is_reciprocal(e) -> bool:
    return isinstance(e, sp.HadamardPower) and e.exp == -1
