r"""The IR as readable math, in .dp syntax: `soft(z - 1/L*D.T @ (D @ z - x), lam/L)`.

Used by `dpc explain`, the derivation notes and the generated module's docstring. `latex` prints the
same math as LaTeX (`dpc explain --latex`): norms as norms, dpc's other atoms as \operatorname{soft}.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from dpc import atoms, declare
from dpc.ir import Program, Step


def atom_name(cls) -> str | None:
    """The .dp name of a declared atom's class (or of an IR node that has one: ones, zeros)."""
    for klass in cls.__mro__:
        if klass in declare.BY_CLASS:
            return declare.BY_CLASS[klass].name
    return getattr(cls, "dp_name", None)


def _declared(expr):
    """The declaration of a node of a declared atom's class (not sympy's scalar functions, which print as
    sympy prints them), or None."""
    for klass in type(expr).__mro__:
        if klass in declare.BY_CLASS:
            return declare.BY_CLASS[klass]
    return None


def _written_args(expr):
    """The arguments a program writes: softss's layer number, its last argument, is implicit in .dp."""
    return [a for a in expr.args if a != atoms.LAYER]


def _call(atom, printed: list[str], name=str) -> str:
    """The arguments of a call as written: an atom's options (softmax(A, axis = 1)) by name (shown by
    `name`), after the one argument an atom with options takes."""
    count = len(printed) - getattr(atom.cls, "operands", 1)  # the options follow the operands
    options = list(atom.options)[:max(count, 0)] if atom.options else []
    written = []
    for (n, why), p in zip(options, printed[len(printed) - len(options):]):
        if isinstance(why, tuple):  # a word option (pad = circular), held as its index
            p = why[int(p)]
        written.append(f"{name(n)} = {p}")
    return ", ".join(printed[:len(printed) - len(options)] + written)


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



def signed_sum(printed: list[str], strip: bool = False) -> str:
    """Printed terms joined as a person writes them, x - D @ z rather than -D @ z + x: positive terms first,
    order kept otherwise (strip: drop the space LaTeX leaves after a leading minus)."""
    printed = [t for t in printed if not t.startswith("-")] + [t for t in printed if t.startswith("-")]
    out = printed[:1]
    for t in printed[1:]:
        rest = t[1:].lstrip() if strip else t[1:]
        out.append(" - " + rest if t.startswith("-") else " + " + t)
    return "".join(out)

class MathPrinter(StrPrinter):
    def _print_Integer(self, expr):
        """An integer of more than 15 digits (a literal 1e308 is exact) as 1e+308, as a person writes it."""
        if abs(expr) < 10 ** 15:
            return super()._print_Integer(expr)
        mantissa, exponent = f"{sp.Float(expr, 16):e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"

    def _print(self, expr, **kwargs):
        atom = _declared(expr)
        if atom is not None:
            return f"{atom.name}({_call(atom, [self._print(a) for a in _written_args(expr)])})"
        return super()._print(expr, **kwargs)

    def _print_Rational(self, expr):
        return decimal(expr)

    def _print_Half(self, expr):
        return "0.5"

    def _print_MatMul(self, expr):
        coeff, factors = expr.as_coeff_matrices()
        body = " @ ".join(self.parenthesize(f, PRECEDENCE["Mul"] + 1) for f in factors)
        if len(factors) == 1 and isinstance(factors[0], sp.HadamardPower) and factors[0].exp == -1:
            body = f"1/{self.parenthesize(factors[0].base, PRECEDENCE['Pow'])}"  # c/b entrywise: 2/exp(z)
            if coeff != 1 and not coeff.could_extract_minus_sign():
                return f"{self._coefficient(coeff)}/{self.parenthesize(factors[0].base, PRECEDENCE['Pow'])}"
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
            try:
                numerator, denominator = sp.fraction(rest)
            except Exception:  # noqa: BLE001 - an atom sympy cannot split: print the product as it is
                numerator, denominator = rest, sp.Integer(1)
            if numerator == 1 and denominator != 1:  # 0.99/normK, not 0.99*1/normK
                return f"{sign}{decimal(abs(coeff))}/{self.parenthesize(denominator, PRECEDENCE['Mul'])}"
            return f"{sign}{decimal(abs(coeff))}*{self.parenthesize(rest, PRECEDENCE['Mul'])}"
        return super()._print_Mul(expr)

    def _print_MatAdd(self, expr):
        return signed_sum([self._print(t) for t in expr.args])

    def _print_HadamardProduct(self, expr):  # a / b entrywise is a * b^-1 in the IR: shown as written
        over = [a.base for a in expr.args if isinstance(a, sp.HadamardPower) and a.exp == -1]
        factors = [a for a in expr.args if not (isinstance(a, sp.HadamardPower) and a.exp == -1)]
        out = " * ".join(self.parenthesize(a, PRECEDENCE["Mul"] + 1) for a in factors) if factors else "1"
        return out + "".join(f" / {self.parenthesize(b, PRECEDENCE['Mul'] + 1)}" for b in over)

    def _print_HadamardPower(self, expr):  # entrywise: v * v is square(v), a derivative's 1/(1 + v) a reciprocal
        base, exponent = expr.args
        if exponent == 2:
            return f"square({self._print(base)})"
        if exponent == -1:
            return f"1/{self.parenthesize(base, PRECEDENCE['Pow'])}"
        return f"{self.parenthesize(base, PRECEDENCE['Pow'])}^{self.parenthesize(exponent, PRECEDENCE['Pow'])}"

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


