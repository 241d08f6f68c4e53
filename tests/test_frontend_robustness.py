"""Inputs a fuzzer found: none may crash (exit 2, internal error) or hang the front end; each
is a clean `FILE:LINE:COL: error` with the right line under it, exit 1, no traceback."""
import os
import subprocess
import sys
import time

import pytest
import sympy as sp

from conftest import EXAMPLES, ROOT, run_dpc

LISTA = (EXAMPLES / "lista.dp").read_text()
KMEANS = (EXAMPLES / "kmeansnet.dp").read_text()


def _clean_error(result, where: str = ""):
    """exit 1, no traceback, no internal error; `where` (FILE:LINE:COL) starts the message."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


def _run_dpc_within(seconds, *args):
    """run_dpc with a time limit: a hang is a failure, not a stuck test run."""
    try:
        return subprocess.run([sys.executable, "-m", "dpc", *args], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dpc {' '.join(args)} took over {seconds} s")


def _parse_error(text: str):
    from dpc.errors import DpcError
    from dpc.grammar import parse
    with pytest.raises(DpcError) as info:
        parse(text, "f.dp")
    return info.value


# --- 1. stray control and line-separator characters --------------------------------

STRAY = ["\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("ch", STRAY, ids=[f"U+{ord(c):04X}" for c in STRAY])
def test_stray_control_character_is_a_syntax_error_at_its_column(ch):
    text = LISTA.replace("minimize 0.5 * sqnorm", f"minimize 0.5 *{ch} sqnorm")
    err = _parse_error(text)
    line = LISTA.splitlines().index("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)") + 1
    diag = err.diagnostics[0]
    assert (diag.span.line, diag.span.column) == (line, 15)
    assert f"unexpected character {ch!r} (U+{ord(ch):04X})" in diag.message
    shown, caret = err.format().splitlines()[1:3]
    assert shown == "    minimize 0.5 *? sqnorm(x - D @ z) + lam * norm1(z)"  # one visible column
    assert caret.index("^") == 4 + 14


def test_stray_control_character_via_cli_is_a_clean_error(tmp_path):
    path = tmp_path / "vt.dp"
    path.write_text(LISTA.replace("dims   m, n", "dims   m,\x0b n"), encoding="utf-8")
    _clean_error(run_dpc("check", str(path)), f"{path}:4:10: error: syntax error: unexpected character '\\x0b'")


def test_form_feed_keeps_the_right_line_under_a_later_error():
    text = "network N\f\ndims m\f, n\ninput x : R[m]\nminimize (x\n"
    err = _parse_error(text)
    lines = err.format().splitlines()
    assert lines[0].startswith("f.dp:4:"), lines[0]
    assert lines[1] == "    minimize (x"


def test_error_after_a_line_separator_points_at_its_own_line():
    from dpc.errors import Diagnostic
    from dpc.grammar.ast import Span
    source = "a\u2028b\nsecond line\n"
    shown = Diagnostic("bad", Span("f.dp", 2, 1, 2, 7)).format(source).splitlines()
    assert shown[1:] == ["    second line", "    ^^^^^^"]


def test_control_character_at_end_of_file_is_a_clean_error():
    err = _parse_error("network N\n\x1e")
    assert "U+001E" in err.format()


# --- 2. encodings --------------------------------------------------------------------

def test_non_utf8_file_is_an_error_at_the_bad_byte(tmp_path):
    path = tmp_path / "latin1.dp"
    path.write_bytes(LISTA.replace("lam = 0.1", "lam = 0.1  # \u03bb").encode("utf-8")
                     .replace(b"let    L", b"let    L\xe9"))
    result = run_dpc("compile", str(path), "-o", "-")
    _clean_error(result, f"{path}:8:9: error:")
    assert "0xe9" in result.stderr and "UTF-8" in result.stderr
    assert "hint: save the file as UTF-8" in result.stderr
    assert result.stderr.splitlines()[2].index("^") == 4 + 8


def test_non_utf8_file_is_a_dpc_error_through_api_and_parser(tmp_path):
    from dpc.api import compile_file
    from dpc.errors import DpcError
    from dpc.grammar import parse_file
    path = tmp_path / "bad.dp"
    path.write_bytes(b"network N\n\xff\n")
    for read in (compile_file, parse_file):
        with pytest.raises(DpcError, match="not valid UTF-8") as info:
            read(str(path))
        assert str(info.value.diagnostics[0].span) == f"{path}:2:1"


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.dp"
    path.write_bytes(b"\xef\xbb\xbf" + LISTA.encode("utf-8"))
    assert run_dpc("check", str(path)).returncode == 0
    from dpc.api import compile_file
    assert compile_file(str(path)).startswith('"""LISTA')


