r"""`dpc explain` (and dpc.explain(path)): the derivation a reader can follow.

The compilation's stages (dpc.pipeline.run_text) shown as what each pass changed: the source program in
full, then per pass its notes and the lines it added (+), removed (-) or rewrote (~); `full` prints the
whole program after every pass instead. `latex` writes the same as a LaTeX fragment that compiles as it
is (amsmath): one align* block a pass, updates with iteration indices (z^{k+1} = \operatorname{soft}(...)),
per-layer values with a subscript (W_{k}), conventional Greek names as Greek (lam as \lambda), the notes
as math where they are math. `Explanation` holds one program's stages for the HTML report (dpc.report)
and for Jupyter (`dpc.explain(path)`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from dpc import declare
from dpc.printing import LatexMathPrinter, format_program, latex_constraint, program_lines

# --- what each pass changed ---------------------------------------------------------------------------

ADDED, REMOVED, REWRITTEN = "+", "-", "~"
_STRUCTURE = {"network", "block", "block end"}  # braces and the header: shown only with the lines they hold


@dataclass(frozen=True)
class Change:
    mark: str     # + added, - removed, ~ rewritten
    key: tuple    # the line's place in the program (printing.program_lines)
    text: str     # the line as it reads after the pass (before it, for a removed line)


def changes(before, after) -> list[Change]:
    """The lines of `after` (program_lines) that `before` lacks or words differently, then those it lost."""
    old = {k: t for k, t in before}
    new = {k: t for k, t in after}
    out = []
    for k, t in after:
        if k[0] in _STRUCTURE:
            continue
        if k not in old:
            out.append(Change(ADDED, k, t))
        elif old[k] != t:
            out.append(Change(REWRITTEN, k, t))
    out += [Change(REMOVED, k, t) for k, t in before if k not in new and k[0] not in _STRUCTURE]
    return out


def _block_title(key, program) -> str:
    """Where an update's equation sits, for a change line: `update`, `first layer`, `every later layer`."""
    if key[0] == "first":
        return "first layer"
    if key[0] == "step":
        return "update" if program.first_step is None else "every later layer"
    return ""


def _change_line(change: Change, program) -> str:
    title = _block_title(change.key, program)
    text = change.text.strip()
    return f"   {change.mark} {title + ': ' if title else ''}{text}"


# --- the split's names (f, g) never read as the program's -----------------------------------------------

_SPLIT_CANDIDATES = {"f": ("f", "F", "phi", "f_1", "f_2", "f_3"), "g": ("g", "G", "psi", "g_1", "g_2", "g_3")}


def split_names(taken: set[str]) -> dict[str, str]:
    """The names the notes give the smooth part (f) and the prox part (g): f and g unless the program
    declares them, then F and G, phi and psi, ..."""
    out = {}
    for name, candidates in _SPLIT_CANDIDATES.items():
        out[name] = next((c for c in candidates if c not in taken and c not in out.values()), candidates[-1])
    return out


def rename_split(text: str, names: dict[str, str]) -> str:
    """A note's f(z), grad f, tau*f: and sigma*g* with the split's names; the program's own f, g untouched."""
    for old, new in names.items():
        if old == new:
            continue
        text = re.sub(rf"(?<![\w.]){old}(?=\()", new, text)            # f(z) = ..., g(v) = ...
        text = re.sub(rf"\bgrad {old}\b", f"grad {new}", text)          # grad f(z), of grad f
        text = re.sub(rf"(?<=\*){old}(?=[:*])", new, text)             # prox of tau*f:, sigma*g*
    return text


def _taken(stages) -> set[str]:
    names = set()
    for stage in stages:
        p = stage.program
        names |= {d.name for d in p.decls} | set(p.dims)
        for step in (p.step, p.first_step):
            if step is not None:
                names |= {n for n, _ in step.equations()}
    return names


def _notes(stages):
    """Each stage's own notes (a program keeps every earlier pass's too), the split renamed."""
    names = split_names(_taken(stages))
    previous, out = 0, []
    for stage in stages:
        notes = stage.program.notes[previous:]
        previous = len(stage.program.notes)
        out.append([rename_split(n.text, names) for n in notes])
    return out


def own_notes(notes: list[str], found: list[Change]) -> list[str]:
    """A pass's notes less those its changes repeat: `z <- ...` beside `+ update: z <- ...`, `W = ...`
    beside `+ weight W : R[n, m] = ...`."""
    shown = [c for c in found if c.mark != REMOVED]
    texts = {c.text.strip() for c in shown}
    out = []
    for note in notes:
        m = re.fullmatch(r"(\w+) = (.+)", note.strip())
        if note.strip() in texts or (m and any(c.key == ("decl", m.group(1)) and c.text.lstrip().startswith("weight ")
                                               and f"= {m.group(2)}" in c.text for c in shown)):
            continue
        out.append(note)
    return out


