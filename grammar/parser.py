"""Text -> AST: lark (LALR, propagate_positions) and one Transformer to frozen dataclasses."""
from __future__ import annotations

import difflib
import os
import threading
import unicodedata
from functools import lru_cache

from lark import Lark, Token, Tree, v_args
from lark.visitors import Transformer_NonRecursive
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from dpc.errors import DpcError, nested_too_deeply, read_source, source_lines
from dpc.grammar import ast
from dpc.literals import MAX_DIM, MAX_UNROLL, LiteralError, parse_count

KEYWORDS = ("network", "dims", "input", "param", "hyper", "let", "var", "minimize", "subject",
            "update", "derive", "relax", "adapt", "unroll", "learn", "output", "backward")

# Friendly names for terminals in "expected ..." messages.
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "NUMBER": "a number", "_NL": "end of line",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "AT": "'@'", "CIRCUMFLEX": "'^'", "CMP": "'>=' or '<='", "SUM_INDEX": "sum_j",
    "$END": "end of file",
}


def _token_name(t: str) -> str:
    """A terminal's friendly name; lark's anonymous ones (__ANON_n, numbered by the grammar's order) by
    their text, e.g. '<-'."""
    if t in _TOKEN_NAMES:
        return _TOKEN_NAMES[t]
    if t.startswith("__ANON"):
        pattern = {term.name: term.pattern.value for term in _parser().terminals}.get(t)
        if pattern is not None:
            return f"'{pattern}'"
    return f"'{t.lower()}'" if t.isalpha() and t.isupper() and len(t) < 12 else t


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark.open_from_package("dpc.grammar", "dp.lark", parser="lalr",
                                  propagate_positions=True, maybe_placeholders=False, cache=_cache_file(),
                                  lexer_callbacks={kw.upper(): _keyword_ends for kw in KEYWORDS + ("to", "in", "R")})