# --- 3. number literals ----------------------------------------------------------------

def test_parse_number_keeps_exact_rationals():
    from dpc.literals import parse_number
    assert parse_number("0.1") == sp.Rational(1, 10)
    assert parse_number("16") == 16 and parse_number("1e5") == 100000 and parse_number(".5") == sp.Rational(1, 2)
    assert parse_number("1.5e-3") == sp.Rational(3, 2000) and parse_number("-2.5") == sp.Rational(-5, 2)
    assert parse_number("0e99999999") == 0 and parse_number("2.2250738585072014e-308") > 0


def test_parse_number_rounds_long_literals_to_30_digits():
    from dpc.literals import parse_number
    pi = "3.14159265358979323846264338327950288419716939937510"
    assert parse_number(pi) == sp.Rational("3.14159265358979323846264338328")
    assert parse_number("9" * 40) == sp.Integer(10) ** 40
    assert parse_number("0." + "0" * 300 + "1" * 5000) == sp.Rational("1.11111111111111111111111111111e-301")


@pytest.mark.parametrize("text", ["1" * 5000, "1e99999", "1e-99999", "1e-999999", "1e99999999", "1e309",
                                  "-1e309", "1e-320", "0." + "0" * 5000 + "1", "1e" + "9" * 5000])
def test_parse_number_refuses_out_of_range_in_milliseconds(text):
    from dpc.literals import LiteralError, parse_number
    start = time.perf_counter()
    with pytest.raises(LiteralError) as info:
        parse_number(text)
    assert time.perf_counter() - start < 0.1
    assert info.value.hint and len(info.value.message) < 200  # a 5000-digit literal is not quoted whole


def test_unroll_beyond_max_unroll_is_an_error_at_the_number():
    from dpc.literals import MAX_UNROLL
    for count, message in [("99999999999999999999", f"unroll is at most {MAX_UNROLL}"), ("9" * 4301, "at most"),
                           ("0", "unroll needs a positive integer"), (str(MAX_UNROLL + 1), "at most")]:
        err = _parse_error(LISTA.replace("unroll 16", f"unroll {count}"))
        diag = err.diagnostics[0]
        assert message in diag.message and (diag.span.line, diag.span.column) == (14, 8), diag
        assert diag.span.end_column - diag.span.column == len(count)


def test_unroll_at_max_unroll_is_accepted():
    from dpc.grammar import parse
    from dpc.literals import MAX_UNROLL
    tree = parse(LISTA.replace("unroll 16", f"unroll {MAX_UNROLL}"))
    assert [s.count for s in tree.statements if getattr(s, "kind", "") == "unroll"] == [MAX_UNROLL]


def test_literal_dim_beyond_max_dim_is_an_error_at_the_number(tmp_path):
    path = tmp_path / "dim.dp"
    path.write_text(LISTA.replace("param  D : R[m, n]", "param  D : R[m, 99999999999]"))
    _clean_error(run_dpc("check", str(path)), f"{path}:6:17: error: a size in a type is at most 1000000")
    err = _parse_error(LISTA.replace("var    z : R[n]", "var    z : R[0]"))
    assert "positive integer" in err.diagnostics[0].message