# --- plain text --------------------------------------------------------------------------------------

def explain_text(stages, full: bool = False) -> str:
    """The source program, then each pass's notes (`|`) and changes (`+ - ~`); `full`: the whole program
    after every pass (dpc explain --full). Ends with how the learned values are shared."""
    from dpc.graph import sharing_summary
    out = []
    before = None
    for stage, notes in zip(stages, _notes(stages)):
        out.append(f"== {stage.label}")
        lines = program_lines(stage.program)
        if full or before is None:
            out += [f"   | {note}" for note in notes]
            out.append(format_program(stage.program))
        else:
            found = changes(before, lines)
            notes = own_notes(notes, found)
            out += [f"   | {note}" for note in notes]
            out += [_change_line(c, stage.program) for c in found]
            if not found and not notes:
                out.append("   (no change)")
        before = lines
        out.append("")
    final = stages[-1].program
    if final.layers:
        out.append("== parameters")
        out += [f"   {line}" for line in sharing_summary(final) or ["(nothing learned)"]]
    return "\n".join(out) + "\n"


# --- names as LaTeX ------------------------------------------------------------------------------------

GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi rho "
         "sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi "
         "Omega").split()
# the conventional abbreviations of Greek names (lambda is a Python keyword, so programs write lam)
ALIASES = {"lam": r"\lambda", "lamb": r"\lambda", "lmbda": r"\lambda", "lmb": r"\lambda", "eps": r"\varepsilon",
           "epsilon": r"\varepsilon"}


def _word(word: str, subscript: bool = False) -> str:
    if word in ALIASES:
        return ALIASES[word]
    if word in GREEK:
        return "\\" + word
    if len(word) == 1 or word.isdigit():
        return word
    return rf"\mathrm{{{word}}}" if subscript else rf"\mathit{{{word}}}"


def tex_name(name: str, sub: str | None = None, sup: str | None = None) -> str:
    r"""A declared name as LaTeX: lam -> \lambda, theta -> \theta, U_f -> U_{f}, y1 -> y_{1}, normK ->
    \mathit{normK}; `sub` adds a subscript (a per-layer value's layer: W_{k}), `sup` a superscript (an
    iterate: z^{k+1})."""
    parts = name.split("_")
    base, subs = parts[0], [p for p in parts[1:] if p]
    m = re.fullmatch(r"([A-Za-z]+?)(\d+)", base)
    if m and m.group(1) not in GREEK:
        base, subs = m.group(1), [m.group(2)] + subs
    if not base:
        head = rf"\mathit{{{name.replace('_', chr(92) + '_')}}}"
        subs = []
    else:
        head = _word(base)
    subs = [_word(s, subscript=True) for s in subs] + ([sub] if sub else [])
    tex = head + (f"_{{{','.join(subs)}}}" if subs else "")
    return tex + (f"^{{{sup}}}" if sup else "")


def tex_text(text: str) -> str:
    r"""Words for \text{...}: LaTeX's special characters escaped (as KaTeX and amsmath both read them)."""
    out = []
    for ch in text:
        out.append({"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "^": r"\textasciicircum{}",
                    "#": r"\#", "%": r"\%", "&": r"\&", "$": r"\$", "~": r"\textasciitilde{}",
                    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}.get(ch, ch))
    return r"\text{" + "".join(out) + "}"


class NamedLatexPrinter(LatexMathPrinter):
    """LatexMathPrinter with each declared name as `names` says (z -> z^{k}, W -> W_{k}, lam -> \\lambda)."""

    def __init__(self, names: dict[str, str]):
        super().__init__({"order": "none"})
        self.names = names

    def _print(self, expr, **kwargs):
        if getattr(type(expr), "dp_name", None) == "all_layers":  # batch products' marker: its argument
            return self._print(expr.args[0])
        return super()._print(expr, **kwargs)

    def _print_Symbol(self, expr, style="plain"):
        return self.names.get(expr.name) or tex_name(expr.name)

    def _print_MatrixSymbol(self, expr):
        return self._print_Symbol(expr)

    def _print_Mul(self, expr):
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_Rational and not coeff.is_Integer and rest.is_Pow and rest.exp == -1:
            from dpc.printing import decimal
            if "/" not in decimal(abs(coeff)):  # 0.99/normK: \frac{0.99}{normK}, not 0.99 \frac{1}{normK}
                sign = "-" if coeff < 0 else ""
                return rf"{sign}\frac{{{decimal(abs(coeff))}}}{{{self._print(rest.base)}}}"
        return super()._print_Mul(expr)

    def _print_Transpose(self, expr):
        arg = expr.arg
        base = self._print(arg)
        if not isinstance(arg, (sp.MatrixSymbol, sp.Symbol)):
            base = rf"\left({base}\right)"
        elif "^" in base:
            base = f"{{{base}}}"
        return f"{base}^{{T}}"