MathPrinter._print_Row = MathPrinter._print_Basic


def _print_initial(self, expr):
    """zeros(n) for a vector, xavier(n, m) for a matrix."""
    rows, cols = expr.args
    return f"{expr.dp_name}({self._print(rows)}{'' if cols == 1 else ', ' + self._print(cols)})"


def _print_ones(self, expr):
    """ones(n) for a vector, ones(m, n) for a matrix: a scalar broadcast is written out."""
    rows, cols = expr.args
    return f"ones({self._print(rows)}{'' if cols == 1 else ', ' + self._print(cols)})"


MathPrinter._print_Ones = _print_ones
MathPrinter._print_InitialValue = _print_initial

_PRINTER = MathPrinter({"order": "none"})


def math(expr) -> str:
    return _PRINTER.doprint(expr)


def show_shape(shape) -> str:
    return "R" if not shape else "R[" + ", ".join(shape) + "]"


# --- LaTeX (`dpc explain --latex`) ------------------------------------------------


class LatexMathPrinter(LatexPrinter):
    r"""MathPrinter's math as LaTeX: numbers as .dp writes them (0.1, not \frac{1}{10}), terms in the same
    order, atoms by their declared LaTeX (norms as norms, \left\|z\right\|_{1}) or their .dp names
    (\operatorname{soft})."""

    def _print(self, expr, **kwargs):
        atom = _declared(expr)
        if atom is None:
            return super()._print(expr, **kwargs)
        if callable(atom.latex):
            return atom.latex(self, expr, kwargs.get("exp"))
        head = atom.latex or rf"\operatorname{{{atom.name}}}"
        args = _call(atom, [self._print(a) for a in _written_args(expr)], name=lambda n: rf"\text{{{n}}}")
        return self._raised(rf"{head}\left({args}\right)",
                            kwargs.get("exp"))

    def _print_Rational(self, expr):
        text = decimal(expr)
        return super()._print_Rational(expr) if "/" in text else text

    def _print_Half(self, expr):
        return "0.5"

    def _print_Mul(self, expr):
        # 0.5 \left\|x - D z\right\|_{2}^{2}, not \frac{\left\|...\right\|}{2}: the coefficient stays in front
        coeff, rest = expr.as_coeff_Mul()
        if isinstance(coeff, sp.Rational) and not coeff.is_Integer and "/" not in decimal(abs(coeff)):
            sign = "-" if coeff < 0 else ""
            return f"{sign}{decimal(abs(coeff))} {self.parenthesize(rest, PRECEDENCE['Mul'])}"
        return super()._print_Mul(expr)

    def _as_ordered_terms(self, expr, order=None):
        # as MathPrinter: symbols before numbers, subtractions after additions, otherwise as sympy keeps them
        return sorted(expr.args, key=lambda t: (t.is_number, t.could_extract_minus_sign()))

    def _print_MatAdd(self, expr):
        return signed_sum([self._print(t) for t in expr.args], strip=True)

    def _print_HadamardProduct(self, expr):  # a / b entrywise: a \oslash b
        over = [a.base for a in expr.args if isinstance(a, sp.HadamardPower) and a.exp == -1]
        factors = [a for a in expr.args if not (isinstance(a, sp.HadamardPower) and a.exp == -1)]
        out = r" \odot ".join(self.parenthesize(a, PRECEDENCE["Mul"] + 1) for a in factors) if factors else "1"
        return out + "".join(rf" \oslash {self.parenthesize(b, PRECEDENCE['Mul'] + 1)}" for b in over)

    def _print_Identity(self, expr):
        return f"I_{{{self._print(expr.rows)}}}"

    def _print_ZeroMatrix(self, expr):
        return "0"

    def _print_OneMatrix(self, expr):
        return r"\mathbf{1}"

    def _print_Ones(self, expr):
        rows, cols = expr.args
        size = self._print(rows) if cols == 1 else rf"{self._print(rows)} \times {self._print(cols)}"
        return rf"\mathbf{{1}}_{{{size}}}"

    def _print_InitialValue(self, expr):
        rows, cols = expr.args
        return self._call(expr.dp_name, [rows] if cols == 1 else [rows, cols])

    def _print_Dot(self, expr, exp=None):
        a, b = (self.parenthesize(x, PRECEDENCE["Mul"] + 1) for x in expr.args)
        return self._raised(f"{a}^{{T}} {b}", exp)

    def _print_Entry(self, expr, exp=None):
        return self._raised(f"{self._subscripted(expr.args[0])}_{{{self._print(expr.args[1])}}}", exp)

    def _print_IndexSum(self, expr, exp=None):
        body = self.parenthesize(expr.args[0], PRECEDENCE["Mul"], strict=True)
        return self._raised(rf"\sum_{{{self._print(expr.args[1])}}} {body}", exp)


    def _print_Row(self, expr):
        return f"{self._subscripted(expr.args[0])}_{{{self._print(expr.args[1])}}}"

    def _print_IndexVector(self, expr):
        body, index, _ = expr.args
        return rf"\left[{self._print(body)}\right]_{{{self._print(index)}}}"

    def _call(self, name, args):
        return rf"\operatorname{{{name}}}\left({', '.join(self._print(a) for a in args)}\right)"

    def _subscripted(self, expr):
        """A name takes a subscript as it is; anything else in parentheses first."""
        return self._print(expr) if isinstance(expr, (sp.Symbol, sp.MatrixSymbol)) else \
            rf"\left({self._print(expr)}\right)"

    @staticmethod
    def _raised(tex, exp):
        return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"


