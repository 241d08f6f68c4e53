"""Differential fuzzing of the whole compiler: random well-typed programs and mutated examples,
compiled, run, and compared with the numpy reference evaluator (dpc.reference).

    python benchmarks/fuzz.py --programs 2000 [--seed 0] [--jobs 2] [--out DIR] [--mutate-share 0.3]

Every program runs in a worker process (forked from this one, one torch thread, float64) under a
timeout of 5 s per phase (compile, check, run, reference); a program past it is a `hang` and only its
worker is killed and replaced (a hang is run once more at the end, alone, before it counts). Outcomes:

  ok                compiled (dpc.api.compile_source), imported, constructed (random params with
                    normalised columns; default hypers or, half the time, hypers scaled by [0.5, 2];
                    steps=min(T, 4)), ran on a batch of 3, equal to dpc.reference.evaluate within 1e-9
                    of the output's scale (forward and trace=True), forward(steps=s) equal to the
                    trace's layer s, and `objective` equal to dpc.reference.evaluate_objective
  rejected          a DpcError `FILE:LINE:COL: error: ...` naming the right line with the caret under
                    the column (or an error about the invocation: --set); also a ValueError that the
                    generated constructor raises itself (`raise ValueError`: the values break what the
                    derivation assumes, e.g. an infinite Lipschitz bound)
  too_large         dims too large to run: compiled, not run
  bad_error         a DpcError without LINE:COL for a program mistake, or with a wrong line or caret
  crash             any other exception while compiling (RecursionError included), or a dead worker
  hang              past the timeout (twice)
  import_fail       the generated source does not exec, or defines no single network class
  construct_fail    the constructor raised
  run_fail          forward raised, returned the wrong shape, or non-finite values where the
                    reference is finite
  mismatch          differs from dpc.reference (or forward(steps=s) from the trace)
  reference_missing dpc.reference raised (ReferenceError: no rule for an IR node; or anything else)
  check_disagrees   `dpc check FILE [--set ...]` (in-process) accepts what compile rejects or the
                    reverse, reports another first error, or fails internally

Until dpc.reference exists, `ok` means "ran, not compared" (the summary says so).
With --out DIR every failing program is written as DIR/<outcome>_<n>.dp with DIR/<outcome>_<n>.txt
(the error or the difference); the first few of each kind are shrunk (chunks of lines, then of tokens
deleted while the kind stays the same) and DIR/summary.md lists the kinds with one reproducer each.

Generation (class Gen) builds programs from the typing rules of compiler/lower.py and the ATOMS
table: objective programs (LASSO and relatives, constraints, derive proxgrad/fista/gd/closed,
relax), k-means style closed forms (sum_j, relax onehot/binary), update programs (one state or a
block of simultaneous states with lets, ISTA-like thresholded affine updates or random
expressions), programs without params, deep random expressions, and every directive (unroll, learn
weights tied/untied/coupled, learn stepsizes, learn NAME [tied | untied], adapt gates/support, output NAME or
EXPR; the copies of `learn NAME untied` are scaled apart and given to the reference). Mutation
(mutate) edits examples and generated programs at the text level: lines, tokens, numbers, names,
odd characters, deep nesting.
"""
import argparse
import collections
import contextlib
import dataclasses
import importlib
import inspect
import io
import keyword
import math
import os
import pathlib
import random
import re
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

OUTCOMES = ("ok", "rejected", "too_large", "bad_error", "crash", "hang", "import_fail", "construct_fail",
            "run_fail", "mismatch", "reference_missing", "check_disagrees", "ill_conditioned")
PASSING = ("ok", "rejected", "too_large", "ill_conditioned")
FILE = "fuzz.dp"
BATCH = 3
MAX_STEPS = 4
RTOL = 1e-9
MAX_DIM = 512            # a literal dim above this is too large to run
MAX_ELEMENTS = 10 ** 6   # ... and so is a declaration with more entries


# ============================================================================================
# Generation of well-typed programs
# ============================================================================================

# expression precedence, as in grammar/dp.lark: sum < product < unary < power < postfix < atom
SUM, PROD, UN, POW, POST, ATOM = range(6)

LANGUAGE_KEYWORDS = {"network", "dims", "input", "param", "hyper", "let", "var", "minimize", "subject", "to",
                     "update", "derive", "relax", "adapt", "unroll", "learn", "output", "in", "R"}


def _reserved() -> set[str]:
    from dpc import atoms
    from dpc.lower import RESERVED
    return set(RESERVED) | set(atoms.ATOMS) | LANGUAGE_KEYWORDS | {"weights", "stepsizes", "sum"}


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


