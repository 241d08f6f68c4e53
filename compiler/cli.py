"""The `dpc` command: compile, check, explain. Errors print as FILE:LINE:COL and exit 1."""
from __future__ import annotations

import argparse
import os
import sys

from dpc import __version__
from dpc.errors import DpcError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpc", description="Compile optimisation programs (.dp) to PyTorch networks.")
    p.add_argument("--version", action="version", version=f"dpc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("compile", help="write the PyTorch module for a .dp file")
    c.add_argument("file", metavar="FILE.dp")
    c.add_argument("-o", "--output", metavar="OUT.py", help="where to write (default: FILE.py beside FILE.dp; - for stdout)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override unroll=T or a hyper's default (repeatable)")
    k = sub.add_parser("check", help="parse and check names and shapes; report every error")
    k.add_argument("file", metavar="FILE.dp")
    e = sub.add_parser("explain", help="show the program after each pass, as math")
    e.add_argument("file", metavar="FILE.dp")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise DpcError(f"cannot read {path}: {err.strerror}") from None


def cmd_compile(args) -> int:
    from dpc.api import compile_source
    from dpc.pipeline import parse_overrides
    text = _read(args.file)
    source = compile_source(text, args.file, parse_overrides(args.set))
    if args.output == "-":
        sys.stdout.write(source)
        return 0
    out = args.output or os.path.splitext(args.file)[0] + ".py"
    with open(out, "w", encoding="utf-8") as f:
        f.write(source)
    print(f"wrote {out}")
    return 0


def cmd_check(args) -> int:
    from dpc.grammar import parse
    from dpc.lower import lower_program
    text = _read(args.file)
    try:
        program, directives = lower_program(parse(text, args.file))
    except DpcError as e:
        raise e.with_source(text) from None
    print(f"{args.file}: ok: network {program.name}, {len(program.decls)} declarations, "
          f"{len(directives)} directives")
    return 0


def cmd_explain(args) -> int:
    from dpc.graph import sharing_summary
    from dpc.pipeline import parse_overrides, run_text
    from dpc.printing import format_program
    text = _read(args.file)
    stages = run_text(text, args.file, parse_overrides(args.set))
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
    return 0


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
    except RecursionError:
        print("dpc: error: the program is nested too deeply", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in dpc, not in the program: say so, briefly
        if os.environ.get("DPC_TRACEBACK"):
            raise
        print(f"dpc: internal error: {type(e).__name__}: {e}\n"
              "  this is a bug in dpc; rerun with DPC_TRACEBACK=1 for details", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
