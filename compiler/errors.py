"""User-facing errors: `FILE:LINE:COL: error: message`, the source line, a caret, a hint.

Every mistake in a .dp program is raised as a DpcError carrying one or more
Diagnostics; the CLI prints them and exits 1. Nothing here knows about lark.
"""
from __future__ import annotations

import codecs
import contextlib
import os
import sys
import unicodedata
from dataclasses import dataclass

from dpc.grammar.ast import Span


def source_lines(text: str) -> list[str]:
    """The lines of a source as lark numbers them: split on \\n only (a trailing \\r dropped).

    str.splitlines() also splits on \\v, \\f, \\x1c-\\x1e, \\x85, U+2028 and U+2029, so a line
    number from lark would pick the wrong line (or none) after one of them.
    """
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # "a\nb\n" is two lines, as an editor shows it
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _invisible(ch: str) -> bool:
    """Control, format and separator characters: a terminal shows them as nothing, or moves the cursor."""
    return ch != "\t" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


def visible(line: str) -> str:
    """A source line as printed under an error: one column per character, so the caret stays under
    its column (lark counts a tab or a stray control character as one column)."""
    return "".join(" " if ch == "\t" else "?" if _invisible(ch) else ch for ch in line)


def _width(text: str) -> int:
    """Terminal columns of shown text: wide (CJK, fullwidth) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: str = "error"  # or "warning": printed, exit status 0 (see `warning`)

    def format(self, source: str | None, lines_of_source: list[str] | None = None) -> str:
        if self.span is None or self.span.line <= 0:
            head = f"{self.severity}: {self.message}"
            if self.span is not None and self.span.file:
                head = f"{self.span.file}: {head}"
            return head + (f"\n  hint: {self.hint}" if self.hint else "")
        lines = [f"{self.span}: {self.severity}: {self.message}"]
        if source is not None:
            text_lines = lines_of_source if lines_of_source is not None else source_lines(source)
            if 0 < self.span.line <= len(text_lines):
                line, shift = _window(visible(text_lines[self.span.line - 1]), self.span.column - 1)
                lines.append(f"    {line}")
                lines.append("    " + self._caret(line, shift))
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def _caret(self, line: str, shift: int = 0) -> str:
        """Spaces to the span's column, then one ^ per column it covers (at least one); `shift` columns of
        the line were cut off on the left (a long line is shown as a window around the error)."""
        start = self.span.column - 1 - shift
        end = start + 1
        if self.span.end_line == self.span.line and self.span.end_column > self.span.column:
            end = min(self.span.end_column - 1 - shift, len(line))
        covered = line[start:end]
        past_end = max(0, start - len(line))  # an error at the end of the line points just after it
        width = _width(covered) + (end - start - len(covered))
        return " " * (_width(line[:start]) + past_end) + "^" * max(1, width)


MAX_SHOWN = 50           # errors printed at once
LINE_WINDOW = (60, 100)  # a source line longer than their sum is shown from 60 columns before the error


def _window(line: str, column: int) -> tuple[str, int]:
    """A long source line cut to a window around `column` (0-based): (text, columns cut on the left)."""
    before, after = LINE_WINDOW
    if len(line) <= before + after:
        return line, 0
    start = max(0, column - before)
    text = line[start:column + after]
    if start > 0:
        text, start = "..." + text, start - 3
    if column + after < len(line):
        text += "..."
    return text, start


def warning(message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
    """A warning: the program compiles, but something it relies on is not shown to hold (a proximal method
    on an objective that is not convex, a step between 1/L and 2/L). Passes attach them to the program
    (ir.Program.warned); `dpc compile` and `dpc check` print them to stderr as `FILE:LINE:COL: warning: ...`
    with the line and a caret, and exit 0."""
    return Diagnostic(message, span, hint, severity="warning")


def format_warnings(warnings, source: str | None) -> str:
    """Every warning, as `FILE:LINE:COL: warning: message`, the line, a caret, a hint."""
    lines_of_source = source_lines(source) if source is not None else None
    return "\n".join(w.format(source, lines_of_source) for w in warnings)


class DpcError(Exception):
    """A mistake in a .dp program (or in how dpc was invoked), with where it is."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 *, diagnostics: list[Diagnostic] | None = None, source: str | None = None):
        self.diagnostics = diagnostics or [Diagnostic(message, span, hint)]
        self.source = source
        super().__init__(self.diagnostics[0].message)

    def with_source(self, source: str) -> "DpcError":
        if self.source is None:
            self.source = source
        return self

    def format(self) -> str:
        """Every diagnostic, up to MAX_SHOWN of them (a mutated file can have thousands)."""
        lines_of_source = source_lines(self.source) if self.source is not None else None
        shown = [d.format(self.source, lines_of_source) for d in self.diagnostics[:MAX_SHOWN]]
        hidden = len(self.diagnostics) - MAX_SHOWN
        if hidden > 0:
            shown.append(f"... and {hidden} more error{'s' if hidden > 1 else ''} (fix these first)")
        return "\n".join(shown)

    def __str__(self) -> str:
        return self.format()


class ErrorList:
    """Collects diagnostics so `dpc check` can report every error at once."""

    def __init__(self):
        self.items: list[Diagnostic] = []

    def add(self, message: str, span: Span | None = None, hint: str | None = None) -> None:
        self.items.append(Diagnostic(message, span, hint))

    def raise_if_any(self, source: str | None = None) -> None:
        if self.items:
            raise DpcError(self.items[0].message, diagnostics=list(self.items), source=source)


# Lowering, sympy and the printers recurse on an expression's depth; Python's default limit of 1000
# frames stops at sums of about 300 terms. 8000 compiles 2500-term sums (measured) and still turns deeper
# ones into a clean error, far from the C stack's own limit.
RECURSION_LIMIT = 8000


@contextlib.contextmanager
def deep_nesting():
    """Raise Python's recursion limit for one compilation, and put it back."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def nested_too_deeply(file: str, span: Span | None = None) -> DpcError:
    """What a RecursionError in dpc means for the user: an expression nested past Python's stack.
    `span`: the statement nested deepest (grammar.parser.nesting_error finds it), else just the file."""
    what = "this statement is" if span is not None else "the program is"
    return DpcError(f"{what} nested too deeply for dpc to compile", span or Span(file, 0, 0, 0, 0),
                    "split the deepest expression into steps with `let` (or write a long sum in parts)")


def read_source(path) -> str:
    """A .dp file's text, decoded as UTF-8 (a leading BOM dropped); a DpcError for anything
    that cannot be read: no such file, a directory, no permission, bytes that are not UTF-8."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise DpcError(f"cannot read {path}: it is a directory", hint="give the path of a .dp file") from None
    except PermissionError as err:
        raise DpcError(f"cannot read {path}: {err.strerror}", hint="check the file's permissions") from None
    except OSError as err:
        raise DpcError(f"cannot read {path}: {err.strerror or err}") from None
    return decode_source(data, path)


def decode_source(data: bytes, file: str) -> str:
    """UTF-8 bytes -> text; the first byte that is not UTF-8 is an error at its line and column."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]  # some editors write one; it is not part of the program
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[:err.start].decode("utf-8")  # valid up to the bad byte, by definition
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        raise DpcError(f"the file is not valid UTF-8: byte 0x{data[err.start]:02x} ({err.reason})",
                       Span(file, line, column, line, column + 1), "save the file as UTF-8",
                       source=data.decode("utf-8", errors="replace")) from None