class Gen:
    """A random well-typed program. `rng` is a random.Random (hypothesis' st.randoms() works too)."""

    # names the emitter and the passes also invent (W, S, theta, b, gamma, U_i, c, i, f, k, zs, ...) are
    # among them: a program may use them first
    DIM_NAMES = ["m", "n", "k", "d", "p", "q", "r", "h", "nx", "dim", "N", "width", "T", "S"]
    INPUT_NAMES = ["x", "y", "u", "obs", "x2", "signal", "xs", "W", "b"]
    PARAM_NAMES = ["D", "A", "B", "C", "M", "P", "b", "v", "E", "Phi", "K", "w0", "c0", "W", "S", "theta", "U_i",
                   "V_f", "a_i", "Wx", "gamma"]
    HYPER_NAMES = ["lam", "mu", "tau", "alpha", "beta", "eps", "rho", "kappa", "gam", "lo_", "hi_", "eta", "theta",
                   "gamma", "W1", "b_i"]
    LET_NAMES = ["L", "G", "W0", "c", "Lip", "stepsize", "Q", "Wa", "g0", "scale", "H", "bias", "W", "S", "theta",
                 "b", "Wx", "U_ix_b_i", "L1"]
    VAR_NAMES = ["z", "y", "s", "w", "h", "q", "a", "t", "c", "zz", "state", "i", "f", "c_next", "k"]
    TEMP_NAMES = ["v", "u", "g", "r", "z_next", "t_next", "tmp", "grad", "e", "k", "zs", "i", "f", "c", "c_next",
                  "ys", "W"]

    def __init__(self, rng: random.Random, mistakes: bool = True):
        self.r = rng
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
                (1 if vec_dims else 0, lambda: self.bin("+", self.num(positive=True), self.call(
                    self.pick(["sqnorm", "norm1", "norm2"]), self.vec(self.pick(vec_dims), ctx, depth - 1)))),
            ]
        return self.weighted(opts)()

    def sca(self, ctx, depth, bounded=True) -> Node:
        """A scalar; bounded ones (|s| of order 1) unless bounded=False."""
        names = [n for n, _ in self.of(ctx, shape=())]
        vec_dims = list(self.producible(ctx))
        mats = self.of(ctx, rank=2)
        opts = [(3, lambda: self.num()), (3 if names else 0, lambda: self.name(self.pick(names)))]
        if depth > 0:
            d = lambda: self.pick(vec_dims)  # noqa: E731
            opts += [
                (2, lambda: self.bin(self.pick("+-"), self.sca(ctx, depth - 1, bounded),
                                     self.sca(ctx, depth - 1, bounded))),
                (1, lambda: self.bin("*", self.sca(ctx, depth - 1, bounded), self.sca(ctx, depth - 1))),
                (1, lambda: self.bin("/", self.sca(ctx, depth - 1, bounded), self.den(ctx, depth - 1))),
                (1, lambda: self.neg(self.sca(ctx, depth - 1, bounded))),
                (2, lambda: self.call(self.pick(["tanh", "sigmoid"]), self.sca(ctx, depth - 1, False))),
                (1, lambda: self.call(self.pick(["abs", "relu"]), self.sca(ctx, depth - 1, bounded))),
                (1, lambda: self.call("exp", self.call("tanh", self.sca(ctx, depth - 1, False)))),
                (1, lambda: self.call("log", self.den(ctx, depth - 1))),
                (1, lambda: self.power(self.sca(ctx, 0, bounded), Node(ATOM, self.pick(["2", "3"])))),
                # thresholds and clamps of a scalar: the shape rules allow them
                (self.mistake(0.1), lambda: self.call(self.pick(["soft", "softpos", "hard"]),
                                                      self.sca(ctx, depth - 1, bounded), self.den(ctx, 0))),
                (self.mistake(0.1), lambda: self.call("clamp", self.sca(ctx, depth - 1, False),
                                                      self.num(small=True), self.num(positive=True))),
            ]
            if vec_dims:
                def reduce():
                    v = self.vec(d(), ctx, depth - 1)
                    f = self.pick(["sqnorm", "norm1", "norm2", "sum", "sum", "norm0"])
                    out = self.call(f, v)
                    if bounded and f != "sum":
                        return self.bin("/", out, self.bin("+", self.num(positive=True), self.call(f, v)))
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
                        (1, lambda: self.call(self.pick(["tanh", "abs", "sigmoid"]), ia)),
                    ])()
                    out = Node(SUM, f"sum_{j} {wrap(body, PROD)}")
                    return self.call("tanh", out) if bounded else out

                opts += [
                    (2, reduce), (1, dot), (0.7, index_sum),
                    (0.5, lambda: self.call("entropy", self.call("softmax", self.vec(d(), ctx, depth - 1)))),
                    (0.3, lambda: self.call("bentropy", self.call("sigmoid", self.vec(d(), ctx, depth - 1)))),
                ]
            if mats:
                opts.append((0.5, lambda: self.call("opnorm", self.name(self.pick(mats)[0]))))
        return self.maybe_paren(self.weighted(opts)())

    # --- vectors ---
    def vec(self, d, ctx, depth) -> Node:
        """A vector of size d (d must be producible from ctx)."""
        names = [n for n, _ in self.of(ctx, shape=(d,))]
        prod = self.producible(ctx)
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
                (1, lambda: self.bin(self.pick("+-"), sub(), self.sca(ctx, depth - 1))),
                (1, lambda: self.bin("-", self.sca(ctx, depth - 1), sub())),
                (1, lambda: self.neg(sub())),
                (2, lambda: self.call(self.pick(["soft", "softpos", "hard"]), sub(), self.den(ctx, 0))),
                (1, lambda: self.call("clamp", sub(), self.neg(self.num(positive=True, small=True)),
                                      self.num(positive=True))),
                (2, lambda: self.call(self.pick(["relu", "sigmoid", "tanh", "abs"]), sub())),
                (1, lambda: self.call("exp", self.call(self.pick(["tanh", "sigmoid"]), sub()))),
                (0.5, lambda: self.call("log", self.bin("+", self.num(positive=True), self.call("abs", sub())))),
                (1, lambda: self.call(self.pick(["square", "softplus", "logcosh"]), sub())),  # smooth atoms
                (0.5, lambda: self.call("log1p", self.call("abs", sub()))),
                (0.5, lambda: self.call("huber", sub(), self.den(ctx, 0))),
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
        opts2 = [
            (3, base),
            (1, lambda: self.bin(self.pick("+-"), sub(), sub())),
            (1, lambda: self.bin("*", self.sca(ctx, depth - 1), sub())),
            (1, lambda: self.bin("/", sub(), self.den(ctx, 0))),
            (0.5, lambda: self.bin("*", sub(), sub())),
            (0.5, lambda: self.bin("+", sub(), self.sca(ctx, 0))),
            (0.5, lambda: self.neg(sub())),
            (0.7, lambda: self.call(self.pick(["relu", "tanh", "abs", "sigmoid"]), sub())),
            (0.3, lambda: self.call(self.pick(["square", "softplus", "logcosh"]), sub())),
            (0.2, lambda: self.call("huber", sub(), self.den(ctx, 0))),
            (0.3, lambda: self.call("soft", sub(), self.den(ctx, 0))),
            (0.5, lambda: self.call("rownormalize", sub())),
        ]
        inner = [(n, s) for n, s in self.of(ctx, rank=2)]
        mids = {s[1] for n, s in self.mat_options(a, None, ctx)} & {s[0] for n, s in self.mat_options(b, None, ctx)}
        if mids:
            def mm():
                e = self.pick(sorted(mids))
                return self.bin("@", self.mat(a, e, ctx, depth - 1), self.T(self.mat(b, e, ctx, depth - 1)))
            opts2.append((1, mm))
        del inner
        return self.maybe_paren(self.weighted(opts2)())

    # --- declarations ---
    def header(self, family):
        self.lines.append(f"network {self.pick(['Net', 'Fuzz', 'LISTA', 'P' + str(self.r.randrange(100)), 'K_means', 'net2'])}")

    def make_dims(self, count):
        """count sizes: mostly declared dim names, sometimes an integer literal (R[3])."""
        literals = ["2", "3", "5"] + (["1"] if self.mistakes and self.chance(0.3) else [])  # R[n, 1] is refused
        sizes = [self.fresh(self.DIM_NAMES) if self.chance(0.9) else self.pick(literals) for _ in range(count)]
        names = [d for d in sizes if not d.isdigit()]
        self.dims = list(sizes)
        if not names:
            return sizes
        if self.chance(0.85):
            self.lines.append("dims   " + ", ".join(names))
        else:  # dims listed twice over several lines
            self.lines.append("dims " + names[0])
            if names[1:]:
                self.lines.append("dims " + ", ".join(names[1:]))
        if self.chance(0.1):  # a literal dim beside the named ones
            self.dims.append(self.pick(["2", "3", "4"]))
        return sizes

    def decl(self, kind, name, shape, value: Node | None = None, typed=False):
        self.declare(name, shape, kind)
        kw = {"input": "input ", "param": "param ", "hyper": "hyper ", "let": "let   ", "var": "var   "}[kind]
        if kind in ("input", "param"):
            self.lines.append(f"{kw}{name} : {self.type_text(shape)}")
        elif kind == "hyper":
            self.lines.append(f"{kw}{name} = {value.text}")
        elif kind == "let":
            t = f" : {self.type_text(shape)}" if typed else ""
            self.lines.append(f"{kw}{name}{t} = {value.text}")
        else:
            start = f" = {value.text}" if value is not None else ""
            self.lines.append(f"{kw}{name} : {self.type_text(shape)}{start}")

    def hypers(self, count, names=None):
        out = []
        for i in range(count):
            name = names[i] if names and i < len(names) and names[i] not in self.taken else self.fresh(self.HYPER_NAMES)
            self.taken.add(name)
            value = self.weighted([
                (6, lambda: self.num(positive=True)),
                (1, lambda: self.bin("/", Node(ATOM, "1"), Node(ATOM, self.pick(["3", "7", "10"])))),
                (1, lambda: self.power(Node(ATOM, "2"), self.neg(Node(ATOM, "1")))),
                (1, lambda: self.bin("*", Node(ATOM, "2"), Node(ATOM, "0.05"))),
            ])()
            self.decl("hyper", name, (), value)
            out.append(name)
        return out

    def lets(self, count, ctx=frozenset({"param", "hyper", "let"})):
        mats = self.of({"param"}, rank=2)
        for _ in range(count):
            name = self.fresh(self.LET_NAMES)
            kind = self.weighted([(3, "lip"), (2, "scalar"), (2, "matrix"), (1, "vector"), (0.4, "analytic")])
            typed = self.chance(0.2)
            if kind == "lip" and mats:
                n, _ = self.pick(mats)
                value = self.weighted([(3, lambda: self.power(self.call("opnorm", self.name(n)), Node(ATOM, "2"))),
                                       (1, lambda: self.call("opnorm", self.bin("@", self.T(self.name(n)),
                                                                                 self.name(n)))),
                                       (1, lambda: self.bin("+", self.power(self.call("opnorm", self.name(n)),
                                                                            Node(ATOM, "2")), self.num(True)))])()
                self.decl("let", name, (), value, typed)
                self.positive_lets.add(name)
            elif kind in ("lip", "scalar"):
                if self.chance(0.5):
                    self.decl("let", name, (), self.den(ctx, 2), typed)
                    self.positive_lets.add(name)
                else:
                    self.decl("let", name, (), self.sca(ctx, 2), typed)
            elif kind == "matrix" and mats:
                n, (a, b) = self.pick(mats)
                shape = self.pick([(a, b), (b, a), (b, b)])
                value = self.weighted([
                    (2, lambda: self.mat(*shape, ctx, 2)),
                    (1, lambda: self.bin("/", self.mat(*shape, ctx, 1), self.den(ctx, 1))),
                ])() if shape != (b, b) else self.weighted([
                    (2, lambda: self.bin("@", self.T(self.name(n)), self.name(n))),
                    (1, lambda: self.bin("-", self.call("eye", self.name(b)), self.bin(
                        "/", self.bin("@", self.T(self.name(n)), self.name(n)), self.den(ctx, 1)))),
                    (1, lambda: self.mat(b, b, ctx, 2)),
                ])()
                self.decl("let", name, shape, value, typed)
            elif kind == "vector" and self.producible(ctx):
                d = self.pick(sorted(self.producible(ctx)))
                self.decl("let", name, (d,), self.vec(d, ctx, 2), typed)
            elif kind == "analytic" and mats:
                n, shape = self.pick(mats)
                self.decl("let", name, shape, self.call("analytic", self.name(n)), typed)
            else:
                self.decl("let", name, (), self.den(ctx, 1), typed)
                self.positive_lets.add(name)

    def start(self, shape, ctx) -> Node | None:
        if not shape:
            return self.weighted([(3, lambda: Node(ATOM, "1")), (2, lambda: None), (2, lambda: self.num()),
                                  (1, lambda: self.sca(ctx, 1))])()
        if len(shape) == 2:
            opts = [(3, lambda: None), (2, lambda: Node(ATOM, "0")), (1, lambda: self.num())]
            if self.mat_named(shape, ctx) or shape[0] == shape[1]:
                opts.append((2, lambda: self.mat(*shape, ctx - {"input"}, 1)))
            return self.weighted(opts)()
        d = shape[0]
        opts = [(3, lambda: None), (3, lambda: Node(ATOM, "0")), (2, lambda: self.num()),
                (1, lambda: self.sca(ctx - {"input"}, 1))]
        if self.can_vec(d, ctx):
            opts.append((3, lambda: self.vec(d, ctx, 1)))
        return self.weighted(opts)()

    # --- directives ---
    def directives(self, states, temps=(), iterative=True, learnable=(), lista=1.0, canonical=0.8):
        """unroll, learn, adapt, output lines. lista: how likely the LISTA-family directives are (1 when the
        update has a threshold atom for them to act on, small otherwise: mostly rejected then)."""
        lines = []
        unroll = None
        if iterative and self.chance(0.98) or not iterative and self.chance(self.mistake(0.04)):
            unroll = self.weighted([(8, lambda: self.r.randint(1, 6)), (1, lambda: 16),
                                    (0.3, lambda: 100), (self.mistake(0.2), lambda: self.pick([0, 10 ** 6])),
                                    (0.6, lambda: "until")])()
            if unroll == "until":  # run to convergence (each sample on its own), maybe the implicit gradient
                options = self.weighted([(1, ""), (2, "(tol = 1e-6)"), (2, "(tol = 1e-3, max = 50)"), (1, "(max = 6)"),
                                         (1, "(tol = 1e-9, max = 200)"), (self.mistake(0.3), "(tol = 0)"),
                                         (self.mistake(0.3), "(max = 2.5)"), (self.mistake(0.3), "(1e-6)")])
                lines.append(f"unroll until{options}")
                if self.chance(0.5):
                    lines.append(self.weighted([(3, "backward implicit"), (1, "backward unrolled"),
                                                (self.mistake(0.2), "backward sideways")]))
            else:
                lines.append(f"unroll {unroll}")
        learn = []
        if self.chance(0.55 * lista):
            learn.append(self.weighted([
                (4, "weights"), (2, "weights tied"), (2, "weights untied"), (1.5, "weights coupled"),
                (0.5, "weights coupled tied"), (1.5, "stepsizes"), (0.7, "stepsizes tied"),
                (self.mistake(0.3), "weights sideways")]))
        if learnable and self.chance(0.35):
            learn += self.r.sample(list(learnable), self.r.randint(1, min(2, len(learnable))))
            if self.chance(0.4):  # per-layer copies (learn lam, D untied unties both), or said tied
                learn[-1] += self.weighted([(3, " untied"), (1, " tied")])
        if self.chance(self.mistake(0.02)):
            learn.append(self.pick([s for s in states] or ["z"]))  # a var: rejected
        if learn:
            if self.chance(0.7):
                lines.append("learn  " + ", ".join(learn))
            else:
                lines += ["learn  " + item for item in learn]
        if self.chance(0.15 * lista):
            opts = self.pick(["", "(p = 1.2, pmax = 13)", "(p = 5)", "(pmax = 50)", "(p = 0, pmax = 0)",
                              "(p = 30, pmax = 100)"] + (["(p = 1.2, pmax = 13, q = 1)"] if self.mistakes else []))
            lines.append(f"adapt  support{opts}")
        if self.chance(0.15 * lista):
            lines.append("adapt  gates" + self.pick(["", "(init = ista)", "(init = xavier)", "(init = ista)"]))
        if self.chance(0.5):
            outs = list(states) * 4 + list(temps) + (["nothere"] if self.chance(self.mistake(0.05)) else [])
            if outs:
                lines.append(f"output {self.pick(outs)}")
        elif states and self.chance(0.3):
            lines.append(f"output {self.output_expr(states)}")
        if not self.chance(canonical):
            self.r.shuffle(lines)
        if self.chance(self.mistake(0.03)) and lines:
            lines.append(self.pick(lines))  # a directive twice
        return lines

    def output_expr(self, states) -> str:
        """`output EXPR`: a state plus or minus a vector of the states, inputs, params, hypers and lets."""
        s = self.pick(list(states))
        shape = next((sh for n, sh, k in self.syms if n == s), ())
        if len(shape) != 1:
            return s
        other = self.vec(shape[0], frozenset({"input", "param", "hyper", "let", "var"}), self.r.randint(0, 2))
        return self.bin(self.pick("+-"), self.name(s), other).text

    # --- families ---
    def program(self) -> str:
        family = self.weighted([(3, self.objective_program), (1, self.kmeans_program),
                                (1, self.quadratic_program), (4, self.update_program),
                                (0.6, self.paramless_program), (1.5, self.expression_program),
                                (1, self.composite_program)])
        family()
        text = "\n".join(self.lines) + "\n"
        if self.chance(0.1):
            text = self.decorate(text)
        return text

    def decorate(self, text):
        """Comments, blank lines, continuation lines: same program."""
        out = []
        for line in text.splitlines():
            if self.chance(0.1):
                out.append("")
            if self.chance(0.1):
                line += "   # " + self.pick(["note", "a comment", "x <- y", "unroll 3"])
            if " = " in line and self.chance(0.05):
                head, _, tail = line.partition(" = ")
                line = head + " = \\\n    " + tail
            out.append(line)
        return "\n".join(out) + "\n"

    def base_decls(self, ndims=2):
        names = self.make_dims(ndims)
        return names

    def objective_program(self):
        self.header("objective")
        m, n = self.base_decls(2)
        x = self.fresh(self.INPUT_NAMES)
        self.decl("input", x, (m,))
        D = self.fresh(["D", "A", "Phi", "M"])
        self.decl("param", D, (m, n))
        extra = {}
        if self.chance(0.25):
            extra["y"] = self.fresh(self.INPUT_NAMES)
            self.decl("input", extra["y"], (n,))
        if self.chance(0.2):
            p = self.fresh(self.DIM_NAMES)
            self.dims.append(p)
            at = next((i for i, ln in enumerate(self.lines) if ln.startswith("dims")), None)
            if at is None:
                self.lines.insert(1, f"dims {p}")
            else:
                self.lines[at] += f", {p}"
            extra["A"] = self.fresh(["A", "B", "E", "K"])
            self.decl("param", extra["A"], (p, n))
        if self.chance(0.2):
            extra["b"] = self.fresh(["b", "c0", "w0"])
            self.decl("param", extra["b"], (self.pick([m, n]),))
        lam, mu = self.hypers(2, ["lam", "mu"])
        if self.chance(0.5):
            self.hypers(1)
        L = self.fresh(["L", "Lip"])
        self.decl("let", L, (), self.power(self.call("opnorm", self.name(D)), Node(ATOM, "2")))
        self.positive_lets.add(L)
        if self.chance(0.3):
            self.lets(1)
        z = self.fresh(["z", "w", "s", "h"])
        self.decl("var", z, (n,), self.start((n,), frozenset({"input", "param", "hyper", "let"})))
        if self.chance(self.mistake(0.03)):
            z2 = self.fresh(self.VAR_NAMES)
            self.decl("var", z2, (n,), None)  # two vars: derive handles one
        ctx = frozenset({"param", "hyper", "let"})
        coef = lambda: self.weighted([(3, lambda: Node(ATOM, "0.5")), (2, lambda: None),  # noqa: E731
                                      (1, lambda: self.den(ctx, 1))])()

        def scaled(c, term):
            if c is None:
                return term
            return self.bin("*", c, term) if self.chance(0.8) else self.bin("*", term, c)

        resid = self.weighted([
            (4, lambda: self.bin("-", self.name(x), self.bin("@", self.name(D), self.name(z)))),
            (2, lambda: self.bin("-", self.bin("@", self.name(D), self.name(z)), self.name(x))),
            (1, lambda: self.bin("-", self.bin("-", self.name(x), self.bin("@", self.name(D), self.name(z))),
                                 self.num())),
            (1 if "b" in extra and self.decl_shape(extra.get("b")) == (m,) else 0,
             lambda: self.bin("+", self.bin("-", self.bin("@", self.name(D), self.name(z)), self.name(x)),
                              self.name(extra["b"]))),
            (0.5, lambda: self.bin("-", self.name(x), self.bin("@", self.name(D), self.bin(
                "+", self.name(z), self.num())))),
        ])()
        smooth = [scaled(coef(), self.call("sqnorm", resid))]
        if self.chance(0.5):
            smooth[0] = Node(PROD, f"{wrap(self.call('sqnorm', resid), PROD)}{self.op('/')}2") \
                if self.chance(0.2) else smooth[0]
        if "y" in extra:
            smooth.append(scaled(coef(), self.call("sqnorm", self.bin("-", self.name(z), self.name(extra["y"])))))
        if "A" in extra:
            smooth.append(scaled(coef(), self.call("sqnorm", self.bin("@", self.name(extra["A"]), self.name(z)))))
        if "b" in extra and self.decl_shape(extra["b"]) == (n,) and self.chance(0.7):
            smooth.append(self.bin("@", self.name(extra["b"]), self.name(z)))
        if self.chance(0.15):
            smooth.append(scaled(self.num(positive=True, small=True), self.call("sum", self.name(z))))
        if self.chance(0.1):
            smooth.append(self.bin("@", self.bin("@", self.T(self.name(D)), self.name(x)), self.name(z)))
        if self.chance(0.2):  # smooth but not quadratic, or quadratic in another form: dpc's calculus
            zz = self.name(z)
            smooth.append(self.weighted([
                (1, lambda: self.bin("*", Node(ATOM, "0.1"), self.call("sum", self.call("exp", self.bin(
                    "*", Node(ATOM, "0.1"), zz))))),
                (1, lambda: self.bin("*", Node(ATOM, "0.5"), self.call("sqnorm", self.call("tanh", zz)))),
                (1, lambda: self.power(self.bin("@", self.bin("@", self.T(self.name(D)), self.name(x)), zz),
                                       Node(ATOM, "2"))),
                (1, lambda: self.call("sqrt", self.bin("+", Node(ATOM, "1"), self.call("sqnorm", zz)))),
                (1, lambda: self.call("log", self.bin("+", Node(ATOM, "1"), self.call("sqnorm", self.bin(
                    "-", self.bin("@", self.name(D), zz), self.name(x)))))),
                (1, lambda: Node(SUM, f"sum_j {wrap(self.power(Node(POST, f'({D} @ {z} - {x})[j]'), Node(ATOM, '2')), PROD)}")),
                (1, lambda: self.bin("*", self.name(mu), self.power(self.call("sum", zz), Node(ATOM, "2")))),
                (1, lambda: self.call("sqnorm", self.bin("-", self.bin("*", self.name(lam), zz), self.bin(
                    "@", self.T(self.name(D)), self.name(x))))),
                # smooth entrywise atoms of affine maps (dpc's own calculus; a Lipschitz bound or a step error)
                (1, lambda: self.call("sum", self.call("huber", self.bin("-", self.name(x), self.bin(
                    "@", self.name(D), zz)), self.den(ctx, 0)))),
                (1, lambda: self.bin("-", self.call("sum", self.call("softplus", self.bin("@", self.name(D), zz))),
                                     self.bin("@", self.name(x), self.bin("@", self.name(D), zz)))),
                (1, lambda: self.call("sum", self.call("softplus", self.bin("*", self.neg(self.name(x)), self.bin(
                    "@", self.name(D), zz))))),
                (1, lambda: self.bin("*", self.den(ctx, 0), self.call("sum", self.call("log1p", self.call(
                    "square", self.bin("@", self.name(D), zz)))))),
                (1, lambda: self.call("sum", self.call(self.pick(["logcosh", "square", "tanh", "sigmoid"]),
                                                       self.bin("-", zz, self.num())))),
            ])())
        penalties = []
        kind = self.weighted([(5, "l1"), (1.5, "ridge"), (1.5, "l1+ridge"), (1, "l0"), (1, "none"),
                              (self.mistake(0.3), "bad")])
        if "l1" in kind:
            penalties.append(scaled(self.weighted([(4, lambda: self.name(lam)), (1, lambda: None),
                                                   (1, lambda: self.bin("/", self.name(lam), Node(ATOM, "2")))])(),
                                    self.call("norm1", self.name(z))))
        if "ridge" in kind:
            penalties.append(scaled(self.weighted([(3, lambda: self.name(mu)),
                                                   (1, lambda: self.bin("*", Node(ATOM, "0.5"), self.name(mu)))])(),
                                    self.call("sqnorm", self.name(z))))
        if kind == "l0":
            penalties.append(scaled(self.name(lam), self.call("norm0", self.name(z))))
        if kind == "bad":
            penalties.append(self.pick([self.call("norm2", self.name(z)),
                                        self.call("norm1", self.bin("@", self.name(D), self.name(z))),
                                        self.bin("*", self.name(lam), self.call("norm0", self.name(z)))]))
            penalties.append(self.call("norm1", self.name(z)))
        terms = smooth + penalties
        if self.chance(0.3):
            self.r.shuffle(terms)
        text = terms[0].text
        for t in terms[1:]:
            text = f"{text}{self.op('+')}{wrap(t, PROD)}"
        self.lines.append(f"minimize {text}")
        constraint = self.weighted([(6, None), (2, f"{z} >= 0"), (1, f"{z} in nonneg"),
                                    (1.5, f"{z} in box({self.num(small=True).text}, {self.num(positive=True).text})"),
                                    (1, f"{z} >= {self.neg(self.num(True, True)).text}, {z} <= 1"),
                                    (0.5, f"{z} <= {self.name(lam).text}"),
                                    (0.5, f"{z} in box(-{lam}, {lam})"), (0.3, f"{lam} >= {z}"),
                                    (0.4, f"{z} >= 0, {z} >= -{lam}"), (0.4, f"{z} <= 1, {z} <= {lam}"),
                                    (0.3, f"{z} >= -1, {z} <= 2, {z} in box(-{lam}, 1)"),
                                    (1, f"{z} in simplex"), (self.mistake(0.2), f"{z} in onehot")])
        if constraint:
            self.lines.append(f"subject to {constraint}")
        relaxed = kind == "l0" and self.chance(0.4)
        if relaxed:
            self.lines.append("relax  norm0 -> norm1")
        step = self.weighted([
            (3, lambda: f"(step = 1/{L})"), (2, lambda: ""), (1, lambda: f"(step = 0.5/{L})"),
            (1, lambda: f"(step = {self.den(ctx, 1).text})"), (self.mistake(0.2), lambda: "(step = 1, extra = 2)"),
            (self.mistake(0.3), lambda: f"(step = 1/{L} * {z})"),
        ])()
        smooth_only = kind in ("ridge", "none") and not constraint
        method = self.weighted([(5, "proxgrad"), (3, "fista"), (3 if smooth_only else self.mistake(0.5), "gd"),
                                (1.5 if smooth_only else self.mistake(0.3), "closed"), (self.mistake(0.1), "newton")])
        self.lines.append(f"derive {method}{step if method != 'closed' else ''}")
        states = [z] + (["y"] if method == "fista" and "y" not in self.taken else [])
        thresholded = method in ("proxgrad", "fista") and ("l1" in kind or kind == "l0" and (relaxed or not constraint)) \
            and constraint != f"{z} in simplex"
        learnable = [D, lam, mu] + [v for k, v in extra.items() if k in ("A", "b")] + \
            ([L] if self.chance(0.05) else [])
        self.lines += self.directives(states, iterative=method != "closed", learnable=learnable,
                                      lista=1.0 if thresholded else 0.1)

    def decl_shape(self, name):
        for n, s, _ in self.syms:
            if n == name:
                return s
        return None

    def kmeans_program(self):
        self.header("kmeans")
        d, k = self.base_decls(2)
        x = self.fresh(self.INPUT_NAMES)
        self.decl("input", x, (d,))
        C = self.fresh(["C", "M", "P", "K"])
        self.decl("param", C, (k, d))
        extra_b = None
        if self.chance(0.2):
            extra_b = self.fresh(["b", "w0"])
            self.decl("param", extra_b, (k,))
        (tau,) = self.hypers(1, ["tau"])
        if self.chance(0.3):
            self.hypers(1)
        s = self.fresh(["s", "a", "q", "z"])
        self.decl("var", s, (k,), None if self.chance(0.8) else Node(ATOM, "0"))
        j = self.pick(["j", "i", "jj", "c2"])
        row = Node(POST, f"{C}[{j}]")
        cost = self.weighted([
            (5, lambda: self.call("sqnorm", self.bin("-", self.name(x), row))),
            (2, lambda: self.call("sqnorm", self.bin("-", self.call("normalize", self.name(x)),
                                                     Node(POST, f"rownormalize({C})[{j}]")))),
            (1, lambda: self.call("norm1", self.bin("-", self.name(x), row))),
            (1, lambda: self.neg(self.bin("@", row, self.name(x)))),
            (1, lambda: self.bin("*", Node(ATOM, "0.5"), self.call("sqnorm", self.bin("-", row, self.name(x))))),
            (0.5, lambda: self.call("sqnorm", self.bin("-", self.bin("*", Node(ATOM, "2"), self.name(x)), row))),
            (0.5, lambda: self.bin("-", self.call("sqnorm", self.name(x)), self.bin(
                "*", Node(ATOM, "2"), self.bin("@", row, self.name(x))))),  # constant in j, then linear
            (0.5 if extra_b else 0, lambda: self.bin("+", Node(POST, f"{extra_b}[{j}]"),
                                                      self.call("sqnorm", self.bin("-", self.name(x), row)))),
            (0.3, lambda: self.power(self.bin("@", row, self.name(x)), Node(ATOM, "2"))),  # not affine: per index
            (0.3, lambda: self.call("sqnorm", self.bin("-", self.name(x), self.call("normalize", row)))),
        ])()
        first = Node(SUM, f"sum_{j} {wrap(self.bin('*', Node(POST, f'{s}[{j}]'), cost), PROD)}") \
            if self.chance(0.85) else Node(SUM, f"sum_{j} {wrap(self.bin('*', cost, Node(POST, f'{s}[{j}]')), PROD)}")
        terms = [first.text]
        if extra_b and self.chance(0.7):
            terms.append(wrap(self.bin("@", self.name(s), self.name(extra_b)), PROD))
        if self.chance(0.15):
            terms.append(wrap(self.bin("*", self.num(True, True), self.call("sum", self.name(s))), PROD))
        if self.chance(0.1):
            terms.append(wrap(self.bin("@", self.name(s), self.bin("@", self.name(C), self.name(x))), PROD))
        form = self.weighted([(5, "onehot_softmax"), (2, "onehot_sparsemax"), (1.5, "binary"), (1, "entropy"),
                              (1, "gini"), (1, "bentropy"), (0.3, "onehot_raw")])
        tauexpr = self.pick([tau, f"0.5*{tau}", "0.2"])
        if form == "entropy":
            terms.append(f"{tauexpr} * -entropy({s})" if self.chance(0.2) else f"-{tauexpr}*entropy({s})")
        if form == "gini":
            terms.append(f"{tauexpr}/2*sqnorm({s})")
        if form == "bentropy":
            terms.append(f"-{tauexpr}*bentropy({s})")
        text = terms[0]
        for t in terms[1:]:
            text += (" " + t if t.startswith("-") else " + " + t).replace("+ -", "- ")
        self.lines.append(f"minimize {text}")
        if form.startswith("onehot"):
            self.lines.append(f"subject to {s} in onehot")
            if form == "onehot_softmax":
                self.lines.append(f"relax  onehot -> softmax({self.pick([tau, 'tau = ' + tau, '0.5', tau + '/2'])})"
                                  .replace("tau = " + tau, f"tau = {tau}"))
            elif form == "onehot_sparsemax":
                self.lines.append("relax  onehot -> sparsemax" + self.pick(["", f"({tau})", "(tau = 2)", "(1)"]))
        elif form == "binary":
            self.lines.append(f"subject to {s} in binary")
            self.lines.append(f"relax  binary -> sigmoid({tau})")
        elif form in ("entropy", "gini"):
            self.lines.append(f"subject to {s} in simplex")
        else:
            self.lines.append(self.pick([f"subject to {s} in box(0, 1)", f"subject to {s} >= 0, {s} <= 1"]))
        self.lines.append(self.weighted([(10, "derive closed"), (1, "derive proxgrad(step = 0.1)")]))
        tail = []
        if self.chance(0.5):
            tail.append("learn  " + self.weighted([(3, C), (2, "weights"), (1, tau), (1, f"{C}, {tau}"),
                                                   (0.5, "weights tied"), (0.3, "weights untied")]))
        if self.chance(0.5):
            tail.append(f"output {s}")
        if self.chance(self.mistake(0.05)):
            tail.append("unroll 3")
        self.lines += tail

    def quadratic_program(self):
        self.header("quadratic")
        m, n = self.base_decls(2)
        x = self.fresh(self.INPUT_NAMES)
        self.decl("input", x, (m,))
        D = self.fresh(["D", "A", "Phi"])
        self.decl("param", D, (m, n))
        (mu,) = self.hypers(1, ["mu"])
        extra = None
        if self.chance(0.3):
            extra = self.fresh(["v", "b", "c0"])
            self.decl(self.pick(["param", "input"]), extra, (n,))
        z = self.fresh(["z", "w", "beta_"])
        self.decl("var", z, (n,), None)
        terms = [self.pick([f"0.5*sqnorm({x} - {D} @ {z})", f"sqnorm({D} @ {z} - {x})",
                            f"0.5 * sqnorm({x} - {D}@{z} - 1)"]),
                 self.pick([f"{mu}*sqnorm({z})", f"0.5*{mu}*sqnorm({z})", f"{mu} * sqnorm({z}) / 2",
                            f"sqnorm({z})"])]
        if extra and self.chance(0.8):
            terms.append(self.pick([f"{extra} @ {z}", f"0.5*sqnorm({z} - {extra})"]))
        if self.chance(0.1):
            terms.append(f"0.5*sqnorm({D} @ {z})")
        self.r.shuffle(terms)
        self.lines.append("minimize " + " + ".join(terms))
        self.lines.append("derive closed")
        tail = []
        if self.chance(0.4):
            tail.append("learn  " + self.pick([D, mu, f"{D}, {mu}", "weights"]))
        if self.chance(0.4):
            tail.append(f"output {z}")
        self.lines += tail

    def composite_program(self):
        """f(z) + c*norm1(K @ z) by derive admm / pdhg: total variation, analysis sparsity, the LASSO."""
        self.header("composite")
        m, n = self.base_decls(2)
        x = self.fresh(self.INPUT_NAMES)
        data = self.pick(["denoise", "denoise", "lasso"])
        self.decl("input", x, ((n if data == "denoise" else m),))
        D = None
        if data == "lasso":
            D = self.fresh(["D", "A", "Phi"])
            self.decl("param", D, (m, n))
        K = self.fresh(["Dd", "K", "G"])
        self.decl("param", K, ((m if data == "denoise" else n), n))
        lam, rho = self.hypers(2, ["lam", "rho"])
        z = self.fresh(["z", "u", "s"])
        self.decl("var", z, (n,), self.pick([None, None, Node(ATOM, "0"), self.num(small=True)]))
        fit = f"0.5*sqnorm({z} - {x})" if data == "denoise" else self.pick(
            [f"0.5*sqnorm({x} - {D} @ {z})", f"0.5*sqnorm({D} @ {z} - {x}) + 0.5*{rho}*sqnorm({z})"])
        if self.chance(0.2):
            fit += f" + {self.num(positive=True, small=True).text}*sqnorm({K} @ {z})"
        g = self.weighted([(5, f"{lam}*norm1({K} @ {z})"), (2, f"{lam}*norm1({z})"), (1, f"norm1({K} @ {z})/2"),
                           (self.mistake(0.3), f"{lam}*norm1({K} @ {z} - 1)"),
                           (self.mistake(0.2), f"{lam}*norm0({K} @ {z})"),
                           (self.mistake(0.2), f"{lam}*norm1({K} @ {z}) + norm1({z})")])
        self.lines.append(f"minimize {fit} + {g}" if self.chance(0.7) else f"minimize {g} + {fit}")
        method = self.weighted([
            (2, "admm"), (2, f"admm(rho = {rho})"), (1, f"admm(rho = {self.num(positive=True, small=True).text})"),
            (1, f"admm(rho = {rho}, solve = cg(iters = {self.r.randint(1, 6)}))"),
            (2, "pdhg"), (1, f"pdhg(tau = {self.num(positive=True, small=True).text}, sigma = 0.5)"),
            (1, "pdhg(sigma = 0.1)"), (self.mistake(0.2), "admm(rh = 1)"), (self.mistake(0.2), "pdhg(1)")])
        self.lines.append(f"derive {method}")
        learnable = [lam] + ([rho] if "rho" in method else []) + [K]
        self.lines += self.directives([z], iterative=True, learnable=learnable, lista=0.05)

    def update_program(self):
        self.header("update")
        dims = self.base_decls(self.weighted([(1, 1), (5, 2), (2, 3)]))
        if len(dims) == 1:
            dims = dims * 2
        m, n = dims[0], dims[1]
        inputs = [self.fresh(self.INPUT_NAMES)]
        self.decl("input", inputs[0], (m,))
        if self.chance(0.2):
            inputs.append(self.fresh(self.INPUT_NAMES))
            self.decl("input", inputs[1], (self.pick(dims + [d for d in self.dims if d.isdigit()]),))
        D = self.fresh(["D", "A", "Phi", "M"])
        self.decl("param", D, (m, n))
        if len(inputs) > 1 and self.chance(0.6):
            self.decl("param", self.fresh(["B", "E", "K"]), (n, self.decl_shape(inputs[1])[0]))
        for _ in range(self.weighted([(4, 0), (2, 1), (1, 2)])):
            a, b = self.pick(self.dims), self.pick(self.dims)
            shape = self.pick([(a, b), (a,), (a, b), ()])
            self.decl("param", self.fresh(self.PARAM_NAMES), shape)
        hypers = self.hypers(self.r.randint(1, 3), ["lam", "mu", "tau"])
        L = self.fresh(["L", "Lip"])
        self.decl("let", L, (), self.power(self.call("opnorm", self.name(D)), Node(ATOM, "2")))
        self.positive_lets.add(L)
        self.lets(self.weighted([(3, 0), (3, 1), (2, 2), (1, 3)]))
        # states
        nstates = self.weighted([(6, 1), (3, 2), (1, 3)])
        states = []
        for i in range(nstates):
            shape = (n,) if i == 0 else self.weighted([(3, (n,)), (1, (m,)), (1.5, ()), (0.5, (self.pick(self.dims),)),
                                                       (self.mistake(0.1), (n, m))])  # matrix vars are refused
            name = self.fresh(self.VAR_NAMES)
            ctx = frozenset({"input", "param", "hyper", "let"})
            self.decl("var", name, shape, self.start(shape, ctx))
            states.append((name, shape))
        ctx = frozenset({"input", "param", "hyper", "let", "var"})
        style = self.weighted([(5, "ista"), (3, "random"), (1, "stepsize"), (1, "prox")])
        body_lets, assigns, temps = [], [], []
        block = nstates > 1 or self.chance(0.25)
        if block and self.chance(0.6):
            for _ in range(self.r.randint(1, 2)):
                tname = self.fresh(self.TEMP_NAMES)
                shape = self.weighted([(3, (n,)), (1, ()), (1, (m,))])
                value = self.vec(shape[0], ctx | {"temp"}, 2) if shape else self.sca(ctx | {"temp"}, 2)
                body_lets.append(f"let {tname} = {value.text}")
                self.declare(tname, shape, "temp")
                temps.append(tname)
        tctx = ctx | {"temp"}
        for name, shape in states:
            if not shape:
                value = self.weighted([
                    (2, lambda: Node(SUM, f"(1 + sqrt(1 + 4*{name}^2))/2")),
                    (2, lambda: self.sca(tctx, 2)),
                    (1, lambda: self.bin("+", self.bin("*", Node(ATOM, "0.5"), self.name(name)),
                                         self.sca(tctx, 1))),
                ])()
            elif len(shape) == 2:
                value = self.weighted([(2, lambda: self.mat(*shape, tctx, 2)),
                                       (1, lambda: self.call("tanh", self.mat(*shape, tctx, 2)))])()
            elif shape[0] == n and name == states[0][0]:
                value = self.threshold_update(style, name, shape[0], inputs, D, L, hypers, tctx)
            elif shape == (n,) and self.chance(0.3):  # a second threshold: learn weights names W2, S2, theta2
                value = self.threshold_update("ista", name, n, inputs, D, L, hypers, tctx)
            else:
                others = [s for s, sh in states if sh == shape and s != name]
                value = self.weighted([
                    (2, lambda: self.vec(shape[0], tctx, 2)),
                    (2 if others else 0, lambda: self.bin("+", self.name(self.pick(others)), self.bin(
                        "*", self.sca(tctx, 1), self.bin("-", self.name(self.pick(others)), self.name(name))))),
                    (1 if others else 0, lambda: self.name(self.pick(others))),
                ])()
            assigns.append(f"{name} <- {value.text}")
        if self.chance(0.2):
            self.r.shuffle(assigns)
        if block:
            body = body_lets + assigns
            if body_lets and not any(re.search(rf"\b{t}\b", assigns[0]) for t in temps) and self.chance(0.3):
                body = assigns[:1] + body_lets + assigns[1:]  # a temporary after an assignment that does not read it
            indent = self.pick(["  ", "    ", "\t", ""])
            if self.chance(0.1):
                self.lines.append("update { " + body[0])
                self.lines += [indent + b for b in body[1:]]
                self.lines.append("}")
            else:
                self.lines.append("update {")
                self.lines += [indent + b for b in body]
                self.lines.append("}")
        else:
            self.lines.append("update " + assigns[0])
        learnable = [D] + hypers + [n for n, s in self.of({"param"}) if n != D]
        scalar_out = [s for s, sh in states if not sh][:1] if self.chance(self.mistake(0.1)) else []
        vector_temps = [t for t in temps if self.decl_shape(t)]
        self.lines += self.directives([s for s, sh in states if sh] + scalar_out, temps=vector_temps,
                                      learnable=learnable,
                                      lista=1.0 if style in ("ista", "stepsize") else 0.25 if style == "prox" else 0.1)

    def expression_program(self):
        """Deep random expressions over several params, lets and states: the printer's precedence, row form,
        broadcasting and index sums, compared number for number."""
        self.header("expression")
        dims = self.base_decls(self.r.randint(2, 3))
        inputs = []
        for _ in range(self.r.randint(1, 2)):
            inputs.append(self.fresh(self.INPUT_NAMES))
            self.decl("input", inputs[-1], (self.pick(dims),))
        for _ in range(self.r.randint(2, 4)):
            a, b = self.pick(dims), self.pick(dims)
            self.decl("param", self.fresh(self.PARAM_NAMES), self.weighted([(3, (a, b)), (2, (a,)), (0.5, ())]))
        self.hypers(self.r.randint(1, 2))
        self.lets(self.r.randint(0, 3))
        ctx0 = frozenset({"input", "param", "hyper", "let"})
        states = []
        for _ in range(self.r.randint(1, 2)):
            d = self.pick(sorted(self.producible(ctx0 | {"var"})) or dims)
            name = self.fresh(self.VAR_NAMES)
            self.decl("var", name, (d,), self.start((d,), ctx0))
            states.append((name, (d,)))
        ctx = ctx0 | {"var", "temp"}
        body = []
        if self.chance(0.5):
            d = self.pick(sorted(self.producible(ctx)))
            t = self.fresh(self.TEMP_NAMES)
            body.append(f"let {t} = {self.vec(d, ctx, self.r.randint(2, 4)).text}")
            self.declare(t, (d,), "temp")
        for name, (d,) in states:
            body.append(f"{name} <- {self.vec(d, ctx, self.r.randint(2, 4)).text}")
        if len(body) == 1:
            self.lines.append("update " + body[0])
        else:
            self.lines += ["update {"] + ["  " + b for b in body] + ["}"]
        self.lines.append(f"unroll {self.r.randint(1, 3)}")
        if self.chance(0.3):
            self.lines.append("learn  " + self.pick([n for n, _, k in self.syms if k in ("param", "hyper")])
                              + self.weighted([(3, ""), (2, " untied"), (0.5, " tied")]))
        if len(states) > 1 and self.chance(0.5):
            self.lines.append(f"output {self.pick(states)[0]}")
        elif self.chance(0.2):
            self.lines.append(f"output {self.output_expr([n for n, _ in states])}")

    def paramless_program(self):
        """No param: every dim is a constructor argument, weights are built from numbers (no tensor to
        take the dtype from), eye(n) is the only matrix."""
        self.header("paramless")
        (n,) = self.base_decls(1)
        x = self.fresh(self.INPUT_NAMES)
        self.decl("input", x, (n,))
        hypers = self.hypers(self.r.randint(1, 2), ["lam", "mu"])
        z = self.fresh(["z", "h", "w"])
        self.decl("var", z, (n,), self.weighted([(2, lambda: None), (1, lambda: self.name(x)),
                                                 (1, lambda: self.num())])())
        lam = self.name(self.pick(hypers))
        ctx = frozenset({"input", "hyper", "var"})
        arg = self.weighted([
            (3, lambda: self.bin("+", self.bin("*", self.num(True, True), self.name(z)),
                                 self.bin("*", self.num(True, True), self.name(x)))),
            (1, lambda: self.bin("-", self.name(x), self.bin("*", lam, self.name(z)))),
            (1, lambda: self.bin("+", self.bin("@", self.call("eye", self.name(n)), self.name(z)), self.name(x))),
            (1, lambda: self.bin("+", self.bin("+", self.name(z), self.name(x)), self.num())),
            (1, lambda: self.vec(n, ctx, 2)),
        ])()
        atom = self.pick(["soft", "softpos", "hard", "soft"])
        self.lines.append(f"update {z} <- {self.call(atom, arg, self.den(frozenset({'hyper'}), 1)).text}")
        self.lines += self.directives([z], learnable=hypers)

    def threshold_update(self, style, z, n, inputs, D, L, hypers, ctx) -> Node:
        """The first state's update: thresholded affine maps (learn weights, coupled, stepsizes, gates
        reach deep with these), proximal maps, or a random expression."""
        x = inputs[0]
        lam = self.pick(hypers)
        thr = self.weighted([(3, lambda: self.bin("/", self.name(lam), self.name(L))), (1, lambda: self.name(lam)),
                             (1, lambda: self.den(ctx - {"var", "temp", "input"}, 1)),
                             (0.1, lambda: self.bin("*", self.name(lam), self.call("norm1", self.name(z))))])
        atom = self.weighted([(6, "soft"), (1.5, "softpos"), (1.5, "hard"), (0.3, "softss")])

        def threshold(arg):
            t = thr()
            if atom == "softss":
                return self.call("softss", arg, t, Node(ATOM, "1.2"), Node(ATOM, "13"))
            return self.call(atom, arg, t)

        grad = self.bin("@", self.T(self.name(D)), self.bin("-", self.bin("@", self.name(D), self.name(z)),
                                                             self.name(x)))
        if style == "ista":
            step = self.weighted([(3, lambda: ("/", self.name(L))), (1, lambda: ("*", self.num(True, True))),
                                  (1, lambda: ("*", self.bin("/", Node(ATOM, "0.5"), self.name(L))))])()
            g = self.bin(step[0], grad, step[1]) if step[0] == "/" else self.bin("*", step[1], grad)
            arg = self.bin("-", self.name(z), g)
            extras = []
            if self.chance(0.2):
                extras.append(self.num())  # a broadcast constant
            if self.chance(0.15):
                vs = [v for v, s in self.of({"param", "let"}, shape=(n,))]
                if vs:
                    extras.append(self.name(self.pick(vs)))
            if self.chance(0.1):
                extras.append(self.bin("*", self.num(True, True), self.name(z)))
            if len(inputs) > 1 and self.chance(0.6):  # a second input: W_x, W_y
                x2 = inputs[1]
                d2 = self.decl_shape(x2)[0]
                mats = [nm for nm, sh in self.of({"param", "let"}, rank=2) if sh == (n, d2)]
                mats_t = [nm for nm, sh in self.of({"param", "let"}, rank=2) if sh == (d2, n)]
                if mats:
                    extras.append(self.bin("*", self.num(True, True), self.bin("@", self.name(self.pick(mats)),
                                                                                self.name(x2))))
                elif mats_t:
                    extras.append(self.bin("@", self.T(self.name(self.pick(mats_t))), self.name(x2)))
                elif d2 == n:
                    extras.append(self.bin("*", self.num(True, True), self.name(x2)))
            for e in extras:
                arg = self.bin(self.pick("+-"), arg, e)
            if self.chance(0.15):  # written expanded: z + c*D.T@x - ...
                arg = self.bin("+", self.bin("-", self.name(z), self.bin("/", self.bin(
                    "@", self.bin("@", self.T(self.name(D)), self.name(D)), self.name(z)), self.name(L))),
                    self.bin("/", self.bin("@", self.T(self.name(D)), self.name(x)), self.name(L)))
            return threshold(arg)
        if style == "stepsize":
            mats = [nm for nm, s in self.of({"let", "param"}, shape=(self.decl_shape(D)))]
            W = self.pick(mats or [D])
            g = self.bin("@", self.T(self.name(W)), self.bin("-", self.bin("@", self.name(D), self.name(z)),
                                                             self.name(x)))
            c = self.pick([self.num(True, True), self.bin("/", Node(ATOM, "1"), self.name(L)), None])
            return threshold(self.bin("-", self.name(z), self.bin("*", c, g) if c is not None else g))
        if style == "prox":
            arg = self.bin("-", self.name(z), self.bin("/", grad, self.name(L)))
            return self.weighted([
                (1, lambda: self.call("relu", arg)),
                (1, lambda: self.call("clamp", arg, self.neg(self.num(True, True)), self.num(True))),
                (1, lambda: self.call("sparsemax", arg)),
                (1, lambda: self.bin("/", self.call("soft", arg, thr()), self.bin("+", Node(ATOM, "1"),
                                                                                  self.num(True, True)))),
            ])()
        return self.vec(n, ctx, self.r.randint(1, 3))


