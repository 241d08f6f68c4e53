"""The typed AST of a .dp program: frozen dataclasses, each node with its source span.

The parser (parser.py) builds these from lark's tree; nothing downstream sees lark.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """Where a node stands in its file: 1-based line and column, end exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


NO_SPAN = Span("<generated>", 0, 0, 0, 0)


# --- expressions -------------------------------------------------------------

@dataclass(frozen=True)
class Expr:
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Number(Expr):
    text: str = "0"


@dataclass(frozen=True)
class Name(Expr):
    id: str = ""


@dataclass(frozen=True)
class BinOp(Expr):
    op: str = "+"  # one of + - * / @ ^
    left: Expr = None
    right: Expr = None


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr = None


@dataclass(frozen=True)
class Transpose(Expr):
    operand: Expr = None


@dataclass(frozen=True)
class Index(Expr):
    """`C[j]`: row j of a matrix, or entry j of a vector; j is a sum index."""

    operand: Expr = None
    index: str = ""
    index_span: Span = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Call(Expr):
    func: str = ""
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[str, Expr], ...] = ()
    func_span: Span = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class IndexSum(Expr):
    """`sum_j body`: j ranges over the dimension it indexes in body."""

    index: str = ""
    body: Expr = None


# --- types -------------------------------------------------------------------

@dataclass(frozen=True)
class TypeSpec:
    """`R`, `R[n]`, `R[m, n]`: dims are names or integer literals (as strings)."""

    dims: tuple[str, ...]
    span: Span = field(compare=False, repr=False)


# --- statements --------------------------------------------------------------

@dataclass(frozen=True)
class Stmt:
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Ident:
    """A name as written in a statement, with its own span (for errors)."""

    id: str
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class NetworkStmt(Stmt):
    name: Ident = None


@dataclass(frozen=True)
class DimsStmt(Stmt):
    names: tuple[Ident, ...] = ()


@dataclass(frozen=True)
class DeclStmt(Stmt):
    """input / param / hyper / let / var."""

    kind: str = ""
    name: Ident = None
    type: TypeSpec | None = None
    value: Expr | None = None


@dataclass(frozen=True)
class MinimizeStmt(Stmt):
    expr: Expr = None


@dataclass(frozen=True)
class Compare(Stmt):
    op: str = ">="
    left: Expr = None
    right: Expr = None


@dataclass(frozen=True)
class Member(Stmt):
    """`s in onehot`, `z in box(lo, hi)`."""

    var: Ident = None
    set: Ident = None
    args: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class SubjectToStmt(Stmt):
    constraints: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Assign(Stmt):
    target: Ident = None
    expr: Expr = None


@dataclass(frozen=True)
class UpdateStmt(Stmt):
    """One step of an iteration; `lets` are temporaries, in source order with `assigns`."""

    body: tuple[Stmt, ...] = ()  # DeclStmt(kind="let") and Assign, in source order


@dataclass(frozen=True)
class DirectiveStmt(Stmt):
    """derive / relax / adapt / unroll / learn / output.

    `name` is the method (proxgrad, weights, ...); `target` the relaxed set for relax;
    `args`/`kwargs` what stood in parentheses; `items` the words of a learn list.
    """

    kind: str = ""
    name: Ident | None = None
    target: Ident | None = None
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[Ident, Expr], ...] = ()
    items: tuple[tuple[Ident, ...], ...] = ()
    item_options: tuple = ()  # learn: per item, (args, kwargs) of the parentheses after its first word
    count: int | None = None


@dataclass(frozen=True)
class Program:
    file: str
    source: str
    statements: tuple[Stmt, ...]
