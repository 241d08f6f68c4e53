"""The Pygments lexer for .dp (dpc.grammar.pygments_lexer): every example lexes cleanly and round-trips,
the token types are the ones a reader expects, its word lists are the compiler's, and Pygments finds it
through the entry point (pygmentize -l dp, Sphinx and MkDocs look lexers up that way)."""
import subprocess
import sys

import pytest

pygments = pytest.importorskip("pygments")
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import Comment, Error, Keyword, Name, Number, Operator  # noqa: E402

from conftest import EXAMPLES  # noqa: E402
from dpc.grammar.pygments_lexer import DpLexer  # noqa: E402

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.dp"))


def tokens(text):
    return [(t, v) for t, v in DpLexer().get_tokens(text) if v.strip()]


def kind_of(text, word):
    """The token type the lexer gives the first token spelt `word` in text."""
    return next(t for t, v in tokens(text) if v == word)


def test_there_are_examples_to_lex():
    assert len(EXAMPLE_FILES) >= 5


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_lexes_without_error_and_round_trips(path):
    text = path.read_text(encoding="utf-8")
    lexed = list(DpLexer().get_tokens(text))
    assert [v for t, v in lexed if t in Error] == []
    assert "".join(v for _, v in lexed) == text


LISTA = (EXAMPLES / "lista.dp").read_text(encoding="utf-8")


def test_keywords_declarations_and_types():
    for word in ("network", "dims", "input", "param", "hyper", "let", "var"):
        assert kind_of(LISTA, word) is Keyword.Declaration, word
    for word in ("minimize", "derive", "unroll", "learn", "output"):
        assert kind_of(LISTA, word) is Keyword, word
    assert kind_of(LISTA, "R") is Keyword.Type
    assert kind_of(LISTA, "LISTA") is Name.Class
    assert kind_of("param R : R[m, n]\n", "R") is Name.Variable  # R is a name where no type can be
    text = "subject to s in onehot\nrelax onehot -> softmax(tau)\n"
    assert [kind_of(text, w) for w in ("subject", "to", "in", "onehot")] == [Keyword] * 3 + [Name.Builtin]
    assert kind_of("let simplex = 1\n", "simplex") is Name.Variable  # a set's name is only a set after `in`


def test_numbers_operators_and_builtins():
    text = "let a = 0.5 * 16 + 1e-3 - .5 / 2.5E+2\n"
    assert [t for t, v in tokens(text) if t in Number] == [Number.Float, Number.Integer] + [Number.Float] * 3
    assert kind_of(LISTA, "norm1") is Name.Builtin and kind_of(LISTA, "sqnorm") is Name.Builtin
    assert kind_of(LISTA, "proxgrad") is Name.Function  # a pass's method
    assert kind_of(LISTA, "lam") is Name.Variable and kind_of(LISTA, "z") is Name.Variable
    update = "update z <- soft(z - D.T @ (D @ z - x) / L, lam / L)\nminimize sum_j s[j] * sqnorm(x - C[j])\n"
    assert kind_of(update, "<-") is Operator and kind_of(update, ".T") is Operator
    assert kind_of(update, "sum_j") is Operator.Word and kind_of(update, "soft") is Name.Builtin
    assert kind_of("let sum_ab_c = 1\nlet y = norm1x\n", "norm1x") is Name  # prefixes are not builtins


def test_learn_lists_and_comments():
    text = "learn  weights coupled untied   # z <- soft(W @ x, theta)\nlearn C, lam tied\noutput z\n"
    assert [kind_of(text, w) for w in ("weights", "coupled", "untied", "tied")] == [Keyword.Pseudo] * 4
    assert kind_of(text, "C") is Name.Variable
    assert kind_of(text, "# z <- soft(W @ x, theta)") is Comment.Single
    assert kind_of(text, "output") is Keyword  # the learn list ends at its line
    continued = "minimize sqnorm(x - D @ z) \\\n    + lam * norm1(z)\n"
    assert all(t not in Error for t, _ in DpLexer().get_tokens(continued))


def test_word_lists_are_the_compilers():
    import importlib

    from dpc import atoms, lower
    from dpc.grammar import parser, pygments_lexer
    from dpc.passes.thresholds import EXCEPT, TYING
    learn = importlib.import_module("dpc.passes.learn")  # the package's `learn` is the pass function
    assert set(pygments_lexer.ATOMS) == set(atoms.ATOMS)
    assert set(pygments_lexer.SETS) == set(lower.SETS)
    assert set(pygments_lexer.DECLARATIONS + pygments_lexer.STATEMENTS) == set(parser.KEYWORDS)
    assert set(learn.LEARN_FORMS) | set(TYING) | {EXCEPT} <= set(pygments_lexer.LEARN_WORDS)


def test_pygments_finds_the_lexer_through_the_entry_point():
    assert type(get_lexer_by_name("dp")).__name__ == "DpLexer"
    assert type(get_lexer_for_filename("lista.dp")).__name__ == "DpLexer"
    done = subprocess.run([sys.executable, "-m", "pygments", "-l", "dp", "-f", "html", str(EXAMPLES / "lista.dp")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '<span class="kd">network</span>' in done.stdout  # Keyword.Declaration's CSS class


def test_the_compiler_does_not_import_pygments():
    code = ("import sys; from dpc.api import compile_file; compile_file(sys.argv[1]); "
            "print('pygments' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "lista.dp")], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
