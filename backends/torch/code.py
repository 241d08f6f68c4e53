"""What the writers of a generated module share: the lines written, the plan they write, the runtime
helpers the code uses so far, and printing one expression of the program."""
from __future__ import annotations

from dpc.backends.torch.plan import Plan
from dpc.backends.torch.printer import TorchPrinter, Unsupported
from dpc.errors import DpcError


class Lines:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = "", indent: int = 0):
        for line in text.split("\n"):
            self.lines.append(("    " * indent + line) if line else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Code:
    """One module being written: its plan, and the helpers (dpc.declare) its code calls."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.p = plan.program
        self.helpers: set[str] = set()

    def use(self, helper: str) -> str:
        self.helpers.add(helper)
        return helper

    def expr(self, printer: TorchPrinter, expr, decl=None) -> str:
        """An expression as torch code; what the printer cannot write is a DpcError at the declaration."""
        try:
            code = printer(expr)
        except Unsupported as e:
            span = decl.span if decl is not None else None
            raise DpcError(str(e.diagnostics[0].message), span).with_source(self.p.source) from None
        self.helpers |= printer.helpers
        return code

    def size(self, shape) -> str:
        """A shape's sizes as forward reads them: self.n, 3, h (a dim read from the inputs), n - 1."""
        return ", ".join(self.dim(dim) for dim in shape)

    def dim(self, dim: str) -> str:
        if dim.isdigit():
            return dim
        call = set(self.plan.call_dims())
        if dim.isidentifier():
            return dim if dim in call else f"self.{dim}"
        from dpc.ir import dim_symbol  # an expression of dims an operator's shape wrote: n - 1
        expr = dim_symbol(dim)
        names = {s: __import__("sympy").Symbol(s.name if s.name in call else f"self.{s.name}")
                 for s in expr.free_symbols}
        return str(expr.xreplace(names))


def doc_escape(text: str) -> str:
    """Source text made safe inside a triple-quoted docstring: backslashes and quotes escaped, and control
    characters (a NUL makes a module unimportable, a CR would turn into a newline) written as \\xNN."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return "".join(f"\\x{ord(c):02x}" if _is_control(c) else c for c in text)


def _is_control(c: str) -> bool:
    return c not in "\n\t" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)


def fstring_text(text: str) -> str:
    """Text to put inside f"...": braces doubled, quotes and backslashes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("{", "{{").replace("}", "}}")


def listing(names) -> str:
    """a, b and c."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
