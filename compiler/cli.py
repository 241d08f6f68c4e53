"""The `dpc` command: compile, check, explain. Errors print as FILE:LINE:COL and exit 1."""
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
    k = sub.add_parser("check", help="everything compile does but write the file; report every error")
    k.add_argument("file", metavar="FILE.dp")
    k.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="check with these overrides, as compile --set")
    e = sub.add_parser("explain", help="show the program after each pass, as math")
    e.add_argument("file", metavar="FILE.dp")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p


def cmd_compile(args) -> int:
    from dpc.api import compile_source
    from dpc.pipeline import parse_overrides
    text = read_source(args.file)
    source = compile_source(text, args.file, parse_overrides(args.set))
    if args.output == "-":
        sys.stdout.write(source)
        return 0
    out = args.output or os.path.splitext(args.file)[0] + ".py"
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(source)
    except OSError as err:  # no such folder, no permission, a directory: the user's to fix
        raise DpcError(f"cannot write {out}: {err.strerror or err}", hint="choose another path with -o") from None
    print(f"wrote {out}")
    return 0


def cmd_check(args) -> int:
    """Everything compile does (passes, emitting) but writing the file, so check accepts exactly
    what compile accepts; then a summary of what the user declared."""
    from dpc.api import compile_source
    from dpc.grammar import parse
    from dpc.pipeline import parse_overrides
    text = read_source(args.file)
    compile_source(text, args.file, parse_overrides(args.set))
    print(f"{args.file}: ok: {_summary(parse(text, args.file))}")
    return 0


def _summary(tree) -> str:
    """Counts of what the program writes, not of what the compiler adds (temporaries, weights)."""
    from dpc.grammar import ast
    name, dims, declared, directives = "?", [], [], 0
    for stmt in tree.statements:
        if isinstance(stmt, ast.NetworkStmt):
            name = stmt.name.id
        elif isinstance(stmt, ast.DimsStmt):
            dims += [i.id for i in stmt.names]
        elif isinstance(stmt, ast.DeclStmt):
            declared.append(stmt.name.id)
        elif isinstance(stmt, ast.UpdateStmt):  # a `let` inside update { ... } is declared too
            declared += [s.name.id for s in stmt.body if isinstance(s, ast.DeclStmt)]
        elif isinstance(stmt, ast.DirectiveStmt):
            directives += 1
    count = len(dict.fromkeys(declared))
    return (f"network {name}, {_plural(len(dict.fromkeys(dims)), 'dim')}, "
            f"{_plural(count, 'declaration')} (input, param, hyper, let, var), {_plural(directives, 'directive')}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cmd_explain(args) -> int:
    from dpc.pipeline import parse_overrides, run_text
    text = read_source(args.file)
    try:
        _explain(run_text(text, args.file, parse_overrides(args.set)))
    except RecursionError:  # printing recurses on an expression's depth too
        from dpc.grammar.parser import nesting_error
        raise nesting_error(text, args.file) from None
    return 0


def _explain(stages) -> None:
    """Each stage's notes and program as math, then how the learned values are shared."""
    from dpc.graph import sharing_summary
    from dpc.printing import format_program
    previous = 0
    for stage in stages:
        print(f"== {stage.label}")
        notes = stage.program.notes[previous:]
        previous = len(stage.program.notes)
        for note in notes:
            print(f"   | {note.text}")
        print(format_program(stage.program))
        print()
    final = stages[-1].program
    if final.layers:
        print("== parameters")
        for line in sharing_summary(final) or ["(nothing learned)"]:
            print(f"   {line}")


COMMANDS = {"compile": cmd_compile, "check": cmd_check, "explain": cmd_explain}


def main(argv=None) -> int:
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