# --- a program's lines as LaTeX rows ----------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    r"""One line of math: `lhs &rel rhs && note` in an align* block (lhs and note may be empty)."""
    lhs: str
    rhs: str
    note: str = ""

    def align(self) -> str:
        line = f"{self.lhs} &{self.rhs}"
        return line + (f" && {self.note}" if self.note else "")

    def inline(self) -> str:
        return f"{self.lhs} {self.rhs}".strip() + (rf" \qquad {self.note}" if self.note else "")


def latex_shape(shape) -> str:
    return r"\mathbb{R}" if not shape else r"\mathbb{R}^{" + r" \times ".join(tex_name(d) for d in shape) + "}"


class _Names:
    """How a program's names read in LaTeX: in declarations (per-layer values W_{k}) and in an update
    (iterates z^{k}, the next one z^{k+1}: a temporary z_next is z^{k+1})."""

    def __init__(self, program):
        self.program = program
        self.states = {d.name for d in program.states}
        self.per_layer = {d.name for d in program.decls if d.per_layer}

    def declared(self, layer: str = "k") -> dict[str, str]:
        return {n: tex_name(n, sub=layer) for n in self.per_layer}

    def update(self, k: str = "k", step=None) -> dict[str, str]:
        nxt = "1" if k == "0" else f"{k}+1"
        names = self.declared(k)
        names.update({s: tex_name(s, sup=k) for s in self.states})
        for n, _ in (step.lets if step is not None else ()):
            if n.endswith("_next") and n[:-5] in self.states:
                names[n] = tex_name(n[:-5], sup=nxt)
        return names

    def printer(self, names: dict[str, str]) -> NamedLatexPrinter:
        return NamedLatexPrinter(names)


def _math(names: dict[str, str], expr) -> str:
    return NamedLatexPrinter(names).doprint(expr)


def latex_rows(program) -> dict[tuple, Row]:
    """Each line of program_lines (same keys) as a row of math; structure lines have none."""
    p, nm = program, _Names(program)
    decl_names = nm.declared()
    rows: dict[tuple, Row] = {}
    if p.dims:
        rows[("dims",)] = Row(", ".join(tex_name(d) for d in p.dims), r"\in \mathbb{N}", tex_text("sizes"))
    for d in p.decls:
        if d.kind == "temp":
            continue
        name = decl_names.get(d.name, tex_name(d.name))
        learned = ""
        if d.trainable or d.kind == "weight":
            learned = "learned, one per layer" if d.per_layer else (
                "learned, shared by all layers" if p.layers and p.layers > 1 else "learned")
        if d.kind == "input":
            row = Row(name, rf"\in {latex_shape(d.shape)}", tex_text("input"))
        elif d.kind == "param":
            row = Row(name, rf"\in {latex_shape(d.shape)}", tex_text("parameter" + (f"; {learned}" if learned else "")))
        elif d.kind == "hyper":
            value = rf"= {_math(decl_names, d.value)}" if d.value is not None else r"\in \mathbb{R}"
            row = Row(name, value, tex_text("hyperparameter" + (f"; {learned}, initially" if learned else "")))
        elif d.kind == "var":
            start = _math(decl_names, d.value) if d.value is not None else "0"
            row = Row(tex_name(d.name, sup="0"), f"= {start}",
                      rf"{tex_name(d.name)} \in {latex_shape(d.shape)},\ " + tex_text("start"))
        elif d.kind == "weight":
            row = Row(name, rf"= {_math(decl_names, d.value)}", tex_text(f"{learned}, initially") +
                      rf",\ {name} \in {latex_shape(d.shape)}")
        else:  # let, output
            row = Row(name, rf"= {_math(decl_names, d.value)}", tex_text(d.kind) if d.kind == "output" else "")
        rows[("decl", d.name)] = row
    if p.objective is not None:
        over = ", ".join(tex_name(d.name) for d in p.states)
        rows[("minimize",)] = Row("", rf"\operatorname*{{minimize}}_{{{over}}}\ {_math(decl_names, p.objective)}")
    for i, c in enumerate(p.constraints):
        constraint = latex_constraint(c, tex_name, lambda e: _math(decl_names, e))
        rows[("subject to", i)] = Row("", tex_text("subject to") + r"\ " + constraint)
    for name, expr in p.closed_form:
        rows[("closed form", name)] = Row(tex_name(name), f"= {_math(decl_names, expr)}")
    count = p.layers
    if p.first_step is not None:
        rows.update(_step_rows("first", p.first_step, nm, "0", tex_text("layer 1")))
    if p.step is not None:
        first = 1 if p.first_step is not None else 0
        span = rf"k = {first}, \ldots, {count - 1}" if count and count - 1 > first else (
            rf"k = {first}" if count else rf"k = {first}, {first + 1}, \ldots")
        rows.update(_step_rows("step", p.step, nm, "k", span))
    if p.layers is not None:
        from dpc.graph import tying_words
        tying = tying_words(p)
        rows[("unroll",)] = Row("T", f"= {p.layers}", tex_text(f"layers{tying}"))
    if p.output:
        final = tex_name(p.output, sup="T") if p.output in nm.states and p.layers else tex_name(p.output)
        rows[("output",)] = Row("", tex_text("output") + rf"\ {final}")
    return rows


