"""`dpc compile` never loses a file the user wrote: not its own input, not a hand-written module (unless
--force), and an interrupted write leaves the old output whole."""
import os

from conftest import EXAMPLES, run_dpc

LISTA = (EXAMPLES / "lista.dp").read_text()


def test_a_program_saved_as_py_is_not_overwritten_by_its_module(tmp_path):
    src = tmp_path / "x.py"  # a program saved with a .py name: the default output is the input itself
    src.write_text(LISTA)
    before = src.read_bytes()
    result = run_dpc("compile", str(src))
    assert result.returncode == 1
    assert "refusing to write the module over its own source" in result.stderr
    assert "Traceback" not in result.stderr
    assert src.read_bytes() == before
    forced = run_dpc("compile", str(src), "--force")  # not even with --force
    assert forced.returncode == 1 and src.read_bytes() == before
    other = run_dpc("compile", str(src), "-o", str(tmp_path / "x_net.py"))
    assert other.returncode == 0 and (tmp_path / "x_net.py").read_text().startswith('"""LISTA')


def test_a_hand_written_module_is_replaced_only_with_force(tmp_path):
    (tmp_path / "a.dp").write_text(LISTA)
    mine = tmp_path / "a.py"
    mine.write_text("# my own code\nprint('hello')\n")
    before = mine.read_bytes()
    result = run_dpc("compile", str(tmp_path / "a.dp"))
    assert result.returncode == 1
    assert f"refusing to replace {mine}: dpc did not write it" in result.stderr
    assert "--force" in result.stderr
    assert mine.read_bytes() == before and (tmp_path / "a.dp").read_text() == LISTA
    forced = run_dpc("compile", str(tmp_path / "a.dp"), "--force")
    assert forced.returncode == 0
    assert mine.read_text().startswith('"""LISTA')
    # a module dpc wrote is replaced without --force (recompiled when the source changes)
    (tmp_path / "a.dp").write_text(LISTA.replace("unroll 16", "unroll 8"))
    again = run_dpc("compile", str(tmp_path / "a.dp"))
    assert again.returncode == 0 and "steps=8" in mine.read_text()


def test_the_write_is_atomic(tmp_path, monkeypatch):
    """The module is written to a temporary file and renamed: a failure mid-write leaves the old output."""
    from dpc import cli
    (tmp_path / "a.dp").write_text(LISTA)
    out = tmp_path / "a.py"
    assert cli.main(["compile", str(tmp_path / "a.dp")]) == 0
    before = out.read_bytes()
    (tmp_path / "a.dp").write_text(LISTA.replace("unroll 16", "unroll 8"))

    def interrupted(src, dst):
        raise KeyboardInterrupt  # the user pressed ^C just before the rename
    monkeypatch.setattr(os, "replace", interrupted)
    try:
        cli.main(["compile", str(tmp_path / "a.dp")])
    except KeyboardInterrupt:
        pass
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dpc-")] == []  # no temporary left
