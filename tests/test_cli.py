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


def test_set_unroll_on_until_allows_maxes_past_the_layer_cap(tmp_path):
    # on `unroll until(...)` --set unroll=N sets the loop's max, bounded as `max = ...` is (MAX_UNTIL), not by
    # the 10000 stored layers that bound a plain `unroll N`
    src = tmp_path / "until.dp"
    src.write_text("network P\ndims m, n\ninput x : R[m]\nparam D : R[m, n]\nhyper lam = 0.1\n"
                   "let L = opnorm(D)^2\nvar z : R[n] = 0\nminimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)\n"
                   "derive proxgrad(step = 1/L)\nunroll until(tol = 1e-6, max = 500)\n")
    result = run_dpc("compile", str(src), "--set", "unroll=20000", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert "steps=20000):" in result.stdout
    assert run_dpc("compile", str(src), "--set", "unroll=1000000000", "-o", "-").returncode == 0
    over = run_dpc("compile", str(src), "--set", "unroll=1000000001", "-o", "-")
    assert over.returncode != 0 and "at most 1000000000" in over.stderr
    plain = run_dpc("compile", "examples/lista.dp", "--set", "unroll=20000", "-o", "-")
    assert plain.returncode != 0 and "at most 10000" in plain.stderr


def test_explain_shows_every_pass():
    result = run_dpc("explain", "examples/lista.dp")
    assert result.returncode == 0
    out = result.stdout
    for header in ("== source", "== derive proxgrad(step = 1/L)", "== unroll 16", "== learn weights untied",
                   "== fold start"):
        assert header in out
    assert "grad f(z) = D.T @ (D @ z - x)" in out
    assert "z <- soft(z - 1/L*D.T @ (D @ z - x), lam/L)" in out
    assert "+ weight S : R[n, n] = eye(n) - 1/L*D.T @ D" in out  # the change (its note is not repeated)
    assert "z <- soft(W @ x, theta)" in out  # the folded first layer
    assert "W: 16 copies, one per layer" in out


def test_check_accepts_a_good_program():
    result = run_dpc("check", "examples/lista.dp")
    assert result.returncode == 0 and "ok: network LISTA" in result.stdout


def test_generated_module_imports_only_torch():
    result = run_dpc("compile", "examples/lista.dp", "-o", "-")
    imports = [line for line in result.stdout.splitlines() if line.startswith(("import ", "from "))]
    assert imports and all(line.split()[1].split(".")[0] == "torch" for line in imports), imports


# --- a repeated compile of an unchanged program skips the work (the stamp on the output's last line) ---

def _compile(src, out, *extra):
    result = run_dpc("compile", str(src), "-o", str(out), *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _lista_copy(tmp_path):
    src = tmp_path / "lista.dp"
    src.write_text((EXAMPLES / "lista.dp").read_text())
    return src, tmp_path / "lista.py"


def test_second_compile_is_up_to_date_and_leaves_the_file_alone(tmp_path):
    src, out = _lista_copy(tmp_path)
    assert _compile(src, out) == f"wrote {out}"
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    assert _compile(src, out) == f"up to date: {out}"
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    assert out.read_text().splitlines()[-1].startswith("# dpc-stamp: compiler 0.1.0+")


def test_the_up_to_date_check_imports_no_sympy_networkx_or_lark(tmp_path):
    src, out = _lista_copy(tmp_path)
    _compile(src, out)
    code = ("import sys; from dpc.cli import main; "
            f"assert main(['compile', {str(src)!r}, '-o', {str(out)!r}]) == 0; "
            "heavy = [m for m in ('sympy', 'networkx', 'lark', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"up to date: {out}"


def test_a_changed_source_set_or_force_recompiles(tmp_path):
    src, out = _lista_copy(tmp_path)
    _compile(src, out)
    assert _compile(src, out, "--set", "unroll=4") == f"wrote {out}"
    assert "steps=4):" in out.read_text()
    assert _compile(src, out, "--set", "unroll=4") == f"up to date: {out}"
    assert _compile(src, out) == f"wrote {out}"  # the --set list is part of what is recorded
    src.write_text(src.read_text().replace("hyper  lam = 0.1", "hyper  lam = 0.3"))
    assert _compile(src, out) == f"wrote {out}"
    assert "lam=0.3" in out.read_text()
    assert _compile(src, out, "--force") == f"wrote {out}"


def test_a_hand_edited_output_is_recompiled(tmp_path):
    src, out = _lista_copy(tmp_path)
    _compile(src, out)
    good = out.read_text()
    out.write_text(good.replace("def forward(", "def forward_edited(", 1))
    assert _compile(src, out) == f"wrote {out}"
    assert out.read_text() == good
    out.write_text(good.splitlines(keepends=True)[0])  # truncated: no stamp at all
    assert _compile(src, out) == f"wrote {out}"
    assert out.read_text() == good


def test_stdout_output_has_no_stamp_and_equals_the_api():
    from dpc.api import compile_file
    result = run_dpc("compile", "examples/lista.dp", "-o", "-")
    assert result.returncode == 0
    assert "dpc-stamp" not in result.stdout
    assert result.stdout == compile_file("examples/lista.dp")


# --- dpc check counts what the user wrote ---

def test_check_counts_every_declaration_line_including_dims_and_update_lets(tmp_path):
    program = ("network N\n"
               "dims m\n"
               "dims n\n"
               "input x : R[m]\n"
               "param D : R[m, n]\n"
               "hyper a = 0.5\n"
               "var z : R[n] = 0\n"
               "update {\n"
               "  let g = D.T @ (D @ z - x)\n"
               "  z <- z - a * g\n"
               "}\n"
               "unroll 3\n"
               "output z\n")
    path = tmp_path / "n.dp"
    path.write_text(program)
    result = run_dpc("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{path}: ok: network N, 7 declarations (dims m; dims n; input x; "
                                     "param D; hyper a; var z; let g), 2 directives")
