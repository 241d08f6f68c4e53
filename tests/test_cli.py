"""The CLI contract: compile (deterministic, torch-free), check, explain, --set."""
import subprocess
import sys

from conftest import EXAMPLES, run_dpc


def test_compile_never_imports_torch(tmp_path):
    code = ("import sys; from dpc.cli import main; "
            f"rc = main(['compile', {str(EXAMPLES / 'lista.dp')!r}, '-o', {str(tmp_path / 'l.py')!r}]); "
            "assert rc == 0; "
            "assert 'torch' not in sys.modules, 'dpc compile imported torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "l.py").read_text().startswith('"""LISTA')


def test_compiling_twice_gives_identical_bytes(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    assert run_dpc("compile", "examples/lista.dp", "-o", str(a)).returncode == 0
    assert run_dpc("compile", "examples/lista.dp", "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()


def test_default_output_sits_beside_the_source(tmp_path):
    src = tmp_path / "lista.dp"
    src.write_text((EXAMPLES / "lista.dp").read_text())
    result = run_dpc("compile", str(src))
    assert result.returncode == 0 and (tmp_path / "lista.py").exists()
    assert f"wrote {tmp_path / 'lista.py'}" in result.stdout


def test_set_overrides_unroll_and_hyper_defaults():
    result = run_dpc("compile", "examples/lista.dp", "--set", "unroll=32", "--set", "lam=0.25", "-o", "-")
    assert result.returncode == 0
    assert "def __init__(self, *, D, lam=0.25, steps=32):" in result.stdout


def test_explain_shows_every_pass():
    result = run_dpc("explain", "examples/lista.dp")
    assert result.returncode == 0
    out = result.stdout
    for header in ("== source", "== derive proxgrad(step = 1/L)", "== unroll 16", "== learn weights untied",
                   "== fold start"):
        assert header in out
    assert "grad f(z) = D.T @ (D @ z - x)" in out
    assert "z <- soft(z - 1/L*D.T @ (D @ z - x), lam/L)" in out
    assert "S = eye(n) - 1/L*D.T @ D" in out
    assert "z <- soft(W @ x, theta)" in out  # the folded first layer
    assert "W: 16 copies, one per layer" in out


def test_check_accepts_a_good_program():
    result = run_dpc("check", "examples/lista.dp")
    assert result.returncode == 0 and "ok: network LISTA" in result.stdout


def test_generated_module_imports_only_torch():
    result = run_dpc("compile", "examples/lista.dp", "-o", "-")
    imports = [line for line in result.stdout.splitlines() if line.startswith(("import ", "from "))]
    assert imports and all(line.split()[1].split(".")[0] == "torch" for line in imports), imports