def _step_rows(block, step, nm: _Names, k: str, note: str) -> dict[tuple, Row]:
    names = nm.update(k, step)
    nxt = "1" if k == "0" else f"{k}+1"
    rows = {}
    for n, e in step.lets:
        rows[(block, "let", n)] = Row(names.get(n, tex_name(n)), f"= {_math(names, e)}")
    for n, e in step.assigns:
        rhs = _math(names, e)
        lhs = tex_name(n, sup=nxt)
        if rhs == lhs:  # z <- z_next: z_next already reads z^{k+1}
            continue
        rows[(block, "assign", n)] = Row(lhs, f"= {rhs}")
    if rows:
        first = next(iter(rows))
        rows[first] = Row(rows[first].lhs, rows[first].rhs, note)
    return rows


# --- notes as math -------------------------------------------------------------------------------------

class _NoMath(Exception):
    pass


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
                    r"|(?P<op><-|->|<=|>=|\.T\b|[-+*/@^()\[\],=<>|]))")
_REL = {"=": "=", "<-": r"\leftarrow", "->": r"\rightarrow", "in": r"\in", "<": "<", ">": ">", "<=": r"\leq",
        ">=": r"\geq"}
_ADD, _MUL, _NEG, _POW, _ATOM = 2, 3, 4, 5, 6
_SETS = {"simplex", "onehot", "nonneg", "box", "binary"}
_SPECIAL = _SETS | {"f", "g", "grad", "eye", "ones", "zeros", "xavier", "sqrt", "min", "max", "sum", "inf", "j", "k", "v",
            "T", "sum_j", "in", "step"}


def _tokens(text: str) -> list[tuple[str, str, bool]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _NoMath
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind) > pos))  # (kind, text, after a space)
        pos = m.end()
    return out


@dataclass
class _T:
    tex: str
    prec: int
    scalar: bool = True
    frac: bool = False   # a fraction (its parentheses can go as a factor)
    group: str | None = None  # the unparenthesised text of a parenthesised group


