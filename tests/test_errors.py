"""A user's mistake: FILE:LINE:COL, the source line, a caret under the mistake, a hint; exit 1; no traceback."""
import re

import pytest

from conftest import run_dpc

HEAD = """network N
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
var z : R[n] = 0
"""
TAIL = "derive proxgrad\nunroll 3\n"

CASES = {
    # name: (objective line, expected message, column of the caret, caret width)
    "syntax": ("minimize 0.5 * sqnorm(x - D @ z)) + lam\n", r"syntax error: unexpected '\)'", 33, 1),
    "undefined": ("minimize 0.5 * sqnorm(x - E @ z) + lam * norm1(z)\n", r"undefined name 'E'", 27, 1),
    "shape": ("minimize 0.5 * sqnorm(x - D.T @ z) + lam * norm1(z)\n",
              r"cannot multiply D\.T : R\[n, m\] by z : R\[n\]: inner sizes m and n differ", 27, 7),
    "unknown_atom": ("minimize 0.5 * sqnorm(x - D @ z) + lam * nrom1(z)\n", r"unknown function 'nrom1'", 42, 5),
    "no_prox": ("minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(D @ z)\n",
                r"no known proximal operator for lam\*norm1\(D @ z\)", 36, 18),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_points_at_the_mistake(tmp_path, case):
    line, message, column, width = CASES[case]
    path = tmp_path / f"{case}.dp"
    path.write_text(HEAD + line + TAIL)
    result = run_dpc("compile", str(path), "-o", str(tmp_path / "out.py"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert re.match(rf"^{re.escape(str(path))}:7:{column}: error: {message}", lines[0]), lines[0]
    assert lines[1].strip() == line.strip()
    caret = lines[2]
    assert caret.index("^") == 4 + column - 1 and caret.count("^") == width, caret
    assert not (tmp_path / "out.py").exists()


def test_check_reports_every_error(tmp_path):
    path = tmp_path / "many.dp"
    path.write_text(HEAD.replace("param D : R[m, n]", "param D : R[m, q]") +
                    "let L = opnorm(E)\nminimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\n" + TAIL)
    result = run_dpc("check", str(path))
    assert result.returncode == 1
    assert "4:11: error: 'q' is not a declared dim" in result.stderr
    assert "7:16: error: undefined name 'E'" in result.stderr


def test_misspelt_keyword_gets_a_suggestion(tmp_path):
    path = tmp_path / "kw.dp"
    path.write_text(HEAD + "minimze 0.5 * sqnorm(x - D @ z)\n")
    result = run_dpc("check", str(path))
    assert result.returncode == 1 and "did you mean `minimize`?" in result.stderr


def test_missing_unroll_points_at_the_derivation(tmp_path):
    path = tmp_path / "nounroll.dp"
    path.write_text(HEAD + "minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\nderive proxgrad\n")
    result = run_dpc("compile", str(path))
    assert result.returncode == 1 and ":8:1: error: the program iterates but never says how often" in result.stderr
    assert "unroll" in result.stderr


def test_reserved_name_is_refused(tmp_path):
    path = tmp_path / "kw.dp"
    path.write_text(HEAD.replace("hyper lam", "hyper lambda") + "minimize sqnorm(x - D @ z)\n" + TAIL)
    result = run_dpc("check", str(path))
    assert result.returncode == 1 and ":5:7: error: 'lambda' cannot name a value" in result.stderr


def test_unknown_file_and_bad_set():
    result = run_dpc("compile", "no/such/file.dp")
    assert result.returncode == 1 and "cannot read no/such/file.dp" in result.stderr
    result = run_dpc("compile", "examples/lista.dp", "--set", "unroll=zero", "-o", "-")
    assert result.returncode == 1 and "--set unroll needs a positive integer" in result.stderr