def _cache_file() -> str | bool:
    """Where lark keeps the built LALR tables (building them is ~0.1 s of every compile; loading ~0.02 s):
    the user's cache folder. lark stores a hash of the grammar, its options, lark's and Python's versions
    in the file and rebuilds (and rewrites) it when any differ, so an edited dp.lark is never served stale.
    False (no cache) where the folder cannot be made."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "dpc")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.path.join(folder, "dp-lark-tables.pickle") if os.access(folder, os.W_OK) else False


# The text being parsed, for _keyword_ends (lark's callbacks see only the token).
_current = threading.local()


class _GluedKeyword(Exception):
    def __init__(self, token: Token, word: str):
        super().__init__(word)
        self.token, self.word = token, word


def _keyword_ends(token: Token) -> Token:
    """A keyword must end where a name could not go on. Where only keywords can come (a statement's start),
    lark's contextual lexer matches `varz` as `var` + `z`; the typo would declare z, `learnweights` would
    learn the weights. Refuse it instead."""
    text = getattr(_current, "text", "")
    end = token.end_pos
    if end < len(text) and (text[end].isalnum() or text[end] == "_"):
        start = end
        while end < len(text) and (text[end].isalnum() or text[end] == "_"):
            end += 1
        raise _GluedKeyword(token, str(token) + text[start:end])
    return token


def _span(file: str, meta_or_token) -> ast.Span:
    m = meta_or_token
    return ast.Span(file, m.line, m.column, m.end_line, m.end_column)


def _ident(file: str, tok: Token) -> ast.Ident:
    return ast.Ident(str(tok), _span(file, tok))


def _count(file: str, tok: Token, what: str, high: int) -> int:
    """An INT token as a count within 1..high, or a DpcError at the number."""
    try:
        return parse_count(str(tok), what, high)
    except LiteralError as err:
        raise DpcError(err.message, _span(file, tok), err.hint) from None


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):  # iterative: a sum of 1000 terms is a tree 1000 deep
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, meta):
        return _span(self.file, meta)

    def _id(self, tok):
        return _ident(self.file, tok)

    # --- statements ---
    def start(self, meta, children):
        return tuple(children)

    def network(self, meta, ch):
        return ast.NetworkStmt(self._s(meta), self._id(ch[0]))

    def dims(self, meta, ch):
        return ast.DimsStmt(self._s(meta), tuple(self._id(t) for t in ch))

    def _decl(self, kind, meta, ch):
        name = self._id(ch[0])
        type_ = next((c for c in ch[1:] if isinstance(c, ast.TypeSpec)), None)
        value = next((c for c in ch[1:] if isinstance(c, ast.Expr)), None)
        return ast.DeclStmt(self._s(meta), kind, name, type_, value)

    def input(self, meta, ch):
        return self._decl("input", meta, ch)

    def param(self, meta, ch):
        return self._decl("param", meta, ch)

    def hyper(self, meta, ch):
        return self._decl("hyper", meta, ch)

    def let(self, meta, ch):
        return self._decl("let", meta, ch)

    def var(self, meta, ch):
        return self._decl("var", meta, ch)

    def minimize(self, meta, ch):
        return ast.MinimizeStmt(self._s(meta), ch[0])

    def subject_to(self, meta, ch):
        return ast.SubjectToStmt(self._s(meta), tuple(ch))

    def compare(self, meta, ch):
        return ast.Compare(self._s(meta), str(ch[1]), ch[0], ch[2])

    def member(self, meta, ch):
        args = ch[2] if len(ch) > 2 else ((), ())
        return ast.Member(self._s(meta), self._id(ch[0]), self._id(ch[1]), args[0])

    def assign(self, meta, ch):
        return ast.Assign(self._s(meta), self._id(ch[0]), ch[1])

    def update(self, meta, ch):
        return ast.UpdateStmt(self._s(meta), tuple(ch))

    def _directive(self, kind, meta, ch, **kw):
        return ast.DirectiveStmt(self._s(meta), kind, **kw)

    def derive(self, meta, ch):
        args, kwargs = ch[1] if len(ch) > 1 else ((), ())
        return self._directive("derive", meta, ch, name=self._id(ch[0]), args=args, kwargs=kwargs)

    def adapt(self, meta, ch):
        args, kwargs = ch[1] if len(ch) > 1 else ((), ())
        return self._directive("adapt", meta, ch, name=self._id(ch[0]), args=args, kwargs=kwargs)

    def relax(self, meta, ch):
        args, kwargs = ch[2] if len(ch) > 2 else ((), ())
        return self._directive("relax", meta, ch, target=self._id(ch[0]), name=self._id(ch[1]),
                               args=args, kwargs=kwargs)

    def unroll(self, meta, ch):
        return self._directive("unroll", meta, ch, name=self._id(ch[0]),
                               count=_count(self.file, ch[0], "unroll", MAX_UNROLL))

    def unroll_until(self, meta, ch):
        # `unroll until(tol = 1e-6, max = 500)`: run to convergence; the pass reads the options
        args, kwargs = ch[0] if ch else ((), ())
        return self._directive("unroll", meta, ch, name=ast.Ident("until", self._s(meta)), args=args, kwargs=kwargs)

    def backward(self, meta, ch):
        return self._directive("backward", meta, ch, name=self._id(ch[0]))

    def learn(self, meta, ch):
        # each item: its words, and the options in parentheses after its first word (learn influence(rbfs = 63))
        return self._directive("learn", meta, ch, items=tuple(words for words, _ in ch),
                               item_options=tuple(options for _, options in ch))

    def learn_item(self, meta, ch):
        options = next((c for c in ch if isinstance(c, tuple)), ((), ()))
        return tuple(self._id(t) for t in ch if not isinstance(t, tuple)), options

    def output(self, meta, ch):
        # `output z` names a var (name is set, as before); `output x - D.T @ u` is an expression (args)
        expr = ch[0]
        if isinstance(expr, ast.Name):
            return self._directive("output", meta, ch, name=ast.Ident(expr.id, expr.span), args=(expr,))
        return self._directive("output", meta, ch, args=(expr,))

    def type(self, meta, ch):
        # a literal size is stored normalised (R[007] is R[7]) and within MAX_DIM
        dims = tuple(str(_count(self.file, t, "a size in a type", MAX_DIM)) if t.type == "INT" else str(t)
                     for t in ch)
        return ast.TypeSpec(dims, self._s(meta))

    def call_args(self, meta, ch):
        args, kwargs = [], []
        for c in ch:
            if c is None:
                continue
            if isinstance(c, tuple):
                kwargs.append(c)
            else:
                args.append(c)
        return tuple(args), tuple(kwargs)

    def kwarg(self, meta, ch):
        return (self._id(ch[0]), ch[1])

    # --- expressions ---
    def number(self, meta, ch):
        return ast.Number(self._s(meta), str(ch[0]))

    def name(self, meta, ch):
        return ast.Name(self._s(meta), str(ch[0]))

    def _bin(op):
        def rule(self, meta, ch):
            return ast.BinOp(self._s(meta), op, ch[0], ch[1])
        return rule

    add, sub, mul, div, matmul, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("@"), _bin("^")

    def neg(self, meta, ch):
        return ast.Neg(self._s(meta), ch[0])

    def transpose(self, meta, ch):
        return ast.Transpose(self._s(meta), ch[0])

    def index(self, meta, ch):
        return ast.Index(self._s(meta), ch[0], str(ch[1]), _span(self.file, ch[1]))

    def call(self, meta, ch):
        args, kwargs = ch[1]
        kwargs = tuple((k.id, v) for k, v in kwargs)
        return ast.Call(self._s(meta), str(ch[0]), args, kwargs, _span(self.file, ch[0]))

    def index_sum(self, meta, ch):
        return ast.IndexSum(self._s(meta), str(ch[0])[len("sum_"):], ch[1])


def _describe_expected(expected) -> str:
    names = sorted({_token_name(t) for t in expected})
    keywords = [n for n in names if n.strip("'").lower() in KEYWORDS]
    others = [n for n in names if n not in keywords]
    if keywords and len(keywords) > 4:
        others.append("a statement keyword")
    else:
        others.extend(keywords)
    if len(others) > 6:
        others = others[:6] + ["..."]
    return ", ".join(others)


def _show_char(ch: str) -> str:
    """'x', or '\\x0b' (U+000B) for a character that prints as nothing or could be mistaken."""
    return repr(ch) if ch.isascii() and ch.isprintable() else f"{ch!r} (U+{ord(ch):04X})"


def _char_name(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}" if name else f"the control character U+{ord(ch):04X}"


def _syntax_error(err: UnexpectedInput, file: str, text: str) -> DpcError:
    line, col = max(err.line, 1), max(err.column, 1)
    lines = source_lines(text)
    if isinstance(err, UnexpectedToken) and err.token.type == "$END":
        line, col = len(lines), len(lines[-1]) + 1
    if line <= len(lines):  # an end of line after a comment ending in a lone \r: just past the line's text
        col = min(col, len(lines[line - 1]) + 1)
    span = ast.Span(file, line, col, line, col + 1)
    hint = None
    if isinstance(err, UnexpectedCharacters):
        ch = err.char
        message = f"unexpected character {_show_char(ch)}"
        if ch == "=" or ch == "<":
            hint = "an update is written `z <- expr`; a constraint `z >= 0`"
        elif ch == "\r":
            hint = "a carriage return without a newline: save the file with \\n (or \\r\\n) line endings"
        elif ch.isalpha() or ch.isdigit():  # λ, ², ...: read as a letter or a digit, but not ASCII
            hint = f"{_char_name(ch)}: names and numbers use ASCII letters, digits and _ only"
        elif not ch.isprintable() or not ch.isascii():
            hint = (f"{_char_name(ch)} cannot appear in a .dp program outside a comment: delete it "
                    "(spaces, tabs and newlines separate tokens)")
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        shown = "end of line" if tok.type == "_NL" else ("end of file" if tok.type == "$END" else repr(str(tok)))
        if tok.type not in ("_NL", "$END"):
            span = ast.Span(file, tok.line, tok.column, tok.end_line or tok.line,
                            tok.end_column or tok.column + len(str(tok)))
        message = f"unexpected {shown}; expected {_describe_expected(err.expected)}"
        if tok.type == "EQUAL" and "'<-'" in {_token_name(t) for t in err.expected}:  # `update z = ...`
            hint = "an update is written `z <- expr`: write `<-` in place of `=`"
        elif tok.type in ("RPAR", "RSQB"):
            hint = "this bracket closes nothing: check the brackets before it"
        elif tok.type == "_NL" and "RPAR" in err.expected:
            hint = "a '(' on this line is never closed"
        if tok.type == "NAME" and err.expected & {"_NL", "$END"} == err.expected & {"_NL", "$END"} \
                and "NAME" not in err.expected and str(tok) not in KEYWORDS:
            close = difflib.get_close_matches(str(tok), KEYWORDS, n=1)
            if close:
                hint = f"did you mean `{close[0]}`?"
    elif isinstance(err, UnexpectedEOF):
        message = f"unexpected end of file; expected {_describe_expected(err.expected)}"
    else:  # pragma: no cover - lark has no other kinds
        message = str(err).splitlines()[0]
    return DpcError(f"syntax error: {message}", span, hint, source=text)


def _lark_tree(text: str) -> Tree:
    text = text if text.endswith("\n") else text + "\n"
    _current.text = text
    try:
        return _parser().parse(text)
    finally:
        _current.text = ""


def parse(text: str, file: str = "<string>") -> ast.Program:
    """Parse .dp source into an AST; raises DpcError with a span on a syntax error."""
    try:
        tree = _lark_tree(text)
    except UnexpectedInput as err:
        raise _syntax_error(err, file, text) from None
    except _GluedKeyword as err:
        tok = err.token
        span = ast.Span(file, tok.line, tok.column, tok.line, tok.column + len(err.word))
        hint = ("a type is R, R[n] or R[m, n]" if str(tok) == "R" else
                f"put a space after it: {tok} {err.word[len(str(tok)):]}")
        raise DpcError(f"syntax error: '{err.word}' runs the keyword '{tok}' into a name", span, hint,
                       source=text) from None
    try:
        statements = _ToAst(file).transform(tree)
    except VisitError as err:  # errors inside the transformer arrive wrapped
        if isinstance(err.orig_exc, DpcError):
            raise err.orig_exc.with_source(text) from None
        raise
    return ast.Program(file, text, statements)


def nesting_error(text: str, file: str) -> DpcError:
    """The DpcError for a RecursionError while compiling `text`: at the statement nested deepest.

    Later stages (lowering, sympy, printing) recurse once or more per level of an expression;
    the statement whose parse tree is deepest is the one to split. Its depth is found without
    recursion, from lark's tree.
    """
    try:
        tree = _lark_tree(text)
    except UnexpectedInput:
        return nested_too_deeply(file)
    deepest, where = 0, None
    for stmt in _statements(tree):
        depth = _depth(stmt)
        if depth > deepest and not stmt.meta.empty:
            deepest, where = depth, _span(file, stmt.meta)
    return nested_too_deeply(file, where).with_source(text)


def _statements(tree: Tree):
    """Top-level statements, and the lines of an update block in its place (one line each)."""
    for stmt in tree.children:
        if isinstance(stmt, Tree) and stmt.data == "update" and len(stmt.children) > 1:
            yield from (c for c in stmt.children if isinstance(c, Tree))
        elif isinstance(stmt, Tree):
            yield stmt


def _depth(node) -> int:
    """Levels of a lark tree, counted with a stack rather than recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Tree):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in node.children)
    return deepest


def parse_file(path: str) -> ast.Program:
    return parse(read_source(path), str(path))