class _NoteParser:
    """A note's .dp-syntax math (`z <- soft(z - 1/L*D.T @ (D @ z - x), lam/L)`) as LaTeX; raises _NoMath at
    a word that is not a name the program, the atoms or the derivation use (English stays text)."""

    def __init__(self, names: dict[str, str], known: set[str], vectors: set[str], reductions: set[str]):
        self.names, self.known, self.vectors, self.reductions = names, known, vectors, reductions

    def parse(self, text: str) -> str:
        self.toks, self.i = _tokens(text), 0
        if not self.toks:
            raise _NoMath
        items = [self.relation()]
        while self.peek() == ",":
            self.i += 1
            items.append(self.relation())
        if self.i != len(self.toks):
            raise _NoMath
        return r",\ ".join(items)

    def peek(self):
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, value=None):
        if self.i >= len(self.toks) or (value is not None and self.toks[self.i][1] != value):
            raise _NoMath
        self.i += 1
        return self.toks[self.i - 1]

    def relation(self) -> str:
        parts = [self.sum().tex]
        while self.peek() in _REL:
            op = self.take()[1]
            parts.append(_REL[op])
            parts.append(self.sum().tex)
        return " ".join(parts)

    def sum(self) -> _T:
        left = self.product()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            right = self.product()
            tex = right.tex if right.prec > _ADD or right.group is not None else rf"\left({right.tex}\right)"
            left = _T(f"{left.tex} {op} {tex}", _ADD, left.scalar and right.scalar)
        return left

    def product(self) -> _T:
        left = self.unary()
        while self.peek() in ("*", "/", "@"):
            op = self.take()[1]
            right = self.unary()
            if op == "/":
                left = _T(rf"\frac{{{_bare(left)}}}{{{_bare(right)}}}", _MUL, left.scalar and right.scalar, frac=True)
                continue
            a, b = _factor(left), _factor(right)
            if op == "*" and not left.scalar and not right.scalar:
                tex = rf"{a} \odot {b}"
            elif re.match(r"[\d.]", b) or (right.prec == _NEG):
                tex = rf"{a} \cdot {b}"
            else:
                tex = f"{a} {b}"
            left = _T(tex, _MUL, left.scalar and right.scalar)
        return left

    def unary(self) -> _T:
        if self.peek() == "-":
            self.take()
            inner = self.unary()
            tex = inner.tex if inner.prec >= _MUL else rf"\left({inner.tex}\right)"
            return _T(f"-{tex}", _NEG, inner.scalar)
        return self.power()

    def power(self) -> _T:
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            exp = self.unary()
            tex = base.tex if base.prec == _ATOM and "^" not in base.tex and not base.frac else rf"\left({_bare(base)}\right)"
            return _T(f"{tex}^{{{_bare(exp)}}}", _POW, base.scalar)
        return base

    def postfix(self) -> _T:
        node = self.primary()
        while self.peek() in (".T", "["):
            if self.take()[1] == ".T":
                tex = node.tex if node.prec == _ATOM and "^" not in node.tex else rf"\left({_bare(node)}\right)"
                node = _T(f"{{{tex}}}^{{T}}" if "_" in tex else f"{tex}^{{T}}", _ATOM, node.scalar)
            else:
                index = self.sum().tex
                self.take("]")
                tex = node.tex if node.prec == _ATOM and "_" not in node.tex else rf"\left({_bare(node)}\right)"
                node = _T(f"{tex}_{{{index}}}", _ATOM, True)  # an entry, or a row: entrywise as a number
        return node

    def args(self) -> list[_T]:
        self.take("(")
        out = []
        if self.peek() != ")":
            out.append(self.argument())
            while self.peek() == ",":
                self.take()
                out.append(self.argument())
        self.take(")")
        return out

    def argument(self) -> _T:
        start = self.i
        node = self.sum()
        if self.peek() in _REL:  # softmax(v + a) = softmax(v) inside parentheses: a relation
            self.i = start
            return _T(self.relation(), 1)
        return node

    def primary(self) -> _T:
        kind, value, _ = self.take()
        if kind == "num":
            return _T(value, _ATOM)
        if value == "(":
            inner = self.argument()
            self.take(")")
            return _T(rf"\left({inner.tex}\right)", _ATOM, inner.scalar, group=inner.tex,
                      frac=inner.frac)
        if value == "[":  # [sqnorm(x - C[j])]_j: the vector of entries j
            inner = self.sum()
            self.take("]")
            kind, index, _ = self.take()
            if kind != "name" or not index.startswith("_"):
                raise _NoMath
            return _T(rf"\left[{inner.tex}\right]_{{{tex_name(index[1:])}}}", _ATOM, False)
        if value == "|":
            inner = self.sum()
            self.take("|")
            return _T(rf"\left|{inner.tex}\right|", _ATOM, inner.scalar)
        if kind != "name":
            raise _NoMath
        return self.named(value)

    def named(self, name: str) -> _T:
        if name in _REL:
            raise _NoMath
        if name in _SETS:
            return _T(rf"\operatorname{{{name}}}", _ATOM)
        if name == "grad" and self.i < len(self.toks) and self.toks[self.i][0] == "name":
            f = self.named(self.take()[1])
            return _T(rf"\nabla {f.tex}", _ATOM, False)
        if name in ("sum_j", "sum"):
            if name == "sum_j":
                body = self.unary()
                return _T(rf"\sum_{{j}} {body.tex}", _MUL, True)
        if name not in self.known and not (len(name) == 1 and name not in ("a", "I")):
            raise _NoMath
        if name == "inf":
            return _T(r"\infty", _ATOM)
        if self.peek() == "(" and not self.toks[self.i][2]:  # f(z) is a call, `normK (...)` is not
            return self.call(name)
        if name == "eye":
            return _T("I", _ATOM, False)
        if name in declare.ATOMS and name not in self.names and len(name) > 1 and name not in self.vectors:
            raise _NoMath  # `soft threshold`: an atom's name without its call is a word
        tex = self.names.get(name) or tex_name(name)
        return _T(tex, _ATOM, name not in self.vectors)

    def call(self, name: str) -> _T:
        args = self.args()
        texs = [_bare(a) for a in args]
        vector = any(not a.scalar for a in args)
        joined = ", ".join(texs)
        if name == "sqrt" and len(args) == 1:
            return _T(rf"\sqrt{{{texs[0]}}}", _ATOM, args[0].scalar)
        if name == "eye":
            return _T(f"I_{{{joined}}}", _ATOM, False)
        if name in ("ones", "zeros"):
            head = r"\mathbf{1}" if name == "ones" else "0"
            size = r" \times ".join(texs)
            return _T(rf"{head}_{{{size}}}", _ATOM, False)
        if name in ("min", "max"):
            return _T(rf"\{name}\left({joined}\right)", _ATOM, not vector)
        if name == "all_layers" and len(args) == 1:
            return args[0]
        atom = declare.ATOMS.get(name)
        rule = getattr(atom, "latex", None)
        if callable(rule):
            try:
                tex = rule(_Shim(), _ShimExpr(texs), None)
            except Exception:  # noqa: BLE001 - a declaration's printer that needs a real IR node
                tex = rf"\operatorname{{{_escape(name)}}}\left({joined}\right)"
        elif isinstance(rule, str):
            tex = rf"{rule}\left({joined}\right)"
        elif atom is not None or len(name) > 1:
            tex = rf"\operatorname{{{_escape(name)}}}\left({joined}\right)"
        else:  # f(z), g(v): the split's functions
            tex = rf"{self.names.get(name) or tex_name(name)}\left({joined}\right)"
        return _T(tex, _ATOM, name not in self.reductions and vector)