def generate(rng: random.Random, mistakes: bool = True) -> str:
    """One random well-typed program; with mistakes, some of its directives are deliberately wrong."""
    return Gen(rng, mistakes).program()


# ============================================================================================
# Mutation of examples at the text level
# ============================================================================================

TOKEN = re.compile(r"\s+|#[^\n]*|sum_[A-Za-z][A-Za-z0-9]*|[A-Za-z_][A-Za-z0-9_]*|"
                   r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|<-|->|>=|<=|.", re.S)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")

ODD_NUMBERS = ["0", "-1", "1e30", "1e309", "1e-400", "9" * 40, "0.0", "1e-30", "00", "007", ".5", "5.", "1e+5",
               "0e0", "123456789012345678901234567890.5", "-0", "1e-320", "2" * 400, "0." + "0" * 300 + "1",
               "1e99999", "3", "1"]
ODD_NAMES = sorted(set(keyword.kwlist) | {
    "max", "min", "sum", "abs", "len", "print", "float", "int", "range", "list", "object", "super", "id", "exec",
    "eval", "open", "torch", "nn", "F", "self", "steps", "trace", "objective", "forward", "per_layer_parameters",
    "training", "to", "cuda", "double", "extra_repr", "register_buffer", "state_dict", "soft", "norm1", "eye",
    "sum_j", "R", "network", "dims", "in", "var", "learn", "weights", "tied", "untied", "coupled", "k", "zs",
    "_layers", "_soft", "_like", "like", "Wx", "i", "f", "c", "theta", "W", "S", "L", "H", "b", "gamma", "x1", "X",
    "T", "a" * 300, "nonneg", "simplex", "onehot", "box", "sum_jj", "e", "E", "inf", "nan", "math", "np", "U_i",
    "c_next", "z_next", "y", "t", "k1", "kk", "dims_", "Net", "LISTA", "main", "__init__", "__class__", "mT",
    "register_parameter", "dtype", "device", "shape", "unsqueeze"})