_LATEX_PRINTER = LatexMathPrinter({"order": "none"})


def latex(expr) -> str:
    r"""expr as LaTeX math: `\operatorname{soft}\left(W x + S z, \theta\right)`."""
    return _LATEX_PRINTER.doprint(expr)


def latex_name(name: str) -> str:
    r"""A declared name as LaTeX: theta -> \theta, U_i -> U_{i} (sympy's rules for symbol names)."""
    return _LATEX_PRINTER.doprint(sp.Symbol(name))


def latex_shape(shape) -> str:
    return r"\mathbb{R}" if not shape else r"\mathbb{R}^{" + r" \times ".join(latex_name(d) for d in shape) + "}"


@dataclass(frozen=True)
class _Style:
    """How format_program writes math, names, shapes, the update arrow and comments."""
    math: Callable
    name: Callable
    shape: Callable
    arrow: str
    member: str
    comment: str


_PLAIN = _Style(math, str, lambda shape: show_shape(shape), "<-", ":", "#")
_LATEX = _Style(latex, latex_name, latex_shape, r"\leftarrow", r"\in", "%")


def format_step(step: Step, indent: str = "  ", latex: bool = False) -> list[str]:
    st = _LATEX if latex else _PLAIN
    lines = [f"{indent}let {st.name(n)} = {st.math(e)}" for n, e in step.lets]
    lines += [f"{indent}{st.name(n)} {st.arrow} {st.math(e)}" for n, e in step.assigns]
    return lines