class _Shim:
    """A printer for a declaration's latex rule called on already printed arguments."""

    def _print(self, arg):
        return arg

    def parenthesize(self, arg, *a, **k):
        return arg


class _ShimExpr:
    def __init__(self, args):
        self.args = tuple(args)


def _escape(name: str) -> str:
    return name.replace("_", r"\_")


def _bare(node: _T) -> str:
    """A node's text without its own parentheses (a fraction's numerator, a power's exponent)."""
    return node.group if node.group is not None else node.tex


def _factor(node: _T) -> str:
    """A factor of a product: a sum in parentheses; a parenthesised fraction needs none."""
    if node.group is not None and node.frac:
        return node.group
    return node.tex if node.prec >= _MUL else rf"\left({node.tex}\right)"


def note_latex(note: str, parser: _NoteParser) -> str:
    r"""A note as LaTeX: its math as math, its words in \text{...}."""
    note = note.strip()
    m = re.match(r"(.*?)\s{2,}\((.*)\)$", note)
    if m:  # `f(z) = ...    (smooth)`: the comment after wide space
        return rf"{_mixed(m.group(1), parser)} \qquad {_mixed('(' + m.group(2) + ')', parser)}"
    return _mixed(note, parser)


def _split_top(text: str, seps=(": ", "; ")) -> list[str]:
    """text at the separators outside parentheses and brackets, the separators kept on the left piece."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        depth += ch in "([" and 1 or 0
        depth -= ch in ")]" and 1 or 0
        for sep in seps:
            if depth == 0 and text.startswith(sep, i):
                out.append(text[start:i + len(sep)])
                start = i + len(sep)
                i += len(sep) - 1
                break
        i += 1
    out.append(text[start:])
    return [p for p in out if p]


def _mixed(text: str, parser: _NoteParser) -> str:
    pieces = []
    for piece in _split_top(text):
        body = piece.rstrip()
        sep = piece[len(body):]
        tail = ""
        if body.endswith((":", ";")):
            body, tail = body[:-1], body[-1]
        pieces.append(_words(body, parser) + (tex_text(tail + sep) if tail else (r"\ " if sep else "")))
    return " ".join(pieces)


def _words(text: str, parser: _NoteParser) -> str:
    """The longest run of words that parses as math, as math, and the rest on either side the same way."""
    if not text.strip():
        return ""
    words = text.split(" ")
    best = None
    for i in range(len(words)):
        for j in range(len(words), i, -1):
            if best is not None and j - i <= best[1] - best[0]:
                break
            try:
                best = (i, j, parser.parse(" ".join(words[i:j])))
            except (_NoMath, RecursionError):
                continue
            break
    if best is None:
        return tex_text(text)
    i, j, tex = best
    left, right = " ".join(words[:i]), " ".join(words[j:])
    out = []
    if left:
        out.append(_words(left, parser) + r"\ ")
    out.append(tex)
    if right:
        out.append(r"\ " + _words(right, parser))
    return " ".join(out)


def _vectors(program) -> set[str]:
    out = {d.name for d in program.decls if d.shape}
    for step in (program.step, program.first_step):
        for n, e in (step.equations() if step is not None else ()):
            if getattr(e, "is_Matrix", False) or getattr(e, "shape", (1, 1)) != (1, 1):
                out.add(n)
    return out


_REDUCTIONS = {"sqnorm", "norm1", "norm2", "norm0", "sum", "opnorm", "entropy", "rowsqnorm_sum"}


def _note_parser(program, split: dict[str, str], update: bool) -> _NoteParser:
    nm = _Names(program)
    names = nm.update("k", program.step) if update else nm.declared()
    for old, new in split.items():
        names.setdefault(new, tex_name(new))
    known = (_SPECIAL | set(declare.ATOMS) | {d.name for d in program.decls} | set(program.dims) |
             set(split.values()) | set(_vectors(program)))
    for step in (program.step, program.first_step):
        if step is not None:
            known |= {n for n, _ in step.equations()}
    reductions = _REDUCTIONS | {a.name for a in declare.ATOMS.values()
                                if getattr(getattr(a, "fuzz", None), "role", None) == "reduction"}
    return _NoteParser(names, known, _vectors(program), reductions)


def notes_latex(notes: list[str], program, split: dict[str, str]) -> list[Row]:
    """Each note as a row of LaTeX (an equation split at its =); an update's equations (`z <- ...`,
    `let z_next = ...`) with iteration indices."""
    plain, update = _note_parser(program, split, False), _note_parser(program, split, True)
    states = {d.name for d in program.states}
    temps = {n for n, _ in (program.step.lets if program.step else ())}
    out = []
    for note in notes:
        m = re.fullmatch(r"(?:let\s+)?(\w+)\s*(<-|=)\s*(.+)", note.strip())
        if m and (m.group(2) == "<-" or note.strip().startswith("let ")) and m.group(1) in states | temps \
                and "  (" not in note:
            name, op, rhs = m.groups()
            try:
                rhs_tex = update.parse(rhs)
            except (_NoMath, RecursionError):
                out.append(_note_row(note_latex(note, plain)))
                continue
            lhs = tex_name(name, sup="k+1") if op == "<-" else update.names.get(name, tex_name(name))
            if lhs != rhs_tex:  # z <- z_next, once z_next reads z^{k+1}, says nothing
                out.append(Row(lhs, f"= {rhs_tex}"))
            continue
        out.append(_note_row(note_latex(note, plain)))
    return out


def _note_row(tex: str) -> Row:
    r"""A note's LaTeX as a row: split at its first = outside braces, \left...\right and \text."""
    depth, i = 0, 0
    while i < len(tex):
        if tex.startswith(r"\left", i) or tex.startswith(r"\text{", i):
            depth += 1 if tex.startswith(r"\left", i) else 0
        if tex.startswith(r"\right", i):
            depth -= 1
        ch = tex[i]
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0 and tex.startswith(" = ", i) and i > 0:
            return Row(tex[:i], "= " + tex[i + 3:])
        i += 1
    return Row("", tex)