ODD_CHARS = ["\x00", "\x01", "\x07", "\x0b", "\x0c", "\r", "\t", "\u2028", "\u2029", "\x85", "\ufeff", "é", "λ",
             "\U0001F600", "\\", "#", "\n", "{", "}", "(", ")", "[", "]", ",", ";", '"', "'", "$", "`", "\u2211",
             "\u00a0", "\u200b", "\x1c", "\x1e", "\r\n", "\\\n", ":", "=", "<-", "@", "^", ".T", "-", "*"]


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def examples() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.dp"))]


def mutate(text: str, rng: random.Random, ops: int | None = None) -> str:
    """Apply 1-3 random text-level edits."""
    for _ in range(ops or rng.choice([1, 1, 1, 2, 2, 3])):
        text = rng.choice(MUTATIONS)(text, rng)
    return text


def _lines_op(fn):
    def op(text, rng):
        lines = text.split("\n")
        if len(lines) < 2:
            return text
        return "\n".join(fn(lines, rng))
    op.__name__ = fn.__name__
    return op


@_lines_op
def delete_line(lines, rng):
    del lines[rng.randrange(len(lines))]
    return lines


@_lines_op
def duplicate_line(lines, rng):
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return lines


@_lines_op
def swap_lines(lines, rng):
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return lines


