"""A Pygments lexer for .dp programs: `pygmentize -l dp lista.dp`, and ```dp blocks in Sphinx or MkDocs.

Pygments finds it through the `pygments.lexers` entry point in pyproject.toml; the compiler never imports
this module (it needs pygments, which the compiler does not). The token rules follow grammar/dp.lark;
the keyword lists are the compiler's own (tests/test_lexer.py checks that they stay equal), and the
functions a program can call are the declared atoms (dpc.declare.ATOMS), looked up as each name is lexed:
an atom declared anywhere, a test's own included, is a builtin with no edit here.
"""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, Text, Whitespace)

from dpc import atoms  # noqa: F401 - declares the atoms
from dpc.declare import ATOMS

__all__ = ["DpLexer"]

# Statements that declare a name, and the other statement keywords (grammar/parser.py's KEYWORDS).
DECLARATIONS = ("network", "dims", "input", "param", "hyper", "let", "var")
STATEMENTS = ("minimize", "subject", "update", "derive", "relax", "adapt", "unroll", "learn", "output", "backward")
# `s in SET` (dpc.lower.SETS) and `relax SET -> ...`; a set name is an ordinary name elsewhere.
SETS = ("nonneg", "box", "onehot", "simplex", "binary", "ball", "l1ball", "sparse")
# The words of a learn list that are forms or tying, not names (dpc.passes.learn; `except`: thresholds.EXCEPT).
LEARN_WORDS = ("weights", "stepsizes", "coupled", "influence", "shrink", "tied", "untied", "except")

_NAME = r"[A-Za-z_][A-Za-z_0-9]*"


def _name(lexer, match):
    """A declared atom's name is a builtin, any other a name (ATOMS is read as each name is lexed)."""
    text = match.group()
    yield match.start(), Name.Builtin if text in ATOMS else Name, text


class DpLexer(RegexLexer):
    """The .dp language of dpc: objectives or updates, and the passes that unroll them into networks."""

    name = "dp"
    aliases = ["dp"]
    filenames = ["*.dp"]
    mimetypes = ["text/x-dp"]

    tokens = {
        "space": [
            (r"[ \t\f]+", Whitespace),
            (r"\\[ \t]*\r?\n", Text),  # a line continued
            (r"#[^\n]*", Comment.Single),
        ],
        "root": [
            include("space"),
            (r"\r?\n", Whitespace),
            (r"(network)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            # the declared name: `param D : ...`, `let L = ...` (dims lists several, left as names)
            (r"(input|param|hyper|let|var)(\s+)(" + _NAME + ")",
             bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (r"(subject)(\s+)(to)\b", bygroups(Keyword, Whitespace, Keyword)),
            # the method of a pass: derive proxgrad, adapt gates
            (r"(derive|adapt|backward)(\s+)(" + _NAME + ")", bygroups(Keyword, Whitespace, Name.Function)),
            (r"(unroll)(\s+)(until)\b", bygroups(Keyword, Whitespace, Keyword)),  # unroll until(tol = ...)
            (r"(in|relax)(\s+)(" + "|".join(SETS) + r")\b", bygroups(Keyword, Whitespace, Name.Builtin)),
            (r"learn\b", Keyword, "learn"),
            (words(DECLARATIONS, suffix=r"\b"), Keyword.Declaration),
            (words(STATEMENTS + ("in",), suffix=r"\b"), Keyword),
            (r"(:)(\s*)(R)\b", bygroups(Punctuation, Whitespace, Keyword.Type)),  # `R` is a name elsewhere
            (r"sum_[A-Za-z][A-Za-z0-9]*(?![A-Za-z0-9_])", Operator.Word),  # sum_j: an index sum
            (_NAME, _name),  # an atom (it cannot be declared, so always a builtin) or a name
            (r"([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            (r"\.T\b", Operator),  # transpose
            (r"<-|->|>=|<=|[-+*/@^=]", Operator),
            (r"[()\[\]{},:]", Punctuation),
        ],
        "learn": [  # `learn weights untied`, `learn C, lam tied`: up to the end of the line
            include("space"),
            (r"\r?\n", Whitespace, "#pop"),
            (words(LEARN_WORDS, suffix=r"\b"), Keyword.Pseudo),
            (_NAME, Name.Variable),
            (r"([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),  # learn influence(rbfs = 63, range = 310)
            (r"=", Operator),
            (r"[(),]", Punctuation),
        ],
    }
