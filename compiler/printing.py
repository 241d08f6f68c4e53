"""The IR as readable math, in .dp syntax: `soft(z - 1/L*D.T @ (D @ z - x), lam/L)`.

Used by `dpc explain`, the derivation notes and the generated module's docstring.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from dpc import atoms
from dpc.ir import Program, Step

_NAMES = {atoms.SqNorm: "sqnorm", atoms.Norm1: "norm1", atoms.Norm2: "norm2", atoms.Norm0: "norm0",
          atoms.SumAll: "sum", atoms.OpNorm: "opnorm", atoms.Soft: "soft", atoms.SoftPos: "softpos", atoms.Hard: "hard",
          atoms.Clamp: "clamp", atoms.Relu: "relu", atoms.Sigmoid: "sigmoid", atoms.Tanh: "tanh",
          atoms.Exp: "exp", atoms.Log: "log", atoms.Abs: "abs", atoms.Softmax: "softmax"}


def atom_name(cls) -> str | None:
    for klass in cls.__mro__:
        if klass in _NAMES:
            return _NAMES[klass]
    return getattr(cls, "dp_name", None)


def decimal(r: sp.Rational) -> str:
    """1/2 -> 0.5, 1/10 -> 0.1; other rationals stay p/q."""
    q = int(r.q)
    while q % 2 == 0:
        q //= 2
    while q % 5 == 0:
        q //= 5
    if q != 1:
        return f"{r.p}/{r.q}"
    text = format(sp.Float(r, 30), "f").rstrip("0").rstrip(".") if r.q != 1 else str(r.p)
    return text


class MathPrinter(StrPrinter):
    def _print_Rational(self, expr):
        return decimal(expr)

    def _print_Half(self, expr):
        return "0.5"

    def _print_MatMul(self, expr):
        coeff, factors = expr.as_coeff_matrices()
        body = " @ ".join(self.parenthesize(f, PRECEDENCE["Mul"] + 1) for f in factors)
        if coeff == 1:
            return body
        if coeff == -1:
            return "-" + body
        if coeff.could_extract_minus_sign():
            return f"-{self._coefficient(-coeff)}*{body}"
        return f"{self._coefficient(coeff)}*{body}"

    def _coefficient(self, coeff):
        """0.1*D.T, not (0.1)*D.T: a number needs no parentheses."""
        return self._print(coeff) if coeff.is_Number else self.parenthesize(coeff, PRECEDENCE["Mul"])

    def _print_Add(self, expr, order=None):
        # t - 1, not -1 + t: symbols first, then numbers; subtractions after additions
        terms = sorted(expr.args, key=lambda t: (t.is_number, t.could_extract_minus_sign()))
        out = []
        for i, t in enumerate(terms):
            negative = t.could_extract_minus_sign()
            s = self._print(-t if negative else t)
            if self._needs_parens_in_add(-t if negative else t):
                s = f"({s})"
            out.append((" - " if negative else " + ") + s if i else ("-" + s if negative else s))
        return "".join(out)

    @staticmethod
    def _needs_parens_in_add(term):
        return isinstance(term, sp.Add)

    def _print_Mul(self, expr):
        coeff, rest = expr.as_coeff_Mul()
        if isinstance(coeff, sp.Rational) and not coeff.is_Integer and coeff.q != 1 and decimal(abs(coeff)).find("/") < 0:
            sign = "-" if coeff < 0 else ""
            return f"{sign}{decimal(abs(coeff))}*{self.parenthesize(rest, PRECEDENCE['Mul'])}"
        return super()._print_Mul(expr)

    def _print_MatAdd(self, expr):
        printed = [self._print(t) for t in expr.args]
        # a person writes x - D @ z, not -D @ z + x: positive terms first, order kept otherwise
        printed = [s for s in printed if not s.startswith("-")] + [s for s in printed if s.startswith("-")]
        out = []
        for i, s in enumerate(printed):
            if i == 0:
                out.append(s)
            elif s.startswith("-"):
                out.append(" - " + s[1:])
            else:
                out.append(" + " + s)
        return "".join(out)

    def _print_HadamardProduct(self, expr):
        return " * ".join(self.parenthesize(a, PRECEDENCE["Mul"] + 1) for a in expr.args)

    def _print_Transpose(self, expr):
        if isinstance(expr.arg, (sp.MatrixSymbol, sp.Symbol)):
            return f"{expr.arg.name}.T"
        return f"({self._print(expr.arg)}).T"

    def _print_Identity(self, expr):
        return f"eye({self._print(expr.rows)})"

    def _print_ZeroMatrix(self, expr):
        return "0"

    def _print_OneMatrix(self, expr):
        return "ones"

    def _print_MatrixSymbol(self, expr):
        return expr.name

    def _print_Symbol(self, expr):
        return expr.name

    def _print_Function(self, expr):
        name = atom_name(type(expr))
        if isinstance(expr, atoms.Dot):
            a, b = expr.args
            return f"{self.parenthesize(a, PRECEDENCE['Mul'] + 1)} @ {self.parenthesize(b, PRECEDENCE['Mul'] + 1)}"
        if isinstance(expr, atoms.Entry):
            return f"{self._print(expr.args[0])}[{self._print(expr.args[1])}]"
        if isinstance(expr, atoms.IndexSum):
            return f"sum_{self._print(expr.args[1])} {self.parenthesize(expr.args[0], PRECEDENCE['Mul'])}"
        if name is None:
            return super()._print_Function(expr)
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"

    def _print_IndexVector(self, expr):
        body, index, _ = expr.args
        return f"[{self._print(body)}]_{self._print(index)}"

    def _print_Basic(self, expr):
        name = atom_name(type(expr))
        if isinstance(expr, atoms.Row):
            return f"{self._print(expr.args[0])}[{self._print(expr.args[1])}]"
        if name is not None:
            return f"{name}({', '.join(self._print(a) for a in expr.args)})"
        return super()._print_Basic(expr)

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sp.S.Half:
            return f"sqrt({self._print(expr.base)})"
        if expr.exp == -1:
            return f"1/{self.parenthesize(expr.base, PRECEDENCE['Pow'])}"
        base = self.parenthesize(expr.base, PRECEDENCE["Pow"])
        return f"{base}^{self.parenthesize(expr.exp, PRECEDENCE['Pow'])}"

    def _print_Max(self, expr):
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Min(self, expr):
        return f"min({', '.join(self._print(a) for a in expr.args)})"

    def _print_Infinity(self, expr):
        return "inf"

    def _print_NegativeInfinity(self, expr):
        return "-inf"


for _cls in (atoms.Soft, atoms.SoftPos, atoms.Hard, atoms.Clamp, atoms.Relu, atoms.Sigmoid, atoms.Tanh, atoms.Exp,
             atoms.Log, atoms.Abs, atoms.Softmax, atoms.Row):
    setattr(MathPrinter, f"_print_{_cls.__name__}", MathPrinter._print_Basic)


def _print_softss(self, expr):
    """softss(v, t, p, pmax) as written: the layer number, its last argument, is implicit in .dp."""
    return f"softss({', '.join(self._print(a) for a in expr.args[:4])})"


def _print_initial(self, expr):
    """zeros(n) for a vector, xavier(n, m) for a matrix."""
    rows, cols = expr.args
    return f"{expr.dp_name}({self._print(rows)}{'' if cols == 1 else ', ' + self._print(cols)})"


def _print_ones(self, expr):
    """ones(n) for a vector, ones(m, n) for a matrix: a scalar broadcast is written out."""
    rows, cols = expr.args
    return f"ones({self._print(rows)}{'' if cols == 1 else ', ' + self._print(cols)})"


MathPrinter._print_Ones = _print_ones
MathPrinter._print_SoftSS = _print_softss
MathPrinter._print_InitialValue = _print_initial

_PRINTER = MathPrinter({"order": "none"})


def math(expr) -> str:
    return _PRINTER.doprint(expr)


def show_shape(shape) -> str:
    return "R" if not shape else "R[" + ", ".join(shape) + "]"


def format_step(step: Step, indent: str = "  ") -> list[str]:
    lines = [f"{indent}let {n} = {math(e)}" for n, e in step.lets]
    lines += [f"{indent}{n} <- {math(e)}" for n, e in step.assigns]
    return lines


def format_program(p: Program) -> str:
    """The whole program, one declaration or equation a line."""
    out = [f"network {p.name}"]
    if p.dims:
        out.append(f"  dims {', '.join(p.dims)}")
    for d in p.decls:
        if d.kind == "temp":
            continue
        head = f"  {d.kind} {d.name}" + (f" : {show_shape(d.shape)}" if d.shape or d.kind == "var" else "")
        if d.kind == "weight":
            sharing = "one per layer" if d.per_layer else ("shared by all layers" if p.layers else "one layer")
            out.append(f"{head} = {math(d.value)}    # learned, {sharing}")
            continue
        if d.value is not None and not (d.kind == "var" and _is_zero(d.value) and False):
            head += f" = {math(d.value)}"
        if d.trainable:
            head += "    # learned"
        out.append(head)
    if p.objective is not None:
        out.append(f"  minimize {math(p.objective)}")
    for c in p.constraints:
        out.append(f"  subject to {format_constraint(c)}")
    for name, expr in p.closed_form:
        out.append(f"  {name} = {math(expr)}")
    if p.first_step is not None:
        out.append("  first layer {")
        out += format_step(p.first_step, "    ")
        out.append("  }")
    if p.step is not None:
        out.append("  update {" if p.first_step is None else "  every later layer {")
        out += format_step(p.step, "    ")
        out.append("  }")
    if p.layers is not None:
        tying = {True: ", tied", False: ", untied", None: ""}[p.tied]
        out.append(f"  unroll {p.layers}{tying}")
    if p.output:
        out.append(f"  output {p.output}")
    return "\n".join(out)


def format_constraint(c) -> str:
    if c.set == "box":
        lo, hi = c.args
        if hi == sp.oo:
            return f"{c.var} >= {math(lo)}"
        if lo == -sp.oo:
            return f"{c.var} <= {math(hi)}"
        return f"{c.var} in box({math(lo)}, {math(hi)})"
    if c.args:
        return f"{c.var} in {c.set}({', '.join(math(a) for a in c.args)})"
    return f"{c.var} in {c.set}"


def _is_zero(expr) -> bool:
    return isinstance(expr, sp.ZeroMatrix) or expr == 0