# --- 4. --set ----------------------------------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ("lam=1/0", "divides by zero"), ("unroll=\u00b2", "--set unroll needs a positive integer"),
    ("lam=1e309", "too large"), ("lam=1e99999999", "too large"), ("lam=1e-99999", "too small"),
    ("unroll=99999999999999999999999", "at most 10000"), ("unroll=0", "positive integer"),
    ("lam=1/2/3", "not a number"), ("lam=0x10", "not a number"),
])
def test_set_refuses_bad_values_cleanly(setting, message):
    result = _run_dpc_within(60, "compile", "examples/lista.dp", "--set", setting, "-o", "-")
    _clean_error(result, message)
    assert "hint:" in result.stderr


def test_set_accepts_signs_and_fractions():
    result = run_dpc("compile", "examples/lista.dp", "--set", "lam=1/4", "--set", "unroll=0032", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert "def __init__(self, *, D, lam=0.25, steps=32):" in result.stdout
    from dpc.literals import parse_value
    assert parse_value("-1/3") == sp.Rational(-1, 3) and parse_value("+2e-3") == sp.Rational(1, 500)


# --- 5. explain does not grow with the unroll count -----------------------------------------

def test_sharing_summary_counts_without_building_the_unrolled_graph(monkeypatch):
    from dataclasses import replace

    from dpc import graph
    from dpc.pipeline import compile_program
    program = compile_program(LISTA, "lista.dp")
    small = graph.sharing_summary(program)
    assert small == ["W: 16 copies, one per layer", "S: 16 copies, one per layer", "theta: 16 copies, one per layer"]
    for d in program.decls:  # the same counts the graph has, for a count layers() can build
        if d.trainable:
            assert sum(1 for n in graph.layers(program) if n[:2] == ("param", d.name)) == 16

    def unrolled(*args, **kwargs):
        raise AssertionError("sharing_summary built the unrolled graph")
    monkeypatch.setattr(graph, "layers", unrolled)
    assert graph.sharing_summary(replace(program, layers=10 ** 12))[0] == "W: 1000000000000 copies, one per layer"
    tied = compile_program((EXAMPLES / "sc2net.dp").read_text(), "sc2net.dp")
    assert all(line.endswith("1 copy, shared by all layers") for line in graph.sharing_summary(tied))


def test_explain_at_max_unroll_finishes_quickly(monkeypatch, capsys):
    from dpc import graph
    from dpc.cli import main
    from dpc.literals import MAX_UNROLL

    def unrolled(*args, **kwargs):
        raise AssertionError("explain built the unrolled graph")
    monkeypatch.setattr(graph, "layers", unrolled)
    start = time.perf_counter()
    assert main(["explain", str(EXAMPLES / "lista.dp"), "--set", f"unroll={MAX_UNROLL}"]) == 0
    assert time.perf_counter() - start < 30
    assert f"W: {MAX_UNROLL} copies, one per layer" in capsys.readouterr().out


# --- 6. check runs everything compile runs ---------------------------------------------------

@pytest.mark.parametrize("program, message", [
    (LISTA.replace("output z", "output lam"), "'lam' is not a var"),
    (LISTA.replace("unroll 16", "unroll 0"), "unroll needs a positive integer"),
    (KMEANS.replace("derive closed ", "learn weights\nderive closed "), "learn weights needs an update"),
    (KMEANS.replace("learn  C ", "unroll 3\nlearn C "), "derive closed gives the minimiser in one layer"),
], ids=["output_of_a_hyper", "unroll_0", "learn_before_derive_closed", "unroll_of_a_closed_form"])
def test_check_rejects_what_compile_rejects(tmp_path, program, message):
    path = tmp_path / "p.dp"
    path.write_text(program)
    compiled = run_dpc("compile", str(path), "-o", "-")
    checked = run_dpc("check", str(path))
    _clean_error(compiled, message)
    _clean_error(checked, message)
    assert checked.stderr == compiled.stderr


def test_check_counts_the_declarations_the_user_wrote():
    # lista.dp has six declaration lines: dims m, n; input x; param D; hyper lam; let L; var z
    listed = "6 declarations (dims m, n; input x; param D; hyper lam; let L; var z), 4 directives"
    result = run_dpc("check", "examples/lista.dp")
    assert result.returncode == 0
    first, convexity = result.stdout.strip().splitlines()  # then what derive found of the objective
    assert first == f"examples/lista.dp: ok: network LISTA, {listed}"
    assert convexity == "examples/lista.dp: the objective is convex in z (DCP: every term is convex or affine)"
    # lfista's passes add temporaries and weights; they are not the user's declarations
    result = run_dpc("check", "examples/lfista.dp")
    assert listed in result.stdout


def test_check_accepts_set_as_compile_does():
    result = run_dpc("check", "examples/lista.dp", "--set", "unroll=99999")
    _clean_error(result, "--set unroll is at most 10000")


# --- 7. no traceback for a user's mistake ------------------------------------------------------

def test_deep_nesting_is_an_error_at_the_deepest_statement(tmp_path):
    path = tmp_path / "deep.dp"
    path.write_text(LISTA.replace("lam = 0.1", "lam = " + "+".join(["1"] * 3000)))
    for command in ("check", "compile", "explain"):
        _clean_error(run_dpc(command, str(path)), f"{path}:7:1: error: this statement is nested too deeply")


def test_deep_nesting_is_a_dpc_error_in_process():
    from dpc.api import compile_source
    from dpc.errors import DpcError
    with pytest.raises(DpcError, match="nested too deeply") as info:
        # (a chain of minus signs is counted, not nested: 20,000 of them compile, tests/test_structured_errors.py)
        compile_source(LISTA.replace("lam = 0.1", "lam = " + "1 - (" * 20000 + "1" + ")" * 20000), "deep.dp")
    assert str(info.value.diagnostics[0].span) == "deep.dp:7:1"
    update = (EXAMPLES / "lista_update.dp").read_text()
    deep_let = "update {\n  let g = " + "+".join(["z"] * 20000) + "\n  z <- g\n}"
    with pytest.raises(DpcError, match="nested too deeply") as info:
        compile_source(update.replace("update z <- soft(z - D.T @ (D @ z - x) / L, lam / L)", deep_let), "u.dp")
    assert str(info.value.diagnostics[0].span) == "u.dp:12:3"  # the let inside the block, not `update`


def test_a_sum_of_hundreds_of_terms_parses():
    from dpc.grammar import parse
    tree = parse(LISTA.replace("lam = 0.1", "lam = " + "+".join(["1"] * 5000)))
    assert tree.statements[4].value.op == "+"


def test_reading_a_directory_or_a_missing_file_is_a_clean_error(tmp_path):
    _clean_error(run_dpc("check", str(tmp_path)), f"cannot read {tmp_path}: it is a directory")
    _clean_error(run_dpc("explain", str(tmp_path / "none.dp")), "cannot read")


def test_unreadable_file_is_a_clean_error(tmp_path, monkeypatch, capsys):
    import builtins

    from dpc.cli import main
    path = tmp_path / "secret.dp"
    path.write_text(LISTA)
    real_open = builtins.open

    def no_permission(file, *args, **kwargs):  # chmod 000 does not stop root, so refuse here
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", no_permission)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read {path}: Permission denied" in err and "hint: check the file's permissions" in err


def test_unwritable_output_is_a_clean_error(tmp_path):
    result = run_dpc("compile", "examples/lista.dp", "-o", str(tmp_path / "no" / "such" / "dir.py"))
    _clean_error(result, "cannot write")
    _clean_error(run_dpc("compile", "examples/lista.dp", "-o", str(tmp_path)), "cannot write")
