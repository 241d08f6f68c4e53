"""Generation: random well-typed programs, built from the typing rules of compiler/lower.py and the atom
declarations. Gen(rng).program() -> text; generate(rng) the same.

The atoms a program calls are read from their declarations (dpc.declare.declared(role), see Palette): where
the generator applies "an elementwise function", "a smooth function", "a threshold" or "a reduction" it
picks among the declared atoms of that role (by their fuzz weights, in declaration order), feeds the
argument into the atom's domain (FUZZ_DOMAINS: bounded ones get tanh(...) or sigmoid(...), positive ones
c + abs(...), 1 + square(...) or a positive scalar) and writes the scalar arguments it declares (positive and
nonnegative ones as positive scalars, real ones as an increasing range, lo <= hi). A newly declared atom
with a Fuzz role is therefore generated without editing this file. What stays written here is the
language's structure: programs, directives, the proximal forms of objectives (norm1, sqnorm, norm0
penalties), k-means, and the building blocks that keep values in a domain (tanh, sigmoid, exp, abs, square).
"""
from __future__ import annotations

import random
import re

from dpc.fuzz.expressions import ATOM, POST, PROD, SUM, Expressions, Node, wrap


class Gen(Expressions):
    """A random well-typed program: declarations, an objective or an update, directives (program())."""

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
            if self.mat_named(shape, ctx - {"input"}) or shape[0] == shape[1]:
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
                # per-value tying: the reference LISTA's one W with S_t, theta_t per layer, and the reverse
                (1, "weights untied except W"), (0.5, "weights tied except theta"), (0.3, "weights tied except S"),
                (0.3, "weights coupled untied except W"), (0.3, "stepsizes untied except gamma"),
                (self.mistake(0.1), "weights except W"), (self.mistake(0.1), "weights untied except W untied"),
                (self.mistake(0.3), "weights sideways"),
                # learned nonlinearities: RBF sums on a grid for unit-scale data (influence: mostly rejected, there
                # being no convT(K, E(conv(K, u))) in most updates)
                (1, "shrink(rbfs = 21, range = 8)"), (0.5, "shrink(rbfs = 15, range = 4) tied"),
                (0.4, "influence(rbfs = 21, range = 8) untied"), (self.mistake(0.1), "shrink(21)")]))
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
                                (1, self.composite_program), (1.5, self.matrix_objective_program),
                                (1.5, self.matrix_update_program), (1.5, self.operator_program)])
        family()
        text = "\n".join(self.lines) + "\n"
        if self.chance(0.1):
            text = self.decorate(text)
        return text

    def operator_program(self):
        """An image or signal program with the declared operators (dpc.fuzz.images)."""
        from dpc.fuzz.images import operator_program
        operator_program(self)

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
            P = self.atoms
            smooth.append(self.weighted([
                (1 if P.objective_bounded else 0, lambda: self.bin("*", Node(ATOM, "0.1"), self.call("sum", self.call(
                    self.choose(P.objective_bounded).name, self.bin("*", Node(ATOM, "0.1"), zz))))),
                (1, lambda: self.bin("*", Node(ATOM, "0.5"), self.call("sqnorm", self.call("tanh", zz)))),
                (1, lambda: self.power(self.bin("@", self.bin("@", self.T(self.name(D)), self.name(x)), zz),
                                       Node(ATOM, "2"))),
                (1, lambda: self.call("sqrt", self.bin("+", Node(ATOM, "1"), self.call("sqnorm", zz)))),
                (1 if P.objective_positive_scalar else 0, lambda: self.call(
                    self.choose(P.objective_positive_scalar).name, self.bin("+", Node(ATOM, "1"), self.call(
                        "sqnorm", self.bin("-", self.bin("@", self.name(D), zz), self.name(x)))))),
                (1, lambda: Node(SUM, f"sum_j {wrap(self.power(Node(POST, f'({D} @ {z} - {x})[j]'), Node(ATOM, '2')), PROD)}")),
                (1, lambda: self.bin("*", self.name(mu), self.power(self.call("sum", zz), Node(ATOM, "2")))),
                (1, lambda: self.call("sqnorm", self.bin("-", self.bin("*", self.name(lam), zz), self.bin(
                    "@", self.T(self.name(D)), self.name(x))))),
                # smooth entrywise atoms of affine maps (dpc's own calculus; a Lipschitz bound or a step error)
                (1 if P.smooth_params else 0, lambda: self.call("sum", self.apply(
                    self.choose(P.smooth_params), lambda: self.bin("-", self.name(x), self.bin("@", self.name(D), zz)),
                    ctx))),
                (1 if P.objective_loss else 0, lambda: self.bin(
                    "-", self.call("sum", self.call(self.choose(P.objective_loss).name, self.bin("@", self.name(D), zz))),
                    self.bin("@", self.name(x), self.bin("@", self.name(D), zz)))),
                (1 if P.objective_loss else 0, lambda: self.call("sum", self.call(
                    self.choose(P.objective_loss).name,
                    self.bin("*", self.neg(self.name(x)), self.bin("@", self.name(D), zz))))),
                (1 if P.objective_positive else 0, lambda: self.positive_term(ctx, self.bin("@", self.name(D), zz))),
                (1 if P.objective_smooth else 0, lambda: self.call("sum", self.call(
                    self.choose(P.objective_smooth).name, self.bin("-", zz, self.num())))),
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

    def positive_term(self, ctx, affine: Node) -> Node:
        """c*sum(phi(1 + square(A @ z))) for a smooth atom of the positive domain."""
        f = self.choose(self.atoms.objective_positive)
        return self.bin("*", self.den(ctx, 0), self.call("sum", self.call(f.name, self.bin(
            "+", Node(ATOM, "1"), self.call("square", affine)))))

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

    def matrix_objective_program(self):
        """Objectives in matrix vars (each sample a matrix X): one var, X ~ D @ Z or X ~ Z, or several (robust
        PCA: X ~ L + S), each var's penalty among the declared matrix reductions with a prox (norm1, sqnorm,
        nuclear, norm21), by derive proxgrad or fista (one joint step, each var's own prox)."""
        self.header("matrix objective")
        dictionary = self.chance(0.4)
        m, n, *rest = self.base_decls(3 if dictionary else 2)
        X = self.fresh(["X", "Y", "M", "obs", "x"])
        self.decl("input", X, (m, n))
        D = None
        shape = (m, n)
        if dictionary:
            D = self.fresh(["D", "A", "Phi"])
            self.decl("param", D, (m, rest[0]))
            shape = (rest[0], n)
        Y = None
        if self.chance(0.2):
            Y = self.fresh(["B", "C", "E", "K"])
            self.decl(self.pick(["param", "input"]), Y, shape)
        hypers = self.hypers(self.r.randint(1, 3), ["lam", "mu", "tau"])
        L = None
        if D is not None and self.chance(0.6):
            L = self.fresh(["L", "Lip"])
            self.decl("let", L, (), self.power(self.call("opnorm", self.name(D)), Node(ATOM, "2")))
            self.positive_lets.add(L)
        nvars = self.weighted([(3, 1), (3, 2), (0.5, 3)])
        ctx = frozenset({"param", "hyper", "let"})
        names = []
        for i in range(nvars):
            v = self.fresh(["Z", "L_", "S", "E_", "Q", "U"] if i == 0 else ["S", "E_", "N_", "Z", "U", "V"])
            self.decl("var", v, shape if i == 0 else (m, n), self.start(shape if i == 0 else (m, n), ctx))
            names.append(v)
        if self.chance(self.mistake(0.03)):
            v = self.fresh(self.VAR_NAMES)
            self.decl("var", v, (n,), None)  # a vector var nothing reads
        model = self.bin("@", self.name(D), self.name(names[0])) if D is not None else self.name(names[0])
        for v in names[1:]:
            model = self.bin(self.pick("++-"), model, self.name(v))
        resid = self.bin("-", self.name(X), model) if self.chance(0.7) else self.bin("-", model, self.name(X))
        coef = self.weighted([(3, lambda: Node(ATOM, "0.5")), (1, lambda: None), (1, lambda: self.den(ctx, 1))])()
        fit = self.call("sqnorm", resid)
        terms = [fit if coef is None else self.bin("*", coef, fit)]
        if Y is not None and self.chance(0.7):
            terms.append(self.bin("*", self.num(positive=True, small=True),
                                  self.call("sqnorm", self.bin("-", self.name(names[0]), self.name(Y)))))
        if self.chance(0.1):
            terms.append(self.bin("*", self.num(positive=True, small=True), self.call("sum", self.name(names[-1]))))
        if self.chance(0.1) and self.atoms.objective_smooth:  # a smooth entrywise term: dpc's calculus
            f = self.choose(self.atoms.objective_smooth)
            terms.append(self.bin("*", Node(ATOM, "0.1"), self.call("sum", self.call(f.name, self.name(names[-1])))))
        P = self.atoms
        for i, v in enumerate(names):
            if not P.matrix_penalties or self.chance(0.1):
                continue
            f = self.choose(P.matrix_penalties)
            c = self.weighted([(4, lambda: self.name(self.pick(hypers))), (1, lambda: None),
                               (1, lambda: self.bin("/", self.name(self.pick(hypers)), Node(ATOM, "2")))])()
            term = self.call(f.name, self.name(v))
            terms.append(term if c is None else self.bin("*", c, term))
        if len(names) > 1 and self.chance(self.mistake(0.05)):  # a penalty coupling two vars
            terms.append(self.bin("*", self.name(hypers[0]), self.call(
                self.choose(P.matrix_penalties).name, self.bin("+", self.name(names[0]), self.name(names[1])))))
        if self.chance(self.mistake(0.04)):  # a vector-only or matrix-only atom of the wrong shape
            terms.append(self.call(self.pick(["norm2", "norm0"]), self.name(names[-1])))
        if self.chance(0.3):
            self.r.shuffle(terms)
        text = terms[0].text
        for t in terms[1:]:
            text = f"{text}{self.op('+')}{wrap(t, PROD)}"
        self.lines.append(f"minimize {text}")
        v = names[-1]
        constraint = self.weighted([(8, None), (1, f"{v} >= 0"), (1, f"{v} in nonneg"),
                                    (0.5, f"{v} in box(-1, {self.num(positive=True).text})"),
                                    (self.mistake(0.2), f"{v} in simplex")])
        if constraint:
            self.lines.append(f"subject to {constraint}")
        method = self.weighted([(5, "proxgrad"), (3, "fista"), (self.mistake(0.3), "gd"), (self.mistake(0.2), "admm")])
        step = self.weighted([(4, lambda: ""), (2 if L else 0, lambda: f"(step = 1/{L})"),
                              (1, lambda: f"(step = {self.num(positive=True, small=True).text})"),
                              (1 if L else 0, lambda: f"(step = 0.5/({len(names)}*{L}))")])()
        self.lines.append(f"derive {method}{step}")
        learnable = list(hypers) + ([D] if D else []) + ([Y] if Y and self.decl_kind(Y) == "param" else [])
        self.lines += self.directives(names, iterative=True, learnable=learnable, lista=0.1)

    def decl_kind(self, name):
        return next((k for n, _, k in self.syms if n == name), None)

    def matrix_update_program(self):
        """Updates of matrix states from per-sample matrices: products with params and with other per-sample
        matrices (A @ Q @ X.T: bmm), transposes, entrywise atoms, svt and rowsoft, scalars of matrices
        (nuclear, norm21, Frobenius), a vector state read through a per-sample matrix (X @ z)."""
        self.header("matrix update")
        dims = self.base_decls(self.weighted([(1, 1), (4, 2), (1, 3)]))
        if len(dims) == 1:
            dims = dims * 2
        m, n = dims[0], dims[1]
        X = self.fresh(["X", "Y", "M", "U_", "obs"])
        self.decl("input", X, (m, n))
        if self.chance(0.3):
            self.decl("input", self.fresh(self.INPUT_NAMES), (self.pick([m, n]),))
        for shape in self.r.sample([(m, m), (n, n), (m, n), (n, m)], self.r.randint(1, 3)):
            self.decl("param", self.fresh(["A", "B", "C", "D", "W", "K", "P"]), shape)
        hypers = self.hypers(self.r.randint(1, 2), ["lam", "mu", "tau"])
        self.lets(self.weighted([(3, 0), (2, 1), (1, 2)]))
        ctx0 = frozenset({"input", "param", "hyper", "let"})
        states = []
        for i in range(self.weighted([(5, 1), (3, 2)])):
            shape = (m, n) if i == 0 else self.weighted([(2, (n,)), (1, (m,)), (1, (m, n)), (0.5, (n, n))])
            name = self.fresh(["Q", "Z", "H", "S", "V", "T_"] if len(shape) == 2 else self.VAR_NAMES)
            self.decl("var", name, shape, self.start(shape, ctx0))
            states.append((name, shape))
        ctx = ctx0 | {"var"}
        P = self.atoms
        assigns = []
        for name, shape in states:
            if len(shape) == 1:
                value = self.vec(shape[0], ctx, 2)
            else:
                a, b = shape
                lam = self.name(self.pick(hypers))
                step = self.num(positive=True, small=True)
                params = [(nm, s) for nm, s in self.of({"param"}, rank=2) if s == (a, a)]
                inputs = [nm for nm, s in self.of({"input"}, rank=2) if s == shape]
                pull = lambda: self.name(self.pick(inputs)) if inputs else self.mat(a, b, ctx0, 1)  # noqa: E731
                grad = self.weighted([
                    (2, lambda: self.bin("-", self.name(name), pull())),
                    (1 if params else 0, lambda: self.bin("@", self.T(self.name(self.pick(params)[0])), self.bin(
                        "-", self.bin("@", self.name(self.pick(params)[0]), self.name(name)), pull()))),
                    (2, lambda: self.mat(a, b, ctx, 2)),
                ])()
                arg = self.bin("-", self.name(name), self.bin("*", step, grad))
                value = self.weighted([
                    (3 if P.matrix_thresholds else 0, lambda: self.apply(self.choose(P.matrix_thresholds),
                                                                         lambda: arg, ctx0, 0, first=lambda: lam)),
                    (2, lambda: self.mat(a, b, ctx, 2)),
                    (1, lambda: self.call("tanh", self.mat(a, b, ctx, 2))),
                    (0.5, lambda: arg),
                ])()
            assigns.append(f"{name} <- {value.text}")
        if len(assigns) == 1 and self.chance(0.8):
            self.lines.append("update " + assigns[0])
        else:
            self.lines += ["update {"] + ["  " + a for a in assigns] + ["}"]
        learnable = hypers + [nm for nm, _ in self.of({"param"})]
        self.lines += self.directives([s for s, _ in states], learnable=learnable, lista=0.1)

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
        atom = self.choose(self.atoms.thresholds)
        value = self.apply(atom, lambda: arg, frozenset({"hyper"}), 1) if atom is not None else arg
        self.lines.append(f"update {z} <- {value.text}")
        self.lines += self.directives([z], learnable=hypers)

    def threshold_update(self, style, z, n, inputs, D, L, hypers, ctx) -> Node:
        """The first state's update: thresholded affine maps (learn weights, coupled, stepsizes, gates
        reach deep with these), proximal maps, or a random expression."""
        x = inputs[0]
        lam = self.pick(hypers)
        thr = self.weighted([(3, lambda: self.bin("/", self.name(lam), self.name(L))), (1, lambda: self.name(lam)),
                             (1, lambda: self.den(ctx - {"var", "temp", "input"}, 1)),
                             (0.1, lambda: self.bin("*", self.name(lam), self.call("norm1", self.name(z))))])
        # a declared threshold (soft, softpos, hard: 9 parts by their weights) or softss (0.3)
        thresholds = self.atoms.thresholds
        total = sum(a.fuzz.weight for a in thresholds)
        atom = self.weighted([(9 * a.fuzz.weight / total, a) for a in thresholds] + [(0.3, "softss")])

        def threshold(arg):
            if atom == "softss":
                return self.call("softss", arg, thr(), Node(ATOM, "1.2"), Node(ATOM, "13"))
            return self.call(atom.name, arg, *self.params(atom, ctx - {"var", "temp", "input"}, 0, first=thr))

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


FAMILIES = {"operator": "operator_program"}  # `dpc fuzz --family NAME`: one family only


def generate(rng: random.Random, mistakes: bool = True, family: str | None = None) -> str:
    """One random well-typed program; with mistakes, some of its directives are deliberately wrong. family
    (FAMILIES): that family's programs only (the image and signal programs of the operators)."""
    gen = Gen(rng, mistakes)
    if family is None:
        return gen.program()
    getattr(gen, FAMILIES[family])()
    return "\n".join(gen.lines) + "\n"