@_lines_op
def duplicate_directive(lines, rng):
    found = [ln for ln in lines if re.match(r"\s*(derive|relax|adapt|unroll|learn|output)\b", ln)]
    if found:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(found))
    return lines


def _tokens_op(fn):
    def op(text, rng):
        toks = tokens(text)
        real = [i for i, t in enumerate(toks) if not t.isspace() and not t.startswith("#")]
        if not real:
            return text
        return "".join(fn(toks, real, rng))
    op.__name__ = fn.__name__
    return op


@_tokens_op
def delete_token(toks, real, rng):
    del toks[rng.choice(real)]
    return toks


@_tokens_op
def duplicate_token(toks, real, rng):
    i = rng.choice(real)
    toks.insert(i, toks[i] + rng.choice(["", " "]))
    return toks


@_tokens_op
def swap_tokens(toks, real, rng):
    k = rng.randrange(len(real))
    i, j = real[k], real[(k + 1) % len(real)] if rng.random() < 0.7 else rng.choice(real)
    toks[i], toks[j] = toks[j], toks[i]
    return toks


@_tokens_op
def replace_number(toks, real, rng):
    nums = [i for i in real if NUMBER.match(toks[i])]
    i = rng.choice(nums or real)
    toks[i] = rng.choice(ODD_NUMBERS)
    return toks


@_tokens_op
def rename_identifier(toks, real, rng):
    idents = [i for i in real if IDENT.match(toks[i])]
    if not idents:
        return toks
    old = toks[rng.choice(idents)]
    new = rng.choice(ODD_NAMES + [toks[j] for j in idents])
    if rng.random() < 0.7:  # every occurrence: a consistent rename
        return [new if t == old else t for t in toks]
    toks[rng.choice(idents)] = new
    return toks


@_tokens_op
def replace_token(toks, real, rng):
    toks[rng.choice(real)] = rng.choice(["+", "-", "*", "/", "@", "^", ".T", "(", ")", ",", "=", "<-", ">=", "in",
                                         "sum_j", "[j]", "R", "R[n]", ":", "{", "}", "0", "x", "z", "D"])
    return toks


@_tokens_op
def deep_nest(toks, real, rng):
    i = rng.choice(real)
    depth = rng.choice([50, 200, 1000, 3000])
    if rng.random() < 0.5:
        toks[i] = "(" * depth + toks[i] + ")" * depth
    elif IDENT.match(toks[i]) or NUMBER.match(toks[i]):
        toks[i] = " + ".join([toks[i]] * depth)
    else:
        toks[i] = "-" * depth + toks[i]
    return toks


def insert_chars(text, rng):
    i = rng.randrange(len(text) + 1)
    return text[:i] + "".join(rng.choice(ODD_CHARS) for _ in range(rng.choice([1, 1, 2, 5]))) + text[i:]


def flip_tying(text, rng):
    swaps = {"tied": "untied", "untied": "tied", "coupled": rng.choice(["tied", "coupled tied", "untied coupled"]),
             "ista": "xavier", "xavier": "ista", "softmax": "sparsemax", "sparsemax": "softmax",
             "proxgrad": rng.choice(["fista", "gd", "closed"]), "fista": "proxgrad", "closed": "proxgrad",
             "weights": rng.choice(["stepsizes", "weights coupled", "weights tied"])}
    toks = tokens(text)
    idx = [i for i, t in enumerate(toks) if t in swaps]
    if not idx:
        return text.rstrip("\n") + "\n" + rng.choice(["learn weights tied", "learn weights", "adapt gates",
                                                      "adapt support", "output z", "unroll 2"]) + "\n"
    i = rng.choice(idx)
    toks[i] = swaps[toks[i]]
    return "".join(toks)


def change_unroll(text, rng):
    return re.sub(r"unroll\s+\d+", "unroll " + rng.choice(["0", "1", "2", "3", "99999999999999999999", "007"]),
                  text)


def splice(text, rng):
    """A line of another example inserted somewhere."""
    other = rng.choice(examples()).split("\n")
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), rng.choice(other))
    return "\n".join(lines)


def truncate(text, rng):
    return text[:rng.randrange(len(text) + 1)]


def whole_text(text, rng):
    """Edits of the whole file: line endings, a BOM, tabs, nothing at all, a huge program."""
    return rng.choice([
        lambda: text.replace("\n", "\r\n"),
        lambda: "\ufeff" + text,
        lambda: text.replace("  ", "\t"),
        lambda: "",
        lambda: "# only a comment\n",
        lambda: text.rstrip("\n"),
        lambda: text + "\\",
        lambda: text + "\n" * 3 + "   \n",
        lambda: text + "".join(f"hyper h{i} = {i}.5\n" for i in range(rng.choice([200, 3000]))),
        lambda: text.replace("lam", "l" + "a" * rng.choice([300, 20000]) + "m"),
        lambda: re.sub(r"\d", lambda m: chr(0x0660 + int(m.group())), text, count=1),  # an Arabic-Indic digit
        lambda: text.replace("R[", "\uff32["),  # a fullwidth R
    ])()


MUTATIONS = [delete_line, whole_text, delete_line, duplicate_line, swap_lines, duplicate_directive, delete_token, delete_token,
             duplicate_token, swap_tokens, replace_number, replace_number, rename_identifier, rename_identifier,
             rename_identifier, replace_token, deep_nest, insert_chars, insert_chars, flip_tying, flip_tying,
             change_unroll, splice, truncate]


# ============================================================================================
# Classification of one program
# ============================================================================================

@dataclasses.dataclass
class Result:
    outcome: str
    message: str = ""       # one line
    detail: str = ""        # traceback, error text or the difference
    verified: bool = False  # ok and compared with dpc.reference


def _default_compile(text, file, overrides):
    """dpc.api.compile_source, as a user calls it -> (the compiled Program, the module's source).
    The Program is the one compile_source built (recorded on its way through dpc.pipeline)."""
    import dpc.api
    import dpc.pipeline
    original, captured = dpc.pipeline.compile_program, []

    def recording(*args, **kwargs):
        program = original(*args, **kwargs)
        captured.append(program)
        return program

    dpc.pipeline.compile_program = recording
    try:
        source = dpc.api.compile_source(text, file, overrides)
    finally:
        dpc.pipeline.compile_program = original
    program = captured[-1] if captured else original(text, file, overrides)
    return program, source


def _default_check(path, overrides=None, command="check"):
    from dpc.cli import main
    out, err = io.StringIO(), io.StringIO()
    argv = [command, path] + [a for k, v in (overrides or {}).items() for a in ("--set", f"{k}={v}")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def _default_explain(path, overrides=None):
    return _default_check(path, overrides, command="explain")


def _default_reference():
    try:
        return importlib.import_module("dpc.reference")
    except ImportError:
        return None


@dataclasses.dataclass
class Hooks:
    """What classify calls; tests replace these to exercise the classifier itself."""

    compile: object = _default_compile          # (text, file, overrides) -> (Program, module source)
    check: object = _default_check              # (path, overrides) -> (rc, stdout, stderr)
    explain: object = _default_explain          # the same for `dpc explain`
    reference: object = _default_reference      # () -> module with evaluate() and ReferenceError, or None


DEFAULT_HOOKS = Hooks()


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _exc_line(e: BaseException) -> str:
    return one_line(f"{type(e).__name__}: {e}")


def _is_dpc_error(e) -> bool:
    from dpc.errors import DpcError
    return isinstance(e, DpcError)


def _display_width(text: str) -> int:
    """Terminal columns: wide (CJK, fullwidth, emoji) characters take two."""
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _same_char(shown: str, true: str) -> bool:
    """A shown character stands for the source's: itself, or any one character for a tab or an
    invisible one (control, format, separator characters are shown as a placeholder)."""
    return shown == true or true == "\t" or not (true.isprintable() or true == " ")


def _locate_window(body: str, true: str, col: int) -> list:
    """Where the shown line `body` may sit in the source line: offsets to add to an index of body to get
    an index of the line (shifted by the "..." marker), none when it is not the line (a long line may be
    shown as a window "...part..." around the column)."""
    found = []
    for left in (False, True):
        for right in (False, True):
            core = body[3 if left else 0:len(body) - 3 if right else len(body)]
            if (left or right) and not (body.startswith("...") if left else True) \
                    or right and not body.endswith("..."):
                continue
            starts = range(1, len(true) + 1) if left else [0]
            for k in starts:
                if k + len(core) > len(true) or right and k + len(core) == len(true):
                    continue
                if not right and k + len(core) != len(true):
                    continue
                if all(_same_char(a, b) for a, b in zip(core, true[k:k + len(core)])) \
                        and k <= col - 1 <= k + len(core):
                    found.append(k - (3 if left else 0))
    return found


LOCATED = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): error: ")


