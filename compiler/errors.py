"""User-facing errors: `FILE:LINE:COL: error: message`, the source line, a caret, a hint.

Every mistake in a .dp program is raised as a DpcError carrying one or more
Diagnostics; the CLI prints them and exits 1. Nothing here knows about lark.
"""
from __future__ import annotations

from dataclasses import dataclass

from dpc.grammar.ast import Span


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None

    def format(self, source: str | None) -> str:
        if self.span is None or self.span.line <= 0:
            head = f"error: {self.message}"
            if self.span is not None and self.span.file:
                head = f"{self.span.file}: {head}"
            return head + (f"\n  hint: {self.hint}" if self.hint else "")
        lines = [f"{self.span}: error: {self.message}"]
        if source is not None:
            text_lines = source.splitlines()
            if 0 < self.span.line <= len(text_lines):
                line = text_lines[self.span.line - 1].expandtabs(1)
                lines.append(f"    {line}")
                width = 1
                if self.span.end_line == self.span.line and self.span.end_column > self.span.column:
                    width = self.span.end_column - self.span.column
                lines.append("    " + " " * (self.span.column - 1) + "^" * width)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


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
        return "\n".join(d.format(self.source) for d in self.diagnostics)

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