# --- LaTeX ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatexStage:
    label: str
    notes: list       # LaTeX lines
    rows: list        # Rows: the program (the source, or --full) or what the pass changed
    marks: list       # per row: "" (the whole program), or a Change mark


def latex_stages(stages, full: bool = False) -> list[LatexStage]:
    split = split_names(_taken(stages))
    out, before, before_rows = [], None, None
    for stage, notes in zip(stages, _notes(stages)):
        p = stage.program
        lines = program_lines(p)
        rows = latex_rows(p)
        if full or before is None:
            shown = [(rows[k], "") for k, _ in lines if k in rows]
        else:
            shown = []
            found = changes(before, lines)
            notes = own_notes(notes, found)
            for c in found:
                row = (before_rows if c.mark == REMOVED else rows).get(c.key)
                if c.mark == REWRITTEN and row is not None and before_rows.get(c.key) == row:
                    continue  # rewritten in a way the math does not show (batch products' marker)
                if row is not None:
                    shown.append((row, c.mark))
        out.append(LatexStage(stage.label, notes_latex(notes, p, split), [r for r, _ in shown],
                              [m for _, m in shown]))
        before, before_rows = lines, rows
    return out


_MARK_NOTE = {ADDED: "", REWRITTEN: "rewritten", REMOVED: "removed"}


