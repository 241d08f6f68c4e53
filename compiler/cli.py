"""The `dpc` command: compile, check, explain, graph, fuzz. Errors print as FILE:LINE:COL and exit 1."""
from __future__ import annotations

import argparse
import os
import sys

from dpc import __version__
from dpc.errors import DpcError, nested_too_deeply, read_source


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpc", description="Compile optimisation programs (.dp) to PyTorch networks.")
    p.add_argument("--version", action="version", version=f"dpc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("compile", help="write the PyTorch module for a .dp file")
    c.add_argument("file", metavar="FILE.dp")
    c.add_argument("-o", "--output", metavar="OUT.py", help="where to write (default: FILE.py beside FILE.dp; - for stdout)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override unroll=T or a hyper's default (repeatable)")
    c.add_argument("--force", action="store_true",
                   help="compile even when OUT.py is up to date (its last line records source, --set and compiler), "
                        "and replace an OUT.py that dpc did not write")
    k = sub.add_parser("check", help="everything compile does but write the file; report every error")
    k.add_argument("file", metavar="FILE.dp")
    k.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="check with these overrides, as compile --set")
    e = sub.add_parser("explain", help="show the program after each pass, as math")
    e.add_argument("file", metavar="FILE.dp")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--full", action="store_true", help="the whole program after every pass, not what it changed")
    e.add_argument("--latex", action="store_true", help="LaTeX to paste: an align* block a pass (amsmath)")
    e.add_argument("--standalone", action="store_true", help="with --latex: a whole document")
    e.add_argument("--html", metavar="OUT.html", help="write a self-contained report page: source, derivation, "
                   "drawing, learned values, the module's signature")
    g = sub.add_parser("graph", help="draw the unrolled network: layers, states, inputs, learned values")
    g.add_argument("file", metavar="FILE.dp")
    g.add_argument("-o", "--output", metavar="OUT.svg",
                   help="where to draw: .svg, .png or .dot (default: FILE.svg beside FILE.dp; - for DOT on stdout)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="draw with these overrides, as compile --set")
    g.add_argument("--all", action="store_true",
                   help="draw every layer (default: layer 1, the identical middle ones as one block, the last)")
    # parsed by dpc.fuzz itself (main hands it the rest of the line): listed here for `dpc --help`
    sub.add_parser("fuzz", add_help=False, help="differential fuzzing against dpc.reference "
                   "(dpc fuzz --programs N [--seed S] [--jobs J] [--out DIR]; dpc fuzz --help)")
    return p


def cmd_compile(args) -> int:
    from dpc import stamp  # standard library only: the up-to-date check imports no sympy, networkx, lark
    text = read_source(args.file)
    out = None if args.output == "-" else args.output or os.path.splitext(args.file)[0] + ".py"
    if out:
        _refuse_overwrite(out, args)
    if out and not args.force and stamp.up_to_date(out, text, args.file, args.set):
        print(f"up to date: {out}")
        return 0
    from dpc.api import compile_with_program
    from dpc.pipeline import parse_overrides
    program, source = compile_with_program(text, args.file, parse_overrides(args.set))
    _print_warnings(program)
    if out is None:
        sys.stdout.write(source)
        return 0
    _write_module(out, stamp.stamped(source, text, args.file, args.set))
    print(f"wrote {out}")
    return 0


def _refuse_overwrite(out: str, args) -> None:
    """A DpcError before compiling when writing `out` would lose a file the user wrote: the input itself
    (always), or an existing file with no dpc stamp (unless --force)."""
    from dpc import stamp
    if _same_file(out, args.file):
        raise DpcError(f"refusing to write the module over its own source {args.file}",
                       hint="name the program FILE.dp, or write the module elsewhere with -o OUT.py")
    if os.path.isfile(out) and not args.force and not stamp.written_by_dpc(out):
        raise DpcError(f"refusing to replace {out}: dpc did not write it (no dpc stamp, no dpc docstring)",
                       hint="pass --force to replace it, or write the module elsewhere with -o OUT.py")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return os.path.abspath(a) == os.path.abspath(b)


def _write_module(out: str, text: str) -> None:
    """Write atomically: a temporary file beside `out`, renamed over it, so an interrupted compile leaves the
    old output whole."""
    import tempfile
    folder = os.path.dirname(os.path.abspath(out))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dpc-", suffix=".py.tmp", dir=folder)
    except OSError as err:  # no such folder, no permission: the user's to fix
        raise DpcError(f"cannot write {out}: {err.strerror or err}", hint="choose another path with -o") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if os.path.exists(out):
            os.chmod(tmp, os.stat(out).st_mode & 0o777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except OSError as err:  # out is a directory, ...
        os.unlink(tmp)
        raise DpcError(f"cannot write {out}: {err.strerror or err}", hint="choose another path with -o") from None
    except BaseException:
        os.unlink(tmp)
        raise


def cmd_check(args) -> int:
    """Everything compile does (passes, emitting) but writing the file, so check accepts exactly
    what compile accepts; then a summary of what the user declared."""
    from dpc.api import compile_with_program
    from dpc.grammar import parse
    from dpc.pipeline import parse_overrides
    text = read_source(args.file)
    program, _ = compile_with_program(text, args.file, parse_overrides(args.set))
    _print_warnings(program)
    print(f"{args.file}: ok: {_summary(parse(text, args.file))}")
    if program.convexity:
        print(f"{args.file}: {program.convexity}")
    return 0


def _print_warnings(program) -> None:
    """The program's warnings (errors.warning) on stderr, `FILE:LINE:COL: warning: ...` with the line and a
    caret; they do not change the exit status."""
    from dpc.errors import format_warnings
    if program.warnings:
        print(format_warnings(program.warnings, program.source), file=sys.stderr)


def _summary(tree) -> str:
    """What the program writes, statement by statement, not what the compiler adds (temporaries, weights):
    every declaration line counts once (`dims m, n` too, as docs/language.md lists it), and so does a `let`
    inside update { ... }, in source order."""
    from dpc.grammar import ast
    name, declared, directives = "?", [], 0
    for stmt in tree.statements:
        if isinstance(stmt, ast.NetworkStmt):
            name = stmt.name.id
        elif isinstance(stmt, ast.DimsStmt):
            declared.append("dims " + ", ".join(i.id for i in stmt.names))
        elif isinstance(stmt, ast.DeclStmt):
            declared.append(f"{stmt.kind} {stmt.name.id}")
        elif isinstance(stmt, ast.UpdateStmt):
            declared += [f"{s.kind} {s.name.id}" for s in stmt.body if isinstance(s, ast.DeclStmt)]
        elif isinstance(stmt, ast.DirectiveStmt):
            directives += 1
    shown = declared if len(declared) <= 8 else declared[:6] + [f"... {len(declared) - 6} more"]
    listing = f" ({'; '.join(shown)})" if declared else ""
    return f"network {name}, {_plural(len(declared), 'declaration')}{listing}, {_plural(directives, 'directive')}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cmd_explain(args) -> int:
    """What each pass changed (dpc.derivation); --full every stage's program; --latex LaTeX; --html a page."""
    from dpc.derivation import Explanation
    from dpc.pipeline import parse_overrides
    if args.standalone and not args.latex:
        raise DpcError("--standalone goes with --latex", hint="dpc explain --latex --standalone FILE.dp")
    text = read_source(args.file)
    try:
        explanation = Explanation(text, args.file, parse_overrides(args.set))
        if args.html:
            from dpc.report import write_report
            write_report(explanation, args.html)
            print(f"wrote {args.html}")
        elif args.latex:
            sys.stdout.write(explanation.latex(full=args.full, standalone=args.standalone))
        else:
            sys.stdout.write(explanation.text(full=args.full))
    except RecursionError:  # printing recurses on an expression's depth too
        from dpc.grammar.parser import nesting_error
        raise nesting_error(text, args.file) from None
    return 0


def cmd_graph(args) -> int:
    """Draw the compiled program's unrolled network; the path's extension picks the format."""
    from dpc.backends.graph import drawing_format, write_drawing
    from dpc.pipeline import compile_program, parse_overrides
    out = args.output or os.path.splitext(args.file)[0] + ".svg"
    if out != "-":
        drawing_format(out)  # a wrong extension is reported before the program is compiled
    text = read_source(args.file)
    write_drawing(compile_program(text, args.file, parse_overrides(args.set)), out, all_layers=args.all)
    if out != "-":
        print(f"wrote {out}")
    return 0


COMMANDS = {"compile": cmd_compile, "check": cmd_check, "explain": cmd_explain, "graph": cmd_graph}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["fuzz"]:  # a tool for people adding atoms: loaded (with torch, in its workers) only here
        from dpc.fuzz.cli import main as fuzz
        return fuzz(argv[1:], prog="dpc fuzz")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DpcError as e:
        print(e.format(), file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dpc explain f.dp | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except RecursionError:  # raised outside compile_source (explain), or by a pass on a deep program
        print(nested_too_deeply(args.file).format(), file=sys.stderr)
        return 1
    except Exception as e:  # a bug in dpc, not in the program: say so, briefly
        if os.environ.get("DPC_TRACEBACK"):
            raise
        print(f"dpc: internal error: {type(e).__name__}: {e}\n"
              "  this is a bug in dpc; rerun with DPC_TRACEBACK=1 for details", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