def judge_error(e, text: str, file: str) -> tuple[str, str]:
    """A DpcError -> (rejected | bad_error, why). Every diagnostic must be `FILE:LINE:COL: error: ...`
    with the source line it names and a caret under the column (or be about the invocation)."""
    diagnostics = getattr(e, "diagnostics", None) or []
    if not diagnostics:
        return "bad_error", "DpcError without diagnostics"
    source_lines = text.split("\n")
    for d in diagnostics:
        block = d.format(e.source).split("\n")
        head = block[0]
        m = LOCATED.match(head)
        if not m:
            if d.span is None and re.match(r"(--set|cannot read)", d.message):
                continue
            return "bad_error", f"no FILE:LINE:COL: {one_line(head)}"
        if m.group("file") != file:
            return "bad_error", f"names file {m.group('file')!r}, not {file!r}: {one_line(head)}"
        line, col = int(m.group("line")), int(m.group("col"))
        if not 1 <= line <= len(source_lines):
            return "bad_error", f"line {line} is past the end ({len(source_lines)} lines): {one_line(head)}"
        true = source_lines[line - 1]
        true = true[:-1] if true.endswith("\r") else true
        if not 1 <= col <= len(true) + 1:
            return "bad_error", f"column {col} is past the end of line {line} ({len(true)} chars): {one_line(head)}"
        rest = [b for b in block[1:] if not b.startswith("  hint:")]
        if true.strip() == "" and not rest:
            continue  # an empty line (end of file): nothing to show
        if len(rest) < 2:
            return "bad_error", f"no source line and caret under: {one_line(head)}"
        shown, caret = rest[0], rest[1]
        body = shown[4:] if shown.startswith("    ") else ""
        offsets = _locate_window(body, true, col)
        if not offsets:
            return "bad_error", f"shows line {line} as {shown[4:]!r}, but it is {true!r}: {one_line(head)}"
        cm = re.fullmatch(r"    ( *)(\^+)", caret)
        wants = [_display_width(body[:col - 1 - k]) + max(0, col - 1 - k - len(body)) for k in offsets]
        if not cm or len(cm.group(1)) not in wants:  # (a periodic line may sit at several offsets)
            return "bad_error", f"caret {caret!r} is not under column {col}: {one_line(head)}"
    return "rejected", one_line(diagnostics[0].format(e.source).split("\n")[0])


def _sizes(program, rng) -> dict[str, int]:
    names = [d for d in program.dims if not d.isdigit()]
    pool = list(range(2, 8))
    rng.shuffle(pool)
    sizes = {}
    for i, d in enumerate(names):
        sizes[d] = pool[i % len(pool)] if rng.random() > 0.08 else 1
    return sizes


def _resolve(shape, sizes):
    return tuple(int(s) if s.isdigit() else sizes[s] for s in shape)


def _too_large(program) -> str | None:
    import sympy as sp
    for d in program.decls:
        lits = [int(s) for s in d.shape if s.isdigit()]
        if any(v > MAX_DIM for v in lits) or math.prod(lits or [1]) > MAX_ELEMENTS:
            return f"{d.kind} {d.name} : R[{', '.join(d.shape)}]"
    exprs = [d.value for d in program.decls if d.value is not None]
    if program.step is not None:
        exprs += [e for _, e in program.step.equations()]
    exprs += [e for _, e in program.closed_form]
    if program.objective is not None:
        exprs.append(program.objective)
    for e in exprs:
        for ident in getattr(e, "atoms", lambda *a: ())(sp.Identity):
            if ident.rows.is_Integer and int(ident.rows) > MAX_DIM:
                return f"eye({ident.rows})"
    return None


def _param_value(shape, rng):
    import numpy as np
    if len(shape) == 0:
        return np.array(rng.uniform(0.5, 1.5))
    if len(shape) == 1:
        return rng.standard_normal(shape)
    a = rng.standard_normal(shape) / math.sqrt(max(shape[0], 1))
    norms = np.linalg.norm(a, axis=0, keepdims=True)
    return a / np.where(norms > 0, norms, 1)


def _constant_scale(program) -> float:
    """The largest finite magnitude among the numbers written in the program (1 when all are small)."""
    import sympy as sp
    exprs = [d.value for d in program.decls if d.value is not None]
    if program.step is not None:
        exprs += [e for _, e in program.step.equations()]
    exprs += [e for _, e in program.closed_form]
    biggest = 1.0
    for e in exprs:
        for n in getattr(e, "atoms", lambda *a: ())(sp.Number):
            try:
                v = abs(float(n))
            except (TypeError, ValueError, OverflowError):
                continue
            if math.isfinite(v) and v > 1:
                biggest = max(biggest, v)
    return biggest if biggest > 1e6 else 1e-3  # only huge constants widen the tolerance


def _refuses(e: BaseException, source: str) -> bool:
    """A ValueError from a `raise ValueError(...)` of the generated module itself: its constructor
    checking what a derivation assumes of the values (a finite Lipschitz bound, positive steps)."""
    if type(e) is not ValueError:
        return False
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    if tb.tb_frame.f_code.co_filename != "<dpc:fuzz>":
        return False
    lines = source.split("\n")
    return 0 < tb.tb_lineno <= len(lines) and lines[tb.tb_lineno - 1].strip().startswith("raise ValueError")


def _load_class(source: str):
    namespace = {"__name__": "dpc_fuzz_generated"}
    exec(compile(source, "<dpc:fuzz>", "exec"), namespace)
    import torch
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == "dpc_fuzz_generated"]
    if len(classes) != 1:
        raise ImportError(f"the module defines {len(classes)} network classes, not 1")
    return classes[0]


def _as_array(value):
    import numpy as np
    import torch
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, torch.nn.ParameterList):  # per-layer copies: stacked, layer k at [k]
        return np.stack([p.detach().cpu().numpy() for p in value])
    return np.asarray(value, dtype=float)


def compare(got, want, what: str, floor: float = 1e-3) -> str | None:
    """None when equal within RTOL of the output's scale, at least `floor` (non-finite entries must agree)."""
    import numpy as np
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, reference {want.shape}"
    fin = np.isfinite(want)
    if not np.array_equal(np.isfinite(got), fin) or not np.array_equal(got[~fin], want[~fin], equal_nan=True):
        bad = np.argwhere(np.isfinite(got) != fin)
        where = tuple(bad[0]) if len(bad) else tuple(np.argwhere(~fin)[0])
        return f"{what}: non-finite entries differ, at {where}: {got[where]!r} vs reference {want[where]!r}"
    if not fin.any():
        return None
    scale = float(np.abs(want[fin]).max())
    err = np.where(fin, np.abs(got - want), 0.0)
    worst = float(err.max())
    if worst <= RTOL * max(scale, floor):
        return None
    where = np.unravel_index(int(err.argmax()), err.shape)
    return (f"{what}: max |module - reference| = {worst:.3g} (scale {scale:.3g}) at {tuple(int(i) for i in where)}: "
            f"{got[where]!r} vs {want[where]!r}")


def _check_agreement(path, overrides, compiled_error, hooks) -> Result | None:
    """`dpc check FILE` must accept exactly what compile accepts, and report the same first error."""
    try:
        rc, _, err = hooks.check(path, overrides)
    except Exception as e:  # noqa: BLE001
        return Result("check_disagrees", f"dpc check raised {_exc_line(e)}", traceback.format_exc())
    if rc not in (0, 1):
        return Result("check_disagrees", f"dpc check exited {rc}: {one_line(err)}", err)
    if compiled_error is None and rc != 0:
        return Result("check_disagrees", f"compile accepts, dpc check rejects: {one_line(err)}", err)
    if compiled_error is not None and rc == 0:
        return Result("check_disagrees", f"compile rejects, dpc check accepts: "
                      f"{one_line(compiled_error.format().split(chr(10))[0])}", compiled_error.format())
    if compiled_error is not None:
        want = compiled_error.format().split("\n")[0]
        got = err.split("\n")[0]
        if got != want:
            return Result("check_disagrees", f"dpc check says {one_line(got)!r}, compile says {one_line(want)!r}",
                          f"dpc check:\n{err}\ncompile:\n{compiled_error.format()}")
    return None


def _read_back(path: str) -> str:
    """The text as the CLI reads the file (dpc.errors.read_source when there is one)."""
    try:
        from dpc.errors import read_source
    except ImportError:
        with open(path, encoding="utf-8") as f:
            return f.read()
    return read_source(path)


def classify(text: str, seed: int = 0, overrides: dict | None = None, hooks: Hooks = DEFAULT_HOOKS,
             workdir: str | None = None) -> Result:
    """Compile, run and compare one program; never raises."""
    try:
        return _classify(text, seed, overrides, hooks, workdir)
    except RecursionError as e:
        return Result("crash", _exc_line(e), "RecursionError outside the compiler's own calls")
    except Exception as e:  # noqa: BLE001 - a bug of the fuzzer itself
        return Result("crash", f"fuzzer: {_exc_line(e)}", traceback.format_exc())