def _marked(row: Row, mark: str) -> Row:
    word = _MARK_NOTE.get(mark, "")
    if not word:
        return row
    note = (row.note + r",\ " if row.note else "") + tex_text(f"({word})")
    return Row(row.lhs, row.rhs, note)


def learned_rows(program) -> list[Row]:
    """The learned values: shape, copies, initial value."""
    from dpc.graph import copies
    names = _Names(program).declared()
    rows = []
    for d in program.decls:
        if d.kind == "weight" or d.trainable:
            n = copies(program, d)
            name = names.get(d.name, tex_name(d.name))
            sharing = f"{n} copies, one per layer" if n > 1 else "one copy, shared by all layers"
            rows.append(Row(name, rf"\in {latex_shape(d.shape)}", tex_text(sharing)))
    return rows


def explain_latex(stages, full: bool = False, standalone: bool = False, source: str = "") -> str:
    """The stages as LaTeX that compiles as it is (amsmath, amssymb): an align* block a pass, its label a
    comment above it (`standalone`: a whole document, each label a heading)."""
    out = []
    name = stages[-1].program.name
    if standalone:
        out += [r"\documentclass{article}", r"\usepackage{amsmath,amssymb}", r"\begin{document}",
                rf"\section*{{{tex_text(name)[6:-1]}}}"]
    else:
        out.append(f"% dpc explain --latex {source}: {name} (needs amsmath and amssymb)".replace("  ", " "))
    for stage in latex_stages(stages, full):
        lines = [r.align() for r in stage.notes] + [_marked(r, m).align() for r, m in zip(stage.rows, stage.marks)]
        label = stage.label.replace("\n", " ")
        if standalone:
            out.append(rf"\subsection*{{{tex_text(label)[6:-1]}}}")
        else:
            out.append(f"% == {label}")
        if not lines:
            out.append("% (no change)" if not standalone else "(no change)")
            continue
        out.append(r"\begin{align*}")
        out += [f"  {line} \\\\" if i < len(lines) - 1 else f"  {line}" for i, line in enumerate(lines)]
        out.append(r"\end{align*}")
    final = stages[-1].program
    if final.layers:
        rows = learned_rows(final)
        out.append(r"\subsection*{parameters}" if standalone else "% == parameters")
        if rows:
            out.append(r"\begin{align*}")
            out += [f"  {r.align()} \\\\" if i < len(rows) - 1 else f"  {r.align()}" for i, r in enumerate(rows)]
            out.append(r"\end{align*}")
        else:
            out.append("% (nothing learned)" if not standalone else "(nothing learned)")
    if standalone:
        out.append(r"\end{document}")
    return "\n".join(out) + "\n"


# --- one program's explanation, for the report and for notebooks ------------------------------------------

class Explanation:
    """A program's derivation: `text()`, `latex()`, `html()`; in Jupyter it displays as the report page's
    body (_repr_html_) or as LaTeX (_repr_latex_)."""

    def __init__(self, text: str, file: str = "<string>", overrides: dict | None = None):
        from dpc.pipeline import run_text
        self.source, self.file = text, file
        self.stages = run_text(text, file, overrides)
        self.program = self.stages[-1].program

    @classmethod
    def from_path(cls, path, overrides: dict | None = None) -> "Explanation":
        from dpc.errors import read_source
        return cls(read_source(str(path)), str(path), overrides)

    def text(self, full: bool = False) -> str:
        return explain_text(self.stages, full)

    def latex(self, full: bool = False, standalone: bool = False) -> str:
        return explain_latex(self.stages, full, standalone, self.file)

    def html(self, page: bool = True) -> str:
        from dpc.report import report_html
        return report_html(self, page=page)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"<dpc explanation of {self.file}: {len(self.stages)} stages>"

    def _repr_html_(self) -> str:
        return self.html(page=False)

    def _repr_latex_(self) -> str:
        r"""Jupyter's LaTeX (MathJax): the align* blocks, one after another, without comments."""
        lines = [line for line in self.latex().splitlines() if not line.startswith("%")]
        return "\n".join(lines)
