"""Expressions of random well-typed programs: scalars, vectors and matrices of given sizes built from the
names a program has declared (Expressions, the base of dpc.fuzz.generate.Gen), printed with only the
parentheses the grammar needs (Node). The declared atoms come in through the Palette (dpc.fuzz.palette)."""
from __future__ import annotations

import random

from dpc.fuzz.palette import BOUNDED_FEEDERS, palette

# expression precedence, as in grammar/dp.lark: sum < product < unary < power < postfix < atom
SUM, PROD, UN, POW, POST, ATOM = range(6)

LANGUAGE_KEYWORDS = {"network", "dims", "input", "param", "hyper", "let", "var", "minimize", "subject", "to",
                     "update", "derive", "relax", "adapt", "unroll", "learn", "output", "in", "R"}


def _reserved() -> set[str]:
    from dpc import atoms  # noqa: F401 - runs the atoms' declarations
    from dpc.declare import ATOMS
    from dpc.lower import RESERVED
    return set(RESERVED) | set(ATOMS) | LANGUAGE_KEYWORDS | {"weights", "stepsizes", "sum"}


class Node(tuple):
    """(precedence, text) of an expression; printing adds only the parentheses the grammar needs."""

    def __new__(cls, prec, text):
        return tuple.__new__(cls, (prec, text))

    @property
    def prec(self):
        return self[0]

    @property
    def text(self):
        return self[1]


def wrap(node: Node, need: int) -> str:
    return node.text if node.prec >= need else f"({node.text})"