def _classify(text, seed, overrides, hooks, workdir) -> Result:
    import numpy as np
    import torch
    workdir = workdir or tempfile.mkdtemp(prefix="dpcfuzz")
    path = FILE if workdir == "." else os.path.join(workdir, FILE)
    file = path
    # --- compile ---
    phase("compile")
    program = source = compiled_error = None
    try:
        program, source = hooks.compile(text, file, overrides)
    except RecursionError as e:
        return Result("crash", _exc_line(e), traceback.format_exc(limit=-8))
    except Exception as e:  # noqa: BLE001
        if not _is_dpc_error(e):
            return Result("crash", _exc_line(e), traceback.format_exc())
        compiled_error = e
    # --- dpc check on the same text, read from a file as the CLI reads it ---
    phase("check")
    disagreement = None
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            as_read = _read_back(path)
        except Exception:  # noqa: BLE001 - not UTF-8 once written: check says so, compile never sees it
            as_read = None
        if as_read == text:
            disagreement = _check_agreement(path, overrides, compiled_error, hooks)
        elif as_read is not None:  # (a BOM dropped, say): compare with compile on what the CLI reads
            try:
                hooks.compile(as_read, file, overrides)
                error2 = None
            except Exception as e:  # noqa: BLE001
                error2 = e if _is_dpc_error(e) else None
            disagreement = _check_agreement(path, overrides, error2, hooks)
    except UnicodeEncodeError:
        pass
    # dpc explain (a third of the programs: it costs half a compile more): any verdict, no internal error
    if disagreement is None and os.path.exists(path) and seed % 3 == 0:
        phase("explain")
        try:
            rc, _, err = hooks.explain(path, overrides)
        except Exception as e:  # noqa: BLE001
            rc, err = 2, _exc_line(e)
        if rc not in (0, 1):
            return Result("crash", f"dpc explain: {one_line(err)}", err)
    if compiled_error is not None:
        outcome, why = judge_error(compiled_error, text, file)
        if outcome == "bad_error":
            return Result(outcome, why, compiled_error.format())
        return disagreement or Result("rejected", why, compiled_error.format())
    if disagreement is not None:
        return disagreement
    # --- too large to run? ---
    large = _too_large(program)
    if large:
        return Result("too_large", large)
    # --- import, construct, run ---
    phase("run")
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(seed)
    try:
        cls = _load_class(source)
    except Exception as e:  # noqa: BLE001
        return Result("import_fail", _exc_line(e), traceback.format_exc(limit=-3) + "\n" + source)
    sizes = _sizes(program, rng)
    params = {d.name: _param_value(_resolve(d.shape, sizes), rng) for d in program.of_kind("param")}
    steps = min(program.layers, MAX_STEPS) if program.layers else None
    kwargs = {}
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as e:
        return Result("construct_fail", _exc_line(e), source)
    for name, par in signature.parameters.items():
        if name == "self" or par.kind in (par.VAR_POSITIONAL, par.VAR_KEYWORD):
            continue
        if name in params:
            kwargs[name] = torch.tensor(params[name])
        elif name == "steps" and steps is not None:
            kwargs[name] = steps
        elif name in sizes:
            kwargs[name] = sizes[name]
    # half the time the hypers are given, not defaulted: the same value of the same sign, scaled by [0.5, 2]
    # (a default baked into the code instead of read from the constructor shows up as a mismatch)
    hypers = {}
    if rng.random() < 0.5:
        for d in program.of_kind("hyper"):
            if d.name in signature.parameters and d.value is not None and d.value.is_number:
                hypers[d.name] = float(d.value) * float(rng.uniform(0.5, 2.0))
        kwargs.update(hypers)
    try:
        net = cls(**kwargs)
    except Exception as e:  # noqa: BLE001
        if _refuses(e, source):
            return Result("rejected", f"the constructor refuses the values: {_exc_line(e)}",
                          traceback.format_exc(limit=-3))
        return Result("construct_fail", _exc_line(e), traceback.format_exc(limit=-3) + "\n" + source)
    # learn NAME untied: make the copies differ (each scaled by [0.8, 1.25], signs kept), so a layer that
    # reads another layer's copy is a mismatch; the reference gets them as weights
    per_layer_values = {}
    for d in program.decls:
        copies = getattr(net, d.name, None)
        if d.per_layer and d.kind in ("param", "hyper") and isinstance(copies, (torch.Tensor, torch.nn.ParameterList)):
            with torch.no_grad():
                for copy in copies:  # a stacked tensor's slices, or a ParameterList's parameters
                    copy.mul_(torch.as_tensor(rng.uniform(0.8, 1.25, tuple(copy.shape)), dtype=copy.dtype))
            per_layer_values[d.name] = _as_array(copies).copy()
    inputs = {d.name: rng.standard_normal((BATCH,) + _resolve(d.shape, sizes)) for d in program.of_kind("input")}
    args = [torch.tensor(inputs[d.name]) for d in program.of_kind("input")]
    out_decl = program.decl(program.output)
    want_shape = (BATCH,) + _resolve(out_decl.shape, sizes)
    try:
        with torch.no_grad():
            out = net(*args)
            traced = net(*args, trace=True)
    except Exception as e:  # noqa: BLE001
        if _is_singular(e):  # torch refuses a singular system: fine where the problem is singular
            return _singular_verdict(e, hooks, program, net, inputs, params, hypers, per_layer_values, steps,
                                     sizes, rng, source)
        return Result("run_fail", _exc_line(e), traceback.format_exc(limit=-3) + "\n" + source)
    layers = steps if steps is not None else 1
    if getattr(program, "until", None) is not None and isinstance(traced, (list, tuple)) \
            and 1 <= len(traced) <= layers:
        layers = len(traced)  # `unroll until`: the iterations until every sample converged, at most `steps`
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want_shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return Result("run_fail", f"forward returned {got}, expected {want_shape}", source)
    if not isinstance(traced, (list, tuple)) or len(traced) != layers or any(
            not isinstance(t, torch.Tensor) or tuple(t.shape) != want_shape for t in traced):
        got = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in traced] \
            if isinstance(traced, (list, tuple)) else type(traced).__name__
        return Result("run_fail", f"forward(trace=True) returned {one_line(str(got), 80)}, expected {layers} x "
                      f"{want_shape}", source)
    if params:  # the module follows the params' dtype: float32 params, float32 inputs -> float32 out
        try:
            net32 = cls(**{k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
            with torch.no_grad():
                out32 = net32(*[a.float() for a in args])
        except ValueError as e:  # the constructor's own checks: a value float32 cannot hold (1e40/L = inf), a
            # Hessian positive definite in float64 but singular in float32
            if "must be finite" not in str(e) and not _refuses(e, source):
                return Result("run_fail", f"float32: {_exc_line(e)}", traceback.format_exc(limit=-3) + "\n" + source)
        except RuntimeError as e:  # a value past float32's range (lam = 1e40) is float32's limit, not dpc's
            if "without overflow" not in str(e):
                return Result("run_fail", f"float32: {_exc_line(e)}", traceback.format_exc(limit=-3) + "\n" + source)
        except Exception as e:  # noqa: BLE001
            return Result("run_fail", f"float32: {_exc_line(e)}", traceback.format_exc(limit=-3) + "\n" + source)
        else:
            if not isinstance(out32, torch.Tensor) or out32.dtype != torch.float32:
                got = out32.dtype if isinstance(out32, torch.Tensor) else type(out32).__name__
                return Result("run_fail", f"float32 params and inputs, the output is {got}", source)
    if steps is not None and steps >= 2:  # forward(steps=s) is the trace's layer s
        s = int(rng.integers(1, steps))
        try:
            with torch.no_grad():
                partial = net(*args, steps=s)
        except Exception as e:  # noqa: BLE001
            return Result("run_fail", f"forward(steps={s}): {_exc_line(e)}", traceback.format_exc(limit=-3))
        s_done = min(s, len(traced))  # `unroll until` may converge before s iterations
        diff = compare(_as_array(partial), _as_array(traced[s_done - 1]), f"forward(steps={s}) vs trace[{s_done - 1}]")
        if diff is not None:
            return Result("mismatch", one_line(diff), f"{diff}\n\n{source}")
    # --- compare with the reference ---
    phase("reference")
    reference = hooks.reference()
    if reference is None:
        if not bool(torch.isfinite(out).all()):
            return Result("ok", "non-finite output (no reference to compare)")
        return Result("ok", "not compared: no dpc.reference")
    weights, extra = _reference_arguments(reference, program, net, per_layer_values, sizes)
    try:
        want = reference.evaluate(program, inputs, params=params, hypers=hypers, weights=weights, steps=steps,
                                  **extra)
        want_trace = reference.evaluate(program, inputs, params=params, hypers=hypers, weights=weights, steps=steps,
                                        trace=True, **extra)
    except np.linalg.LinAlgError as e:  # singular to working precision: the module solved noise
        return Result("ill_conditioned", f"the reference's linear system is singular: {_exc_line(e)}")
    except Exception as e:  # noqa: BLE001
        kind = "ReferenceError" if type(e).__name__ == "ReferenceError" else "raised"
        return Result("reference_missing", f"{kind}: {_exc_line(e)}" if kind == "raised" else _exc_line(e),
                      traceback.format_exc(limit=-3))
    got = _as_array(out)
    want = np.asarray(want, dtype=float)
    if np.isfinite(want).all() and not np.isfinite(got).all():
        return Result("run_fail", "non-finite output where the reference is finite", f"{got}\n{want}\n{source}")
    # the scale of the comparison: the outputs, and the program's own constants (a start of 1e40 that
    # cancels down to 1e24 leaves rounding errors of 1e24, right in float64)
    floor = max(1e-3, _constant_scale(program))
    diff = compare(got, want, "forward", floor)
    if diff is None:
        want_trace = [np.asarray(w, dtype=float) for w in want_trace]
        if len(want_trace) != len(traced):
            diff = f"trace: {len(traced)} layers, reference {len(want_trace)}"
        for k, (g, w) in enumerate(zip(traced, want_trace)):
            diff = diff or compare(_as_array(g), w, f"trace[{k}]", floor)
    if diff is None and program.objective is not None and hasattr(net, "objective") \
            and hasattr(reference, "evaluate_objective"):
        diff = _compare_objective(net, program, reference, inputs, params, rng, sizes, dict(extra, hypers=hypers))
        if isinstance(diff, Result):
            return diff
    if diff is not None and diff.startswith(("forward", "trace")):
        unstable = _ill_conditioned(reference, program, inputs, params, hypers, weights, steps, extra, want,
                                    floor, rng)
        if unstable is not None:
            return Result("ill_conditioned", unstable, f"{diff}\n\n{unstable}\n\n{source}")
    if diff is not None:
        return Result("mismatch", one_line(diff), f"{diff}\n\ninputs/params seed {seed}, sizes {sizes}, "
                      f"hypers {hypers or 'defaults'}\n\n{source}")
    return Result("ok", "", verified=True)


def _reference_arguments(reference, program, net, per_layer_values, sizes):
    """(weights, extra keyword arguments) for reference.evaluate: the module's learned weights and per-layer
    copies as they are, and the dims no param or input fixes (the module took them as ints)."""
    weights = dict(per_layer_values)
    for d in program.of_kind("weight"):
        value = getattr(net, d.name, None)
        if value is not None:
            weights[d.name] = _as_array(value)
    extra = {}
    try:
        if "dims" in inspect.signature(reference.evaluate).parameters:
            extra["dims"] = dict(sizes)
    except (TypeError, ValueError):
        pass
    return weights, extra


def _is_singular(error) -> bool:
    """A linear-algebra error of a singular (or not positive-definite) matrix, from torch or numpy."""
    text = str(error).lower()
    return "LinAlgError" in type(error).__name__ and any(
        word in text for word in ("singular", "positive-definite", "positive definite", "not invertible"))


def _singular_verdict(error, hooks, program, net, inputs, params, hypers, per_layer_values, steps, sizes, rng,
                      source) -> Result:
    """The module refused a singular system: ill_conditioned where the reference is singular too (or jumps
    under a 1e-12 perturbation), else a run_fail."""
    import numpy as np
    failed = Result("run_fail", _exc_line(error), source)
    reference = hooks.reference()
    if reference is None:
        return failed
    weights, extra = _reference_arguments(reference, program, net, per_layer_values, sizes)
    try:
        want = reference.evaluate(program, inputs, params=params, hypers=hypers, weights=weights, steps=steps,
                                  **extra)
    except np.linalg.LinAlgError:
        return Result("ill_conditioned", f"singular in the module and in the reference: {_exc_line(error)}")
    except Exception:  # noqa: BLE001
        return failed
    unstable = _ill_conditioned(reference, program, inputs, params, hypers, weights, steps, extra,
                                np.asarray(want, dtype=float), max(1e-3, _constant_scale(program)), rng)
    return Result("ill_conditioned", f"{_exc_line(error)}; {unstable}") if unstable else failed


def _ill_conditioned(reference, program, inputs, params, hypers, weights, steps, extra, want, floor, rng,
                     tries: int = 4, relative: float = 1e-12):
    """A description when the reference itself moves by more than the tolerance under perturbations of
    every input, param and learned weight by `relative` of its scale, else None.

    Such a point sits on a discontinuity (two entries of |v| tied for a support selection, |v| = t for a
    hard threshold) or a singular linear system (a ridge weight of 1e-30): rounding alone decides the answer, so a module that computes in another order may
    differ from the reference without either being wrong. Real miscompilations are not stable under
    perturbation either way, but they do not make the *reference* jump, so they stay mismatches."""
    import numpy as np

    def jitter(values):
        out = {}
        for name, value in values.items():
            array = np.asarray(value, dtype=float)
            if array.dtype.kind == "f" and array.size:
                noise = rng.standard_normal(array.shape) * relative * max(float(np.abs(array).max()), 1e-300)
                value = array + noise
            out[name] = value
        return out
    for _ in range(tries):
        try:
            moved = reference.evaluate(program, jitter(inputs), params=jitter(params), hypers=hypers,
                                       weights=jitter(weights), steps=steps, **extra)
        except np.linalg.LinAlgError as e:  # a matrix singular to working precision: a solve of noise
            return f"ill-conditioned: a perturbation of {relative:g} makes the reference fail ({e})"
        except Exception:  # noqa: BLE001 - the unperturbed point evaluated; a perturbed one is no evidence
            return None
        jump = compare(np.asarray(moved, dtype=float), want, "perturbed reference", floor)
        if jump is not None:
            return f"ill-conditioned: a perturbation of {relative:g} moves the reference itself ({jump})"
    return None


def _compare_objective(net, program, reference, inputs, params, rng, sizes, extra):
    """net.objective(inputs..., states...) against reference.evaluate_objective, at feasible-looking states
    (softmax rows: positive, summing to 1, inside any box(0, 1))."""
    import numpy as np
    import torch
    try:
        names = [n for n in inspect.signature(net.objective).parameters]
    except (TypeError, ValueError):
        return None
    states = {}
    for d in program.states:
        if d.name in names:
            shape = (BATCH,) + _resolve(d.shape, sizes)
            raw = rng.standard_normal(shape)
            states[d.name] = np.exp(raw) / np.exp(raw).sum(-1, keepdims=True) if d.shape else raw
    args = []
    for n in names:
        if n in inputs:
            args.append(torch.tensor(inputs[n]))
        elif n in states:
            args.append(torch.tensor(states[n]))
        else:
            return None
    try:
        with torch.no_grad():
            got = net.objective(*args)
    except Exception as e:  # noqa: BLE001
        return Result("run_fail", f"objective: {_exc_line(e)}", traceback.format_exc(limit=-3))
    try:
        want = reference.evaluate_objective(program, inputs, states, params=params, **extra)  # hypers= too
    except Exception as e:  # noqa: BLE001
        return Result("reference_missing", f"objective: {_exc_line(e)}", traceback.format_exc(limit=-3))
    got = _as_array(got)
    if got.shape != (BATCH,):
        return Result("run_fail", f"objective returned shape {got.shape}, expected ({BATCH},)")
    return compare(got, want, "objective")


# ============================================================================================
# Worker processes: one program at a time, each under a timeout that kills only its worker
# ============================================================================================

def _warm_up():
    """Imports and sympy caches in the parent, so forked workers start warm (no torch op runs here:
    forking after OpenMP work is unsafe)."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import dpc.cli  # noqa: F401
    from dpc.api import compile_source
    for text in examples():
        try:
            compile_source(text, FILE)
        except Exception:  # noqa: BLE001 - the fuzzer reports it, not the warm-up
            pass
    _default_reference()


_PHASE = None  # in a worker: tells the parent a new phase starts (each phase gets the whole timeout)


def phase(name: str):
    """Mark the start of a phase of one program (compile, check, run, reference): the timeout counts from here."""
    if _PHASE is not None:
        _PHASE(name)


def _worker_main(conn, target):
    import warnings
    import torch
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    warnings.simplefilter("ignore")
    workdir = tempfile.mkdtemp(prefix="dpcfuzz")
    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        key, args = job
        global _PHASE
        _PHASE = lambda phase: conn.send(("phase", key, phase))  # noqa: E731
        try:
            result = target(*args)
        except BaseException as e:  # noqa: BLE001
            result = Result("crash", f"worker: {_exc_line(e)}", traceback.format_exc())
        _PHASE = None
        # plain tuples: the parent may have loaded this file under another module name
        conn.send(("done", key, dataclasses.astuple(result)))


class Pool:
    """`jobs` forked workers running target(*args) -> Result; a job past `timeout` s is a hang and its
    worker is killed and replaced; a worker that dies is a crash."""

    def __init__(self, jobs: int, target=None, timeout: float = 5.0, recycle: int = 150):
        import multiprocessing as mp
        self.ctx = mp.get_context("fork")
        self.jobs, self.timeout, self.recycle = max(1, jobs), timeout, recycle
        self.target = target or (lambda text, seed, overrides: classify(text, seed, overrides, workdir="."))
        self.workers = []

    def _spawn(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, self.target), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "job": None, "deadline": None, "done": 0}

    def _kill(self, w):
        try:
            w["proc"].kill()
            w["proc"].join(5)
        except Exception:  # noqa: BLE001
            pass
        w["conn"].close()

    def close(self):
        for w in self.workers:
            try:
                w["conn"].send(None)
            except Exception:  # noqa: BLE001
                pass
        for w in self.workers:
            w["proc"].join(2)
            if w["proc"].is_alive():
                self._kill(w)
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, items):
        """items: iterable of (key, args). Yields (key, Result) as they finish."""
        from multiprocessing.connection import wait
        pending = collections.deque(items)
        while len(self.workers) < min(self.jobs, max(1, len(pending))):
            self.workers.append(self._spawn())
        while pending or any(w["job"] is not None for w in self.workers):
            for i, w in enumerate(self.workers):
                if w["job"] is None and pending:
                    if w["done"] >= self.recycle or not w["proc"].is_alive():
                        self._kill(w)
                        w = self.workers[i] = self._spawn()
                    key, args = pending.popleft()
                    w["job"], w["deadline"], w["phase"] = key, time.monotonic() + self.timeout, "start"
                    w["conn"].send((key, args))
            busy = [w for w in self.workers if w["job"] is not None]
            now = time.monotonic()
            ready = wait([w["conn"] for w in busy], timeout=max(0.0, min(w["deadline"] for w in busy) - now))
            for i, w in enumerate(self.workers):
                if w["job"] is None:
                    continue
                if w["conn"] in ready:
                    try:
                        kind, key, payload = w["conn"].recv()
                        if kind == "phase":
                            w["deadline"], w["phase"] = time.monotonic() + self.timeout, payload
                            continue
                        result = Result(*payload)
                    except (EOFError, OSError):
                        key = w["job"]
                        w["proc"].join(1)
                        result = Result("crash", f"worker died (exit code {w['proc'].exitcode})")
                        self._kill(w)
                        self.workers[i] = self._spawn()
                        yield key, result
                        continue
                    w["job"], w["done"] = None, w["done"] + 1
                    yield key, result
                elif time.monotonic() >= w["deadline"]:
                    key = w["job"]
                    self._kill(w)
                    self.workers[i] = self._spawn()
                    yield key, Result("hang", f"{w['phase']}: no result within {self.timeout:g} s")


# ============================================================================================
# Shrinking, the run, the report
# ============================================================================================

def kind_of(result: Result, text: str = "") -> str:
    """A failure's kind, for deduplication: the outcome and its message with the program's names,
    numbers and quoted text abstracted."""
    msg = result.message
    if result.outcome == "mismatch":
        msg = re.sub(r"\[\d+\]", "", msg.split(":")[0])
    elif result.outcome == "hang":
        msg = msg.split(":")[0]  # the phase
    elif result.outcome == "bad_error":
        msg = re.sub(r":\s*\S*fuzz\.dp.*", "", msg)
        msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    msg = re.sub(r"'([A-Za-z_][A-Za-z0-9_]*)'", lambda m: "'<name>'" if m.group(1) in names else m.group(0), msg)
    msg = re.sub(r"\S*fuzz\.dp:\d+:\d+", "FILE:L:C", msg)
    msg = re.sub(r"(?<![A-Za-z_0-9])\d+(\.\d+)?(e[-+]?\d+)?", "N", msg)
    return f"{result.outcome}: {msg[:120]}"


def _spaced_tokens(text: str) -> list[str]:
    """Tokens with the whitespace after them: deleting one never glues its neighbours together."""
    out: list[str] = []
    for t in tokens(text):
        if t.isspace() and out:
            out[-1] += t
        else:
            out.append(t)
    return out


def shrink(text: str, result: Result, pool: Pool, seed: int, overrides=None, budget: int = 150,
           seconds: float = 30.0) -> tuple[str, Result]:
    """Delete chunks of lines, then of tokens (halves, quarters, ... single ones: ddmin), while the failure
    keeps its kind; candidates run in parallel batches of pool.jobs, the first that keeps the kind wins."""
    want = kind_of(result, text)
    tries = 0
    deadline = time.monotonic() + seconds
    if result.outcome == "hang":
        budget = min(budget, 12)
    best, best_result = text, result
    for unit in ("lines", "tokens"):
        parts = best.split("\n") if unit == "lines" else _spaced_tokens(best)
        joiner = "\n" if unit == "lines" else ""
        chunk = max(1, len(parts) // 2)
        while tries < budget and time.monotonic() < deadline:
            i, progress = 0, False
            while i < len(parts) and tries < budget and time.monotonic() < deadline:
                starts = list(range(i, len(parts), chunk))[:max(1, pool.jobs)]
                candidates = [parts[:k] + parts[k + chunk:] for k in starts]
                candidates = [(k, c) for k, c in zip(starts, candidates) if joiner.join(c).strip()]
                if not candidates:
                    break
                tries += len(candidates)
                results = dict(pool.run([(n, (joiner.join(c), seed, overrides)) for n, (_, c) in
                                         enumerate(candidates)]))
                hit = next((n for n in range(len(candidates))
                            if kind_of(results[n], joiner.join(candidates[n][1])) == want), None)
                if hit is None:
                    i = starts[-1] + chunk
                    continue
                i, parts = candidates[hit][0], candidates[hit][1]
                best, best_result, progress = joiner.join(parts), results[hit], True
            if chunk == 1 and not progress:
                break
            chunk = max(1, chunk // 2) if not progress or chunk > 1 else 1
        if result.outcome == "hang":
            break
    best = re.sub(r"\n{3,}", "\n\n", best)
    return best, best_result


@dataclasses.dataclass
class Failure:
    index: int
    text: str
    result: Result
    kind: str
    seed: int
    overrides: dict | None = None
    shrunk: str | None = None
    shrunk_result: Result | None = None
    origin: str = ""


@dataclasses.dataclass
class Report:
    counts: collections.Counter
    failures: list
    elapsed: float          # running the programs (shrinking excluded)
    jobs: int
    verified: int
    shrink_time: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = ", ".join(f"{o} {self.counts[o]}" for o in OUTCOMES if self.counts[o] or o in PASSING)
        rate = self.total / self.elapsed if self.elapsed else 0.0
        line = f"{self.total} programs in {self.elapsed:.0f} s ({self.jobs} jobs, {rate:.1f}/s): {parts}"
        if self.shrink_time:
            line += f"; shrinking {self.shrink_time:.0f} s more"
        if self.counts["ok"] and not self.verified:
            line += "\n(no dpc.reference: `ok` programs ran but were not compared)"
        elif self.counts["ok"]:
            line += f"\n({self.verified} of {self.counts['ok']} ok programs compared with dpc.reference)"
        return line

    def kinds(self) -> dict:
        out: dict[str, list] = {}
        for f in self.failures:
            out.setdefault(f.kind, []).append(f)
        return out

    def describe_failures(self, limit: int = 20) -> str:
        lines = []
        for kind, fs in sorted(self.kinds().items(), key=lambda kv: -len(kv[1]))[:limit]:
            f = fs[0]
            text = f.shrunk or f.text
            lines += [f"== {kind}  (x{len(fs)}, e.g. program {f.index}, {f.origin})",
                      f"   {f.result.message}", *("   | " + ln for ln in _cut(text.rstrip("\n")).split("\n")), ""]
        return "\n".join(lines)


def make_jobs(programs: int, seed: int, mutate_share: float, start: int = 0):
    """(index, text, data seed, overrides, origin) for programs start..start+programs-1."""
    bases = examples()
    for i in range(start, start + programs):
        rng = random.Random(f"dpc-fuzz:{seed}:{i}")
        overrides = None
        if rng.random() < mutate_share:
            if rng.random() < 0.6:
                k = rng.randrange(len(bases))
                base, origin = bases[k], f"mutated example {sorted(EXAMPLES.glob('*.dp'))[k].name}"
            else:
                base, origin = generate(rng), "mutated generated program"
            text = mutate(base, rng)
        else:
            text, origin = generate(rng), "generated"
            if rng.random() < 0.04:
                overrides = rng.choice([{"unroll": "3"}, {"unroll": "0"}, {"unroll": "x"}, {"lam": "0.2"},
                                        {"lam": "abc"}, {"nothere": "1"}, {"tau": "1e309"}, {"lam": "-1"}])
        yield i, text, rng.randrange(2 ** 31), overrides, origin


def run(programs: int, seed: int = 0, jobs: int | None = None, out: str | None = None, mutate_share: float = 0.3,
        timeout: float = 5.0, shrink_per_kind: int = 3, shrink_budget: int = 150, shrink_seconds: float = 30.0,
        log=None) -> Report:
    jobs = jobs or os.cpu_count() or 1
    _warm_up()
    started = time.monotonic()
    counts: collections.Counter = collections.Counter()
    failures: list[Failure] = []
    verified = 0
    texts = {}
    with Pool(jobs, timeout=timeout) as pool:
        items = []
        for i, text, data_seed, overrides, origin in make_jobs(programs, seed, mutate_share):
            texts[i] = (text, data_seed, overrides, origin)
            items.append((i, (text, data_seed, overrides)))
        done = 0
        for i, result in pool.run(items):
            done += 1
            counts[result.outcome] += 1
            verified += result.verified
            if result.outcome not in PASSING:
                text, data_seed, overrides, origin = texts[i]
                failures.append(Failure(i, text, result, kind_of(result, text), data_seed, overrides, origin=origin))
            if log and (done % max(1, programs // 10) == 0 or done == programs):
                log(f"  {done}/{programs} ({time.monotonic() - started:.0f} s): "
                    + ", ".join(f"{o} {counts[o]}" for o in OUTCOMES if counts[o]))
        # a hang is run once more on its own: the machine may have been busy (other jobs, other users)
        hangs = [f for f in failures if f.result.outcome == "hang"]
        if hangs:
            again = dict(pool.run([(f.index, (f.text, f.seed, f.overrides)) for f in hangs]))
            for f in hangs:
                if again[f.index].outcome != "hang":
                    counts["hang"] -= 1
                    counts[again[f.index].outcome] += 1
                    verified += again[f.index].verified
                    f.result = again[f.index]
                    f.kind = kind_of(f.result, f.text)
            failures = [f for f in failures if f.result.outcome not in PASSING]
        elapsed = time.monotonic() - started
        failures.sort(key=lambda f: f.index)
        shrunk_per_kind: collections.Counter = collections.Counter()
        for f in failures:
            if shrunk_per_kind[f.kind] < shrink_per_kind:
                shrunk_per_kind[f.kind] += 1
                f.shrunk, f.shrunk_result = shrink(f.text, f.result, pool, f.seed, f.overrides, shrink_budget,
                                                   shrink_seconds)
    report = Report(counts, failures, elapsed, jobs, verified, time.monotonic() - started - elapsed)
    if out:
        write_failures(report, out)
    return report


def _cut(text: str, width: int = 240, lines: int = 40) -> str:
    """Long lines and long programs shortened for reading (the .dp files keep them whole)."""
    rows = text.split("\n")
    shown = [ln if len(ln) <= width else ln[:width - 20] + f" ... ({len(ln)} chars)" for ln in rows[:lines]]
    if len(rows) > lines:
        shown.append(f"... ({len(rows) - lines} more lines)")
    return "\n".join(shown)


def write_failures(report: Report, out: str):
    os.makedirs(out, exist_ok=True)
    for f in report.failures:
        base = os.path.join(out, f"{f.result.outcome}_{f.index}")
        text = f.shrunk if f.shrunk is not None else f.text
        with open(base + ".dp", "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        result = f.shrunk_result or f.result
        parts = [f"outcome: {result.outcome}", f"kind: {f.kind}", f"message: {result.message}",
                 f"program {f.index} ({f.origin}), data seed {f.seed}"]
        if f.overrides:
            parts.append(f"overrides (--set): {f.overrides}")
        parts += ["", result.detail or ""]
        if f.shrunk is not None:
            parts += ["", "shrunk from:", f.text]
        with open(base + ".txt", "w", encoding="utf-8", newline="") as fh:
            fh.write("\n".join(parts))
    lines = ["# fuzz failures by kind", "", report.summary(), ""]
    for kind, fs in sorted(report.kinds().items(), key=lambda kv: -len(kv[1])):
        f = fs[0]
        text = f.shrunk if f.shrunk is not None else f.text
        lines += [f"## {kind}", "", f"{len(fs)} programs: " + ", ".join(
            f"{x.result.outcome}_{x.index}" for x in fs[:12]) + (" ..." if len(fs) > 12 else ""), "",
            f"message: `{(f.shrunk_result or f.result).message}`", "", "```", _cut(text.rstrip("\n")), "```", ""]
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=200, help="how many programs (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="worker processes (default: CPU count)")
    ap.add_argument("--out", metavar="DIR", help="write failing programs and summary.md here")
    ap.add_argument("--mutate-share", type=float, default=0.3, help="share of mutated programs (default 0.3)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per program (default 5)")
    ap.add_argument("--shrink", type=int, default=3, help="failures shrunk per kind (default 3)")
    args = ap.parse_args(argv)
    report = run(args.programs, args.seed, args.jobs, args.out, args.mutate_share, args.timeout, args.shrink,
                 log=lambda s: print(s, file=sys.stderr, flush=True))
    print(report.summary())
    if report.failures:
        print()
        print(report.describe_failures())
    return 0


if __name__ == "__main__":
    sys.exit(main())