def program_lines(p: Program, latex: bool = False) -> list[tuple[tuple, str]]:
    """The whole program, one (key, line) a declaration or equation: the key names the line's place (a
    declaration, the objective, an update's equation), so `dpc explain` can say which lines a pass added,
    removed or rewrote. `latex`: its math as LaTeX, the keywords kept."""
    st = _LATEX if latex else _PLAIN
    out = [(("network",), f"network {p.name}")]
    if p.dims:
        out.append((("dims",), f"  dims {', '.join(p.dims)}"))
    for d in p.decls:
        if d.kind == "temp":
            continue
        head = f"  {d.kind} {st.name(d.name)}" + (
            f" {st.member} {st.shape(d.shape)}" if d.shape or d.kind == "var" else "")
        if d.kind == "weight":
            sharing = "one per layer" if d.per_layer else ("shared by all layers" if p.layers else "one layer")
            out.append((("decl", d.name), f"{head} = {st.math(d.value)}    {st.comment} learned, {sharing}"))
            continue
        if d.value is not None:
            head += f" = {st.math(d.value)}"
        if d.init:
            head += f" = {d.init}"
        if d.trainable:
            head += f"    {st.comment} learned" + (", one copy per layer" if d.per_layer else "")
        out.append((("decl", d.name), head))
    if p.objective is not None:
        out.append((("minimize",), f"  minimize {st.math(p.objective)}"))
    for i, c in enumerate(p.constraints):
        out.append((("subject to", i), f"  subject to {format_constraint(c, latex)}"))
    for name, expr in p.closed_form:
        out.append((("closed form", name), f"  {st.name(name)} = {st.math(expr)}"))
    if p.first_step is not None:
        out.append((("block", "first"), "  first layer {"))
        out += _keyed_step("first", p.first_step, latex)
        out.append((("block end", "first"), "  }"))
    if p.step is not None:
        out.append((("block", "step"), "  update {" if p.first_step is None else "  every later layer {"))
        out += _keyed_step("step", p.step, latex)
        out.append((("block end", "step"), "  }"))
    if p.layers is not None:
        from dpc.graph import tying_words
        tying = tying_words(p)
        out.append((("unroll",), f"  unroll {p.layers}{tying}"))
    if p.output:
        out.append((("output",), f"  output {p.output}"))
    return out


def _keyed_step(block: str, step: Step, latex: bool) -> list[tuple[tuple, str]]:
    keys = [(block, "let", n) for n, _ in step.lets] + [(block, "assign", n) for n, _ in step.assigns]
    return list(zip(keys, format_step(step, "    ", latex)))


def format_program(p: Program, latex: bool = False) -> str:
    """The whole program, one declaration or equation a line; `latex`: its math as LaTeX, the keywords kept."""
    return "\n".join(line for _, line in program_lines(p, latex))


def format_constraint(c, latex: bool = False) -> str:
    if latex:
        return latex_constraint(c)
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


def latex_constraint(c, name=None, tex=None) -> str:
    """`z >= 0`, `z in box(lo, hi)`, `z in ball(r)` as LaTeX; name and tex render the var and the bounds
    (the derivation's report renders names its own way)."""
    name, tex = name or latex_name, tex or latex
    var = name(c.var)
    if c.set == "box":
        lo, hi = c.args
        if hi == sp.oo:
            return rf"{var} \geq {tex(lo)}"
        if lo == -sp.oo:
            return rf"{var} \leq {tex(hi)}"
        return rf"{var} \in \left[{tex(lo)}, {tex(hi)}\right]"
    args = rf"\left({', '.join(tex(a) for a in c.args)}\right)" if c.args else ""
    return rf"{var} \in \operatorname{{{c.set}}}{args}"