class Expressions:
    """A program's names and kinds so far, and random expressions over them. `rng` is a random.Random
    (hypothesis' st.randoms() works too)."""

    def __init__(self, rng: random.Random, mistakes: bool = True):
        self.r = rng
        self.atoms = palette()
        self.mistakes = mistakes   # deliberate mistakes (bad options, unknown methods): rejected by the passes
        self.reserved = _reserved()
        self.taken: set[str] = set()
        self.dims: list[str] = []
        self.syms: list[tuple[str, tuple, str]] = []   # (name, shape, kind)
        self.lines: list[str] = []
        self.compact = rng.random() < 0.3   # a*b instead of a * b
        self.positive_lets: set[str] = set()

    # --- helpers ---
    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def mistake(self, p: float) -> float:
        """The weight (or probability) of a deliberate mistake: 0 without mistakes."""
        return p if self.mistakes else 0.0

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def weighted(self, options):
        options = [(w, f) for w, f in options if w > 0]
        total = sum(w for w, _ in options)
        x = self.r.random() * total
        for w, f in options:
            x -= w
            if x <= 0:
                return f
        return options[-1][1]

    def choose(self, atoms):
        """One of the declared atoms `atoms` by their fuzz weights (a uniform pick when they are equal), or
        None when there is none."""
        if len(atoms) <= 1:
            return atoms[0] if atoms else None
        weights = [a.fuzz.weight for a in atoms]
        if len(set(weights)) == 1:
            return self.pick(atoms)
        return self.weighted(list(zip(weights, atoms)))

    def apply(self, atom, arg, ctx, depth=0, first=None) -> Node:
        """atom(arg(), its scalar arguments): arg (a thunk) fed into the atom's domain; the first scalar
        argument from first() when given."""
        return self.call(atom.name, self.feed(atom.fuzz.domain, arg), *self.params(atom, ctx, depth, first))

    def feed(self, domain, arg) -> Node:
        """arg() (a vector or matrix) kept in a domain of FUZZ_DOMAINS."""
        if domain == "bounded":
            return self.call(self.pick(BOUNDED_FEEDERS), arg())
        if domain == "positive":
            return self.bin("+", self.num(positive=True), self.call("abs", arg()))
        return arg()

    def params(self, atom, ctx, depth=0, first=None) -> list:
        """The scalar arguments an atom declares after its first (Fuzz.params): positive and nonnegative
        ones as positive scalars, real ones increasing (a range: lo < 0 < hi)."""
        out, reals = [], 0
        for kind in atom.fuzz.params:
            if first is not None and not out:
                out.append(first())
            elif kind == "real":
                out.append(self.neg(self.num(positive=True, small=True)) if reals == 0 else self.num(positive=True))
                reals += 1
            else:
                out.append(self.den(ctx, depth))
        return out

    def fresh(self, pool) -> str:
        names = [n for n in pool if n not in self.taken and n not in self.reserved]
        name = self.pick(names) if names else self.pick(pool) + str(len(self.taken))
        while name in self.taken or name in self.reserved:
            name = name + "1"
        self.taken.add(name)
        return name

    def declare(self, name, shape, kind):
        self.syms.append((name, tuple(shape), kind))

    def of(self, kinds, shape=None, rank=None):
        return [(n, s) for n, s, k in self.syms if k in kinds and (shape is None or s == tuple(shape))
                and (rank is None or len(s) == rank)]

    def type_text(self, shape) -> str:
        return "R" if not shape else "R[" + ", ".join(shape) + "]"

    # --- expression building blocks ---
    def num(self, positive=False, small=False) -> Node:
        pos = ["0.1", "0.5", "1", "2", "0.25", ".5", "1e-1", "0.05", "3", "1.5", "0.01", "1E-2", "2.0", "4"]
        if small:
            pos = ["0.1", "0.5", "0.25", ".5", "0.05", "1e-1", "0.3"]
        text = self.pick(pos)
        if not small and self.chance(0.005):
            text = self.pick(["3000000000", "4294967296", "1e-30", "123456789.125"])  # int64, tiny
        if not positive and self.chance(0.25):
            return Node(UN, "-" + text)
        return Node(ATOM, text)

    def op(self, sym):
        return sym if self.compact and sym in "*/^" and self.chance(0.7) else f" {sym} "

    def bin(self, op, a: Node, b: Node) -> Node:
        if op in "+-":
            return Node(SUM, f"{wrap(a, SUM)}{self.op(op)}{wrap(b, PROD)}")
        return Node(PROD, f"{wrap(a, PROD)}{self.op(op)}{wrap(b, UN)}")

    def neg(self, a: Node) -> Node:
        return Node(UN, "-" + wrap(a, UN))

    def power(self, a: Node, b: Node) -> Node:
        return Node(POW, f"{wrap(a, POST)}{self.op('^').strip()}{wrap(b, UN)}")

    def T(self, a: Node) -> Node:
        return Node(POST, wrap(a, POST) + ".T")

    def call(self, f, *args) -> Node:
        return Node(POST, f"{f}({', '.join(a.text for a in args)})")

    def name(self, n) -> Node:
        return Node(ATOM, n)

    def maybe_paren(self, node: Node) -> Node:
        return Node(ATOM, f"({node.text})") if self.chance(0.05) else node

    # --- what can be built from a context (a set of kinds) ---
    def producible(self, ctx) -> dict:
        """dim -> a recipe for a vector of that size from names in ctx (fixed point over matrices)."""
        key = (frozenset(ctx), len(self.syms))
        cache = getattr(self, "_prod_cache", {})
        if key in cache:
            return cache[key]
        recipes = {}
        for n, s in self.of(ctx, rank=1):
            recipes.setdefault(s[0], ("name", n))
        changed = True
        while changed:
            changed = False
            for n, (a, b) in self.of(ctx, rank=2):
                if b in recipes and a not in recipes:
                    recipes[a] = ("mv", n, b)
                    changed = True
                if a in recipes and b not in recipes:
                    recipes[b] = ("mtv", n, a)
                    changed = True
            for n, (a, b) in self.of(ctx, rank=2):
                if a not in recipes:
                    recipes[a] = ("rowsq", n)
                    changed = True
        cache[key] = recipes
        self._prod_cache = cache
        return recipes

    def witness(self, d, ctx) -> Node:
        recipe = self.producible(ctx)[d]
        if recipe[0] == "name":
            return self.name(recipe[1])
        if recipe[0] == "mv":
            return self.bin("@", self.name(recipe[1]), self.witness(recipe[2], ctx))
        if recipe[0] == "mtv":
            return self.bin("@", self.T(self.name(recipe[1])), self.witness(recipe[2], ctx))
        return self.call("rowsqnorm", self.name(recipe[1]))

    def can_vec(self, d, ctx) -> bool:
        return d in self.producible(ctx)

    # --- scalars ---
    def den(self, ctx, depth) -> Node:
        """A scalar safely away from 0 and infinity (denominators, thresholds, steps)."""
        names = [n for n, _ in self.of(ctx & {"hyper"}, shape=())] + \
                [n for n, _ in self.of(ctx & {"let"}, shape=()) if n in self.positive_lets]
        opts = [(3, lambda: self.num(positive=True)), (3 if names else 0, lambda: self.name(self.pick(names)))]
        vec_dims = list(self.producible(ctx))
        if depth > 0:
            opts += [
                (1, lambda: self.bin("*", self.den(ctx, depth - 1), self.den(ctx, depth - 1))),
                (1, lambda: self.bin("/", self.den(ctx, depth - 1), self.den(ctx, depth - 1))),
                (1, lambda: self.bin("+", self.den(ctx, depth - 1), self.num(positive=True))),
                (1, lambda: self.call("sqrt", self.den(ctx, depth - 1))),
                (1, lambda: self.call("exp", self.call("tanh", self.sca(ctx, depth - 1)))),
                (1, lambda: self.power(self.den(ctx, 0), Node(ATOM, self.pick(["2", "3", "0.5", "-1"])))),
                (1, lambda: self.bin("+", self.num(positive=True), self.call("sigmoid", self.sca(ctx, depth - 1)))),
                (1 if vec_dims and self.atoms.positive_part else 0, lambda: self.bin(
                    "+", self.num(positive=True), self.call(self.choose(self.atoms.positive_part).name,
                                                            self.vec(self.pick(vec_dims), ctx, depth - 1)))),
            ]
        return self.weighted(opts)()

    def positive(self, sub, ctx) -> Node:
        """sub() (a vector or matrix thunk) made > 0 in every entry, for an entrywise denominator: a declared
        positive atom of tanh(sub()), or c + a declared nonnegative atom of it (c a small positive literal)."""
        P = self.atoms
        return self.weighted([
            (1 if P.positive_entrywise else 0,
             lambda: self.call(self.choose(P.positive_entrywise).name, self.call("tanh", sub()))),
            (1 if P.nonnegative_entrywise else 0, lambda: self.bin(
                "+", self.num(positive=True, small=True), self.apply(self.choose(P.nonnegative_entrywise), sub, ctx))),
            (0.1, lambda: self.bin("+", self.call("sqnorm", sub()), self.num(positive=True, small=True))),
        ])()

    def sca(self, ctx, depth, bounded=True) -> Node:
        """A scalar; bounded ones (|s| of order 1) unless bounded=False."""
        names = [n for n, _ in self.of(ctx, shape=())]
        vec_dims = list(self.producible(ctx))
        mats = self.of(ctx, rank=2)
        P = self.atoms
        opts = [(3, lambda: self.num()), (3 if names else 0, lambda: self.name(self.pick(names)))]
        if depth > 0:
            d = lambda: self.pick(vec_dims)  # noqa: E731
            opts += [
                (2, lambda: self.bin(self.pick("+-"), self.sca(ctx, depth - 1, bounded),
                                     self.sca(ctx, depth - 1, bounded))),
                (1, lambda: self.bin("*", self.sca(ctx, depth - 1, bounded), self.sca(ctx, depth - 1))),
                (1, lambda: self.bin("/", self.sca(ctx, depth - 1, bounded), self.den(ctx, depth - 1))),
                (1, lambda: self.neg(self.sca(ctx, depth - 1, bounded))),
                (2 if P.scalar_bounded else 0, lambda: self.call(
                    self.choose(P.scalar_bounded).name, self.sca(ctx, depth - 1, False))),
                (1 if P.scalar_unbounded else 0, lambda: self.call(
                    self.choose(P.scalar_unbounded).name, self.sca(ctx, depth - 1, bounded))),
                (1 if P.scalar_domain["bounded"] else 0, lambda: self.call(
                    self.choose(P.scalar_domain["bounded"]).name, self.call("tanh", self.sca(ctx, depth - 1, False)))),
                (1 if P.scalar_domain["positive"] else 0, lambda: self.call(
                    self.choose(P.scalar_domain["positive"]).name, self.den(ctx, depth - 1))),
                (1, lambda: self.power(self.sca(ctx, 0, bounded), Node(ATOM, self.pick(["2", "3"])))),
                # thresholds and clamps of a scalar: the shape rules refuse them (a vector or matrix first)
                (self.mistake(0.1) if P.thresholds else 0, lambda: self.apply(
                    self.choose(P.thresholds), lambda: self.sca(ctx, depth - 1, bounded), ctx)),
                (self.mistake(0.1) if P.ranges else 0, lambda: self.apply(
                    self.choose(P.ranges), lambda: self.sca(ctx, depth - 1, False), ctx)),
            ]
            if vec_dims:
                def reduce():
                    v = self.vec(d(), ctx, depth - 1)
                    f = self.choose(P.reductions)
                    out = self.call(f.name, v)
                    if bounded and f in P.nonnegative:  # f(v) / (c + f(v)): in [0, 1)
                        return self.bin("/", out, self.bin("+", self.num(positive=True), self.call(f.name, v)))
                    return out

                def dot():
                    dd = d()
                    out = self.bin("@", self.vec(dd, ctx, depth - 1), self.vec(dd, ctx, depth - 1))
                    return self.call("tanh", out) if bounded else out

                def index_sum():
                    dd = d()
                    j = self.pick(["j", "i", "jj", "idx"])
                    a = self.vec(dd, ctx, depth - 1)
                    ia = Node(POST, wrap(a, POST) + f"[{j}]")
                    body = self.weighted([
                        (2, lambda: self.bin("*", ia, Node(POST, wrap(self.vec(dd, ctx, 0), POST) + f"[{j}]"))),
                        (1, lambda: self.power(ia, Node(ATOM, "2"))),
                        (1, lambda: self.bin("*", self.sca(ctx, 0), ia)),
                        (1 if P.scalar_real else 0, lambda: self.call(self.choose(P.scalar_real).name, ia)),
                    ])()
                    out = Node(SUM, f"sum_{j} {wrap(body, PROD)}")
                    return self.call("tanh", out) if bounded else out

                opts += [
                    (2 if P.reductions else 0, reduce), (1, dot), (0.7, index_sum),
                    (0.5, lambda: self.call("entropy", self.call("softmax", self.vec(d(), ctx, depth - 1)))),
                    (0.3, lambda: (lambda out: self.call("tanh", out) if bounded else out)(
                        self.call("logsumexp", self.vec(d(), ctx, depth - 1)))),
                    (0.3, lambda: self.call("bentropy", self.call("sigmoid", self.vec(d(), ctx, depth - 1)))),
                ]
            if mats:
                opts.append((0.5, lambda: self.call("opnorm", self.name(self.pick(mats)[0]))))
                if P.matrix_reductions:
                    def reduce_matrix():  # sqnorm, norm1, sum, nuclear, norm21 of a matrix expression
                        a, b = self.pick(mats)[1]
                        A = self.mat(a, b, ctx, depth - 1)
                        f = self.choose(P.matrix_reductions)
                        out = self.call(f.name, A)
                        if bounded and f in P.matrix_positive_part:  # f(A) / (c + f(A)): in [0, 1)
                            return self.bin("/", out, self.bin("+", self.num(positive=True), self.call(f.name, A)))
                        return self.call("tanh", out) if bounded else out
                    opts.append((1, reduce_matrix))
        return self.maybe_paren(self.weighted(opts)())

    # --- vectors ---
    def vec(self, d, ctx, depth) -> Node:
        """A vector of size d (d must be producible from ctx)."""
        names = [n for n, _ in self.of(ctx, shape=(d,))]
        prod = self.producible(ctx)
        P = self.atoms
        opts = [(4 if names else 0, lambda: self.name(self.pick(names))),
                (0 if names else 1, lambda: self.witness(d, ctx))]
        if depth > 0:
            sub = lambda: self.vec(d, ctx, depth - 1)  # noqa: E731
            rows = [(n, s) for n, s in self.of(ctx, rank=2) if s[0] == d and s[1] in prod]
            cols = [(n, s) for n, s in self.of(ctx, rank=2) if s[1] == d and s[0] in prod]
            opts += [
                (2, lambda: self.bin(self.pick("+-"), sub(), sub())),
                (1, lambda: self.bin("*", sub(), sub())),
                (2, lambda: self.bin("*", self.sca(ctx, depth - 1), sub())),
                (1, lambda: self.bin("*", sub(), self.sca(ctx, depth - 1))),
                (1, lambda: self.bin("/", sub(), self.den(ctx, depth - 1))),
                # entrywise division by a provably positive vector; one that may be zero is refused
                (1, lambda: self.bin("/", sub(), self.positive(sub, ctx))),
                (0.3, lambda: self.bin("/", self.sca(ctx, depth - 1), self.positive(sub, ctx))),
                (self.mistake(0.05), lambda: self.bin("/", sub(), sub())),
                (1, lambda: self.bin(self.pick("+-"), sub(), self.sca(ctx, depth - 1))),
                (1, lambda: self.bin("-", self.sca(ctx, depth - 1), sub())),
                (1, lambda: self.neg(sub())),
                # the declared atoms: thresholds, ranges, elementwise by domain, smooth ones
                (2 if P.thresholds else 0, lambda: self.apply(self.choose(P.thresholds), sub, ctx)),
                (1 if P.ranges else 0, lambda: self.apply(self.choose(P.ranges), sub, ctx)),
                (2 if P.elementwise["real"] else 0, lambda: self.apply(self.choose(P.elementwise["real"]), sub, ctx)),
                (1 if P.elementwise["bounded"] else 0,
                 lambda: self.apply(self.choose(P.elementwise["bounded"]), sub, ctx)),
                (0.5 if P.elementwise["positive"] else 0,
                 lambda: self.apply(self.choose(P.elementwise["positive"]), sub, ctx)),
                (1 if P.smooth else 0, lambda: self.apply(self.choose(P.smooth), sub, ctx)),
                (0.5 if P.smooth_domain else 0, lambda: self.apply(self.choose(P.smooth_domain), sub, ctx)),
                (0.5 if P.smooth_params else 0, lambda: self.apply(self.choose(P.smooth_params), sub, ctx)),
                (1, lambda: self.call(self.pick(["softmax", "normalize", "sparsemax"]), sub())),
                (0.5, lambda: self.bin("@", self.call("eye", self.name(d)), sub())),
                (0.3 if "var" in ctx else 0, lambda: self.call("softss", sub(), self.den(ctx, 0), self.num(positive=True),
                                        Node(ATOM, self.pick(["13", "50", "100"])))),
            ]
            if rows:
                def mv():
                    n, (a, b) = self.pick(rows)
                    return self.bin("@", self.name(n), self.vec(b, ctx, depth - 1))
                opts.append((3, mv))
            if cols:
                def mtv():
                    n, (a, b) = self.pick(cols)
                    v = self.vec(a, ctx, depth - 1)
                    return self.bin("@", self.T(self.name(n)), v) if self.chance(0.7) else self.bin("@", v, self.name(n))
                opts.append((2, mtv))
            squares = [(n, s) for n, s in self.of(ctx, rank=2) if s[1] == d]
            if squares:
                def solve():
                    n, (a, b) = self.pick(squares)
                    gram = self.bin("@", self.T(self.name(n)), self.name(n))
                    spd = self.bin("+", self.bin("*", self.num(positive=True), self.call("eye", self.name(d))), gram)
                    return self.call("solve", spd, sub())
                opts.append((0.5, solve))
            if rows:
                opts.append((0.3, lambda: self.call("rowsqnorm", self.name(self.pick(rows)[0]))))
            mats = self.mat_options(d, None, ctx)
            if mats:
                def matexpr():
                    e = self.pick([shape[1] for _, shape in mats])
                    return self.bin("@", self.mat(d, e, ctx, depth - 1), self.vec(e, ctx, depth - 1))
                opts.append((1, matexpr))

                def lse_rows():  # one value per row of a d x e matrix
                    e = self.pick([shape[1] for _, shape in mats])
                    return self.call("logsumexp", self.mat(d, e, ctx, depth - 1), Node(ATOM, "axis = 1"))
                opts.append((0.3, lse_rows))
        return self.maybe_paren(self.weighted(opts)())

    # --- matrices ---
    def mat_options(self, a, b, ctx):
        """Matrix shapes (a, e) buildable from names (directly or transposed); e == b when given."""
        prod = self.producible(ctx)
        out = []
        for n, s in self.of(ctx, rank=2):
            for shape in (s, (s[1], s[0])):
                if shape[0] == a and (b is None or shape[1] == b) and shape[1] in prod:
                    out.append((n, shape))
        return out

    def mat_named(self, shape, ctx) -> bool:
        a, b = shape
        return any(s in ((a, b), (b, a)) for _, s in self.of(ctx, rank=2))

    def scaling(self, ctx):
        """The context of a scalar that scales a matrix: mostly the names that are the same for every sample
        (a per-sample scalar times a per-sample matrix is refused), sometimes all of ctx."""
        return ctx if self.chance(0.2) else ctx & {"param", "hyper", "let"}

    def mat(self, a, b, ctx, depth) -> Node:
        named = [(n, s) for n, s in self.of(ctx, rank=2) if s in ((a, b), (b, a))]
        opts = []
        for n, s in named:
            opts.append((3, (lambda n=n, s=s: self.name(n) if s == (a, b) else self.T(self.name(n)))))
        if a == b:
            opts.append((1, lambda: self.call("eye", self.name(a))))
        if not opts:
            raise ValueError(f"no matrix of shape {a}x{b}")
        base = self.weighted(opts)
        if depth <= 0:
            return base()
        sub = lambda: self.mat(a, b, ctx, depth - 1)  # noqa: E731
        P = self.atoms
        opts2 = [
            (3, base),
            (1, lambda: self.bin(self.pick("+-"), sub(), sub())),
            (1, lambda: self.bin("*", self.sca(self.scaling(ctx), depth - 1), sub())),
            (1, lambda: self.bin("/", sub(), self.den(self.scaling(ctx), 0))),
            (0.5, lambda: self.bin("*", sub(), sub())),
            (0.5, lambda: self.bin("+", sub(), self.sca(ctx, 0))),
            (0.5, lambda: self.neg(sub())),
            # the declared atoms whose shape rule takes a matrix (entrywise ones, svt, rowsoft, ...)
            (0.7 if P.matrix_elementwise["real"] else 0,
             lambda: self.apply(self.choose(P.matrix_elementwise["real"]), sub, ctx)),
            (0.2 if P.matrix_elementwise["bounded"] else 0,
             lambda: self.apply(self.choose(P.matrix_elementwise["bounded"]), sub, ctx)),
            (0.3 if P.matrix_smooth else 0, lambda: self.apply(self.choose(P.matrix_smooth), sub, ctx)),
            (0.2 if P.matrix_smooth_params else 0, lambda: self.apply(self.choose(P.matrix_smooth_params), sub, ctx)),
            (0.5 if P.matrix_thresholds else 0, lambda: self.apply(self.choose(P.matrix_thresholds), sub, ctx)),
            (0.2 if P.matrix_ranges else 0, lambda: self.apply(self.choose(P.matrix_ranges), sub, ctx)),
            (0.5, lambda: self.call("rownormalize", sub())),
            (0.5, lambda: self.bin("/", sub(), self.positive(sub, ctx))),
            (0.5, lambda: self.call("softmax", sub(), Node(ATOM, f"axis = {self.pick('01')}"))),
            (self.mistake(0.03), lambda: self.call("softmax", sub(), Node(ATOM, self.pick(["axis = 2", "dim = 1"])))),
        ]
        if a == b:  # a square matrix from a vector
            opts2.append((0.3, lambda: self.call("diag", self.vec(a, ctx, depth - 1))))
        mids = {s[1] for n, s in self.mat_options(a, None, ctx)} & {s[0] for n, s in self.mat_options(b, None, ctx)}
        if mids:
            def mm():
                e = self.pick(sorted(mids))
                return self.bin("@", self.mat(a, e, ctx, depth - 1), self.T(self.mat(b, e, ctx, depth - 1)))
            opts2.append((1, mm))
        return self.maybe_paren(self.weighted(opts2)())
