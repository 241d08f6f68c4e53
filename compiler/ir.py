"""The IR: a Program of declarations and sympy math, rewritten by passes.

A Program is immutable; every pass returns a new one (dataclasses.replace).
Math is sympy: dims are positive integer Symbols, scalars real Symbols,
vectors n x 1 and matrices m x n MatrixSymbols. The network's structure
(which values feed which, which layers share parameters) is a networkx graph
built from a Program by graph.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import sympy as sp
from sympy import MatrixSymbol

from dpc.grammar.ast import NO_SPAN, Span



def dim_symbol(name: str) -> sp.Expr:
    """A dim as sympy: a literal size, a dim's positive integer Symbol, or an expression of dims that an
    operator's shape rule wrote (diff(z) : R[n - 1])."""
    if name.isdigit():
        return sp.Integer(int(name))
    if name.isidentifier():
        return sp.Symbol(name, integer=True, positive=True)
    # every identifier a dim's Symbol: sympify alone reads N, S, E, I, Q, O, beta, gamma, ... as sympy's own
    # objects (`dims N` with diff(z) : R[N - 1] crashed: fuzz finding)
    names = {n: sp.Symbol(n, integer=True, positive=True) for n in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", name)}
    return sp.parse_expr(name, local_dict=names)


class StackRows(sp.Function):
    """c*h, the rows of an image stack R[c, h, w] in the algebra, kept as a function of its two dims: never
    multiplied out (R[3, 4, 5] has rows 3*4, not 12), and opaque to sympy's rewrites (expand, simplify and
    cancel rebuild a product as a plain one: a Mul subclass lost it there), so whatever sympy builds from a
    stack's shape keeps its channel axis: `y - y` or `0*K` folds to ZeroMatrix(StackRows(c, h), w), which the
    printers write as zeros of (c, h, w) (a 2-D zeros(c*h, w) could not be added to a (batch, c, h, w) tensor,
    and read as one (c*h) x s kernel it convolved to the wrong shape: review finding). Printed c*h; shapes
    that take the channels off (grad2dT, convT) read them with stack_dims."""

    is_integer = True
    is_positive = True
    is_finite = True

    @classmethod
    def eval(cls, c, h):
        return None  # stays unevaluated, numbers too

    def __int__(self):
        return int(self.args[0]) * int(self.args[1])

    __index__ = __int__

    def _eval_evalf(self, prec):
        return (self.args[0] * self.args[1])._eval_evalf(prec)

    def _sympystr(self, printer):
        return printer._print(sp.Mul(*self.args, evaluate=False))

    def _latex(self, printer):
        return printer._print(sp.Mul(*self.args, evaluate=False))

    @property
    def channels(self):
        return self.args[0]

    @property
    def height(self):
        return self.args[1]


def stack_dims(shape):
    """(c, h, w) of an algebra shape whose rows are an image stack's (StackRows), else None."""
    rows, cols = shape
    return (rows.channels, rows.height, cols) if isinstance(rows, StackRows) else None


def declared_shape(expr) -> tuple[str, ...]:
    """The shape of a value as a declaration writes it, read off the algebra: () a scalar, (n,) a vector,
    (m, n) a matrix, (c, h, w) an image stack (its rows StackRows(c, h))."""
    shape = getattr(expr, "shape", None)
    if shape is None:
        return ()
    stack = stack_dims(shape)
    if stack is not None:
        return tuple(str(d) for d in stack)
    rows, cols = shape
    return (str(rows),) if cols == 1 else (str(rows), str(cols))


class ImageSymbol(MatrixSymbol):
    """A declared R[c, h, w] value. In the algebra it is the (c*h) x w matrix of its channels stacked along
    the rows (numpy's reshape(c*h, w) of the (c, h, w) array): sums, entrywise functions and reductions need
    nothing more; its rank (3) tells the printers that the tensor is (batch, c, h, w). Its rows are
    StackRows(c, h), so a value sympy derives from it (a zero it folds) knows the rank too."""

    rank = 3


def make_symbol(name: str, shape: tuple[str, ...]):
    """The sympy symbol standing for a declared name of this shape."""
    if len(shape) == 0:
        return sp.Symbol(name, real=True)
    if len(shape) == 1:
        return MatrixSymbol(name, dim_symbol(shape[0]), 1)
    if len(shape) == 3:
        return ImageSymbol(name, StackRows(dim_symbol(shape[0]), dim_symbol(shape[1])), dim_symbol(shape[2]))
    return MatrixSymbol(name, dim_symbol(shape[0]), dim_symbol(shape[1]))


@dataclass(frozen=True)
class Decl:
    """A declared name.

    kind: input | param | hyper | let | var | weight (a parameter made by `learn weights`)
          | output (what `output EXPR` returns: value is the expression, read after every layer).
    value: a hyper's default, a let's definition, a var's start, a weight's initial value.
    trainable: an nn.Parameter in the generated module.
    per_layer: one copy per unrolled layer (untied): a weight, or a param or hyper of `learn NAME untied`.
    """

    name: str
    kind: str
    shape: tuple[str, ...]
    value: sp.Basic | None = None
    span: Span = field(default=NO_SPAN, compare=False)
    trainable: bool = False
    per_layer: bool = False
    note: str = ""
    spd: bool = False  # a let the derivation knows is symmetric positive definite (factored by Cholesky)
    init: str = ""  # a param's filter initialisation when none is given (`param K : R[k, s, s] = dct`)

    @property
    def symbol(self):
        return make_symbol(self.name, self.shape)


@dataclass(frozen=True)
class Constraint:
    """`var in set(args)`: sets nonneg, box(lo, hi), onehot, simplex, binary."""

    var: str
    set: str
    args: tuple = ()
    span: Span = field(default=NO_SPAN, compare=False)


@dataclass(frozen=True)
class Step:
    """One iteration: temporaries in order, then every state's new value.

    Right-hand sides read the previous states and the temporaries before them.
    """

    lets: tuple[tuple[str, sp.Basic], ...] = ()
    assigns: tuple[tuple[str, sp.Basic], ...] = ()

    def map(self, fn) -> "Step":
        return Step(tuple((n, fn(e)) for n, e in self.lets), tuple((n, fn(e)) for n, e in self.assigns))

    def equations(self):
        return self.lets + self.assigns


@dataclass(frozen=True)
class Requirement:
    """What a derivation assumed of a value known only at construction (a hyper, a let of params).

    expr, a scalar of hypers, params and lets, must be `positive` (finite, > 0), `nonnegative`
    (finite, >= 0) or `nonzero`; `why` says what it is ("the weight of lam*norm1(z)"). The pipeline
    checks the defaults at compile time (dpc.requirements); the generated constructor checks the values
    it is given and raises a ValueError naming them.
    """

    expr: sp.Basic
    relation: str
    why: str
    span: Span = field(default=NO_SPAN, compare=False)


@dataclass(frozen=True)
class Note:
    """One line of the derivation, shown by `dpc explain` and in the module docstring."""

    pass_name: str
    text: str


@dataclass(frozen=True)
class Program:
    name: str
    file: str
    source: str
    dims: tuple[str, ...]
    decls: tuple[Decl, ...]
    objective: sp.Basic | None = None
    constraints: tuple[Constraint, ...] = ()
    step: Step | None = None          # the update every layer applies
    first_step: Step | None = None    # layer 0 when the start value folds into it
    closed_form: tuple[tuple[str, sp.Basic], ...] = ()  # var = expr, for non-iterative programs
    layers: int | None = None
    tied: bool | None = None
    output: str | None = None
    notes: tuple[Note, ...] = ()
    term_spans: tuple[tuple[sp.Basic, Span], ...] = ()  # objective terms -> where written
    directive_spans: tuple[tuple[str, Span], ...] = ()
    requirements: tuple[Requirement, ...] = ()           # what the derivation assumed of hypers and lets
    until: sp.Basic | None = None     # `unroll until(tol = e)`: run until the relative change is below e
    backward: str = "unrolled"        # `backward implicit`: the gradient at the fixed point, not through the loop
    # conditions a derivation wants but that only warn when broken (proxgrad's step between 1/L and 2/L):
    # Requirements no constructor raises for; an emitter may warn (dpc.requirements.cautions)
    cautions: tuple[Requirement, ...] = ()
    convexity: str | None = None      # what dpc.convexity found of the objective, as `dpc check` states it
    warnings: tuple = ()              # errors.Diagnostic warnings, printed by dpc compile/check (errors.warning)

    # --- lookups ---
    def decl(self, name: str) -> Decl:
        for d in self.decls:
            if d.name == name:
                return d
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(d.name == name for d in self.decls)

    def of_kind(self, *kinds: str) -> tuple[Decl, ...]:
        return tuple(d for d in self.decls if d.kind in kinds)

    @property
    def states(self) -> tuple[Decl, ...]:
        return self.of_kind("var")

    def span_of_term(self, term) -> Span | None:
        for t, s in self.term_spans:
            if t == term:
                return s
        return None

    def span_of_directive(self, kind: str) -> Span | None:
        for k, s in self.directive_spans:
            if k == kind:
                return s
        return None

    # --- edits ---
    def with_decl(self, decl: Decl) -> "Program":
        """Replace the declaration of the same name, or append a new one."""
        if self.has(decl.name):
            return replace(self, decls=tuple(decl if d.name == decl.name else d for d in self.decls))
        return replace(self, decls=self.decls + (decl,))

    def requiring(self, expr, relation: str, why: str, span: Span | None = None) -> "Program":
        """The program with one more requirement on a value (see Requirement)."""
        req = Requirement(sp.sympify(expr), relation, why, span or NO_SPAN)
        if req in self.requirements:
            return self
        return replace(self, requirements=self.requirements + (req,))

    def cautioning(self, expr, relation: str, why: str, span: Span | None = None) -> "Program":
        """The program with one more caution: a Requirement whose breaking is a warning, not an error."""
        req = Requirement(sp.sympify(expr), relation, why, span or NO_SPAN)
        if req in self.cautions:
            return self
        return replace(self, cautions=self.cautions + (req,))

    def warned(self, message: str, span: Span | None = None, hint: str | None = None) -> "Program":
        """The program with one more warning (errors.warning), printed by dpc compile and dpc check."""
        from dpc.errors import warning
        found = warning(message, span, hint)
        return self if found in self.warnings else replace(self, warnings=self.warnings + (found,))

    def noted(self, pass_name: str, *lines: str) -> "Program":
        return replace(self, notes=self.notes + tuple(Note(pass_name, line) for line in lines))

    def fresh_name(self, base: str) -> str:
        """A name not yet declared: base, base1, base2, ..."""
        taken = {d.name for d in self.decls} | set(self.dims)
        if base not in taken:
            return base
        i = 1
        while f"{base}{i}" in taken:
            i += 1
        return f"{base}{i}"


@dataclass(frozen=True)
class Directive:
    """A pass as written: `derive proxgrad(step = 1/L)`, `unroll 16`, `learn weights untied`.

    Arguments stay AST expressions; a pass lowers them against the program it receives
    (lower.lower_expr), so they can name anything declared by then.
    """

    kind: str                       # derive | relax | adapt | unroll | learn | output | backward
    name: str = ""                  # proxgrad, softmax, gates, weights, z, ...
    target: str = ""                # relax: the set or atom relaxed
    args: tuple = ()                # AST expressions
    kwargs: tuple = ()              # (name, AST expression, span)
    items: tuple = ()               # learn: tuples of (word, span)
    item_options: tuple = ()        # learn: per item, (args, ((name, AST expression, span), ...)) in parentheses
    count: int | None = None        # unroll
    span: Span = field(default=NO_SPAN, compare=False)
    name_span: Span = field(default=NO_SPAN, compare=False)
    target_span: Span = field(default=NO_SPAN, compare=False)  # relax: where the target is written

    def kwarg(self, key: str):
        for k, v, _ in self.kwargs:
            if k == key:
                return v
        return None

    def label(self) -> str:
        """The directive as a person would write it, for explain and notes."""
        from dpc.grammar.unparse import unparse
        if self.kind == "unroll" and self.count is not None:
            return f"unroll {self.count}"
        if self.kind == "learn":
            from dpc.grammar.unparse import unparse
            def said(i, item):
                args, kwargs = self.item_options[i] if i < len(self.item_options) else ((), ())
                parts = [unparse(a) for a in args] + [f"{k} = {unparse(v)}" for k, v, _ in kwargs]
                words = [w for w, _ in item]
                return " ".join([words[0] + (f"({', '.join(parts)})" if parts else ""), *words[1:]])
            return "learn " + ", ".join(said(i, item) for i, item in enumerate(self.items))
        if self.kind == "output":
            return f"output {self.name or unparse(self.args[0])}"
        head = f"{self.kind} {self.target} -> {self.name}" if self.kind == "relax" else f"{self.kind} {self.name}"
        parts = [unparse(a) for a in self.args] + [f"{k} = {unparse(v)}" for k, v, _ in self.kwargs]
        return head + (f"({', '.join(parts)})" if parts else "")
